//! Non-blocking TCP connects and `poll` with read or write interest: what the pod init's TCP and
//! HTTP probes need to run inside its single-threaded event loop without ever blocking it.

use std::net::{SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::{Result, SysError};

/// Starts a TCP connection to `addr` without waiting for it. The stream is non-blocking
/// (reads and writes return `WouldBlock`); the connection has completed, or failed, once the
/// stream is writable: `TcpStream::take_error` then tells which.
pub fn tcp_connect_start(addr: SocketAddrV4) -> std::io::Result<TcpStream> {
    // SAFETY: socket() takes integers and returns a new fd or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned `fd`; nobody else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sa` is a valid sockaddr_in for the duration of the call and its size is passed.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(TcpStream::from(sock))
}

/// What to wait for on an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Readable (or hung up, or in error).
    Read,
    /// Writable (or hung up, or in error).
    Write,
}

/// Waits until one of `fds` is ready for its interest (or hung up, or in error) or `timeout`
/// passes (`None`: forever). Returns which fds are ready; all `false` on timeout or interruption.
pub fn poll(fds: &[(BorrowedFd<'_>, Interest)], timeout: Option<Duration>) -> Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, i)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: match i {
                Interest::Read => libc::POLLIN,
                Interest::Write => libc::POLLOUT,
            },
            revents: 0,
        })
        .collect();
    // Round up: a deadline 0.4 ms away must not turn into a busy loop of zero timeouts.
    let ms = timeout.map_or(-1, |t| {
        t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
    });
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs for the whole call.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = super::errno();
        if e == nix::Error::EINTR {
            return Ok(vec![false; fds.len()]);
        }
        return Err(SysError::call("poll", e));
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{Ipv4Addr, TcpListener};
    use std::os::fd::AsFd;

    #[test]
    fn connects_without_blocking_and_reports_refusals() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let s = tcp_connect_start(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).unwrap();
        let ready = poll(
            &[(s.as_fd(), Interest::Write)],
            Some(Duration::from_secs(5)),
        )
        .unwrap();
        assert!(ready[0]);
        assert!(s.take_error().unwrap().is_none());
        let mut buf = [0u8; 4];
        // Non-blocking: nothing to read yet.
        assert_eq!(
            (&s).read(&mut buf).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        drop(l);
        // Nobody listens any more: refused, now or once writable.
        match tcp_connect_start(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
            Ok(s) => {
                poll(
                    &[(s.as_fd(), Interest::Write)],
                    Some(Duration::from_secs(5)),
                )
                .unwrap();
                let e = s.take_error().unwrap().expect("refused");
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
            }
        }
    }
}
