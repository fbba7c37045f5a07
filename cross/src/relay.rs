//! The host end of the guest's connection to the master.
//!
//! QEMU's `guestfwd=tcp:IP:PORT-tcp:HOST:PORT` opens ONE host connection when QEMU starts (the
//! master must already listen, and every guest connection shares that one stream), so a worker
//! could never reconnect. `guestfwd=...-cmd:PROGRAM ARGS` instead runs PROGRAM for every guest
//! connection with the guest's socket as stdin/stdout (and stderr): `cross relay HOST:PORT` is
//! that program. It connects to the master on loopback and copies bytes both ways.
//!
//! It must never write to stderr: stderr is the guest's socket too.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// Exit codes (nothing can be printed: all output goes to the guest).
pub const EXIT_BAD_ADDR: i32 = 2;
/// The master refused or did not answer.
pub const EXIT_CONNECT: i32 = 3;

/// Copy between stdin/stdout and `addr` until both directions are done. Never returns.
pub fn relay(addr: &str) -> ! {
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        std::process::exit(EXIT_BAD_ADDR)
    };
    if !addr.ip().is_loopback() {
        // Only ever talk to a service on this machine.
        std::process::exit(EXIT_BAD_ADDR);
    }
    let Ok(sock) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        std::process::exit(EXIT_CONNECT)
    };
    let _ = sock.set_nodelay(true);
    let Ok(mut up) = sock.try_clone() else {
        std::process::exit(EXIT_CONNECT)
    };
    let upstream = std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if up.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        // The guest closed (or QEMU died): pass the close on to the master.
        let _ = up.shutdown(Shutdown::Both);
    });
    let mut down = sock;
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match down.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stdout
                    .write_all(&buf[..n])
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    // The master closed: tell the guest, and stop reading from it.
    let _ = down.shutdown(Shutdown::Both);
    drop(stdout);
    drop(upstream);
    std::process::exit(0);
}
