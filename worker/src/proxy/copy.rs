//! Copying a proxied connection: both directions at once, each through one fixed-size buffer
//! reused for every read (taken from a small pool), half-close passed on.

use std::io;
use std::net::Shutdown;
use std::sync::Mutex;

use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

/// Size of each direction's buffer.
pub const BUF_SIZE: usize = 32 * 1024;
/// Most idle buffers kept for reuse (the rest are freed: a burst does not pin memory).
const POOL_MAX: usize = 32;

/// Free buffers, reused by later connections.
#[derive(Debug, Default)]
pub struct BufPool {
    free: Mutex<Vec<Box<[u8]>>>,
}

impl BufPool {
    /// A buffer of [`BUF_SIZE`] bytes, from the pool when one is free.
    pub fn take(&self) -> Box<[u8]> {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        reused.unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
    }

    /// Returns a buffer for reuse.
    pub fn give(&self, b: Box<[u8]>) {
        if let Ok(mut f) = self.free.lock()
            && f.len() < POOL_MAX
        {
            f.push(b);
        }
    }

    /// Buffers currently free in the pool.
    pub fn idle(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }
}

/// Copies `from` to `to` until `from` ends, then half-closes `to` (so the peer sees the end of
/// the request while its answer still flows back). Returns the bytes copied.
async fn pipe(mut from: TcpStream, mut to: TcpStream, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = from.read(buf).await?;
        if n == 0 {
            let _ = to.shutdown(Shutdown::Write);
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// Joins `client` and `backend` until both directions ended; an error in either closes both.
/// Returns the bytes copied (client → backend, backend → client).
pub async fn join(client: TcpStream, backend: TcpStream, pool: &BufPool) -> io::Result<(u64, u64)> {
    let mut up = pool.take();
    let mut down = pool.take();
    let res = futures_lite::future::try_zip(
        pipe(client.clone(), backend.clone(), &mut up),
        pipe(backend.clone(), client.clone(), &mut down),
    )
    .await;
    if res.is_err() {
        let _ = client.shutdown(Shutdown::Both);
        let _ = backend.shutdown(Shutdown::Both);
    }
    pool.give(up);
    pool.give(down);
    res
}
