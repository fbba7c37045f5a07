//! The node's own resolvers, from its `/etc/resolv.conf` (re-read when the file changes), and
//! one exchange with them: UDP first, TCP when the answer is truncated.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_net::{TcpStream, UdpSocket};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use simple_dns::{Packet, PacketFlag};

use super::message;

/// How long one upstream gets to answer before the next is tried.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The nameserver lines of a resolv.conf, in order, with `port` (IPv6 link-local addresses
/// with a zone are skipped: they cannot be reached without it).
pub fn parse_resolv_conf(text: &str, port: u16) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            w.next()?.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// What identifies a version of the file: modification time, size, inode.
type Stamp = (SystemTime, u64, u64);

#[derive(Debug)]
pub struct Upstreams {
    path: PathBuf,
    port: u16,
    timeout: Duration,
    state: Mutex<(Option<Stamp>, Vec<SocketAddr>)>,
}

impl Upstreams {
    /// The nameservers of `path` (normally `/etc/resolv.conf`) on `port` (normally 53).
    pub fn from_resolv_conf(path: impl AsRef<Path>, port: u16) -> Upstreams {
        Upstreams {
            path: path.as_ref().to_path_buf(),
            port,
            timeout: TIMEOUT,
            state: Mutex::new((None, Vec::new())),
        }
    }

    /// The same with another per-upstream timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Upstreams {
        self.timeout = timeout;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The current nameservers: the file is read again when its stamp changed. A missing or
    /// unreadable file keeps the last list (logged).
    pub fn current(&self) -> Vec<SocketAddr> {
        use std::os::unix::fs::MetadataExt;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())));
        if stamp.is_some() && stamp != st.0 {
            match std::fs::read_to_string(&self.path) {
                Ok(text) => {
                    let list = parse_resolv_conf(&text, self.port);
                    if list.is_empty() {
                        tracing::warn!(path = %self.path.display(), "no nameserver in the node's resolv.conf: names outside the cluster get SERVFAIL; add a 'nameserver ADDRESS' line");
                    } else {
                        tracing::info!(path = %self.path.display(), upstreams = ?list, "DNS upstreams");
                    }
                    *st = (stamp, list);
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot read the node's resolv.conf; keeping the last upstreams")
                }
            }
        } else if stamp.is_none() && st.0.is_some() {
            tracing::warn!(path = %self.path.display(), "the node's resolv.conf is gone; keeping the last upstreams");
            st.0 = None;
        }
        st.1.clone()
    }
}

async fn timed<T>(
    d: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    f.or(async {
        smol::Timer::after(d).await;
        Err(std::io::ErrorKind::TimedOut.into())
    })
    .await
}

/// One query to one upstream over UDP; a truncated answer is asked again over TCP. Answers
/// that do not match the query (id, question) are ignored until the timeout.
pub async fn exchange(
    server: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let q = Packet::parse(query).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let udp = timed(timeout, async {
        let sock = UdpSocket::bind(bind).await?;
        sock.connect(server).await?;
        sock.send(query).await?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).await?;
            if let Ok(r) = Packet::parse(&buf[..n])
                && message::answers(&q, &r)
            {
                return Ok((buf[..n].to_vec(), r.has_flags(PacketFlag::TRUNCATION)));
            }
        }
    })
    .await?;
    match udp {
        (bytes, false) => Ok(bytes),
        (_, true) => timed(timeout, exchange_tcp(server, query, &q)).await,
    }
}

async fn exchange_tcp(
    server: SocketAddr,
    query: &[u8],
    q: &Packet<'_>,
) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(query);
    s.write_all(&frame).await?;
    let mut n = [0u8; 2];
    s.read_exact(&mut n).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(n))];
    s.read_exact(&mut buf).await?;
    match Packet::parse(&buf) {
        Ok(r) if message::answers(q, &r) => Ok(buf),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "TCP answer does not match the query",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_lines_in_order() {
        let text = "# generated\nsearch lan\nnameserver 192.0.2.1\nnameserver  2001:db8::1 \n\
                    nameserver fe80::1%eth0\nnameserver bogus\noptions edns0\nnameserver 198.51.100.7\n";
        assert_eq!(
            parse_resolv_conf(text, 5353),
            vec![
                "192.0.2.1:5353".parse().unwrap(),
                "[2001:db8::1]:5353".parse().unwrap(),
                "198.51.100.7:5353".parse().unwrap(),
            ]
        );
    }
}
