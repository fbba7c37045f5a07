//! A TCP relay that counts the bytes going each way: how much an idle worker and the master
//! exchange (the cluster bench's idle traffic, `tests/top.rs`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A TCP relay that counts the bytes going each way.
#[derive(Debug)]
pub struct Relay {
    /// Where to dial instead of the upstream.
    pub addr: String,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Listens on a free loopback port and relays each connection to `upstream`.
    pub fn start(upstream: &str) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        l.set_nonblocking(true).unwrap();
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (u, d, c, s) = (up.clone(), down.clone(), connections.clone(), stop.clone());
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((a, _)) => {
                        let _ = a.set_nonblocking(false);
                        let Ok(b) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        let _ = a.set_nodelay(true);
                        let _ = b.set_nodelay(true);
                        c.fetch_add(1, Ordering::Relaxed);
                        pipe(a.try_clone().unwrap(), b.try_clone().unwrap(), u.clone());
                        pipe(b, a, d.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Relay {
            addr,
            up,
            down,
            connections,
            stop,
        }
    }

    /// Bytes relayed so far: (client → upstream, upstream → client).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, count: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    count.fetch_add(n as u64, Ordering::Relaxed);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}
