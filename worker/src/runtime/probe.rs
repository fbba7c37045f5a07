//! Liveness and readiness probes, run by the pod init inside the pod.
//!
//! The init is PID 1 of the pod's PID, mount, UTS and IPC (and, unless the pod uses the host's
//! network, network) namespaces and lives in the pod's cgroup, so:
//! - an **exec** probe forked from it (with the process's environment, user, group, working
//!   directory and cgroup) runs in the pod's namespaces; exit status 0 passes;
//! - a **TCP** probe connects to `127.0.0.1:port` in the pod's network; a connection passes;
//! - an **HTTP** probe sends `GET path HTTP/1.0` there; a 2xx or 3xx status passes.
//!
//! Nothing here blocks: the init is a single-threaded event loop. An exec probe is a child
//! process whose exit arrives with the init's other `SIGCHLD`s ([`Prober::reaped`] claims it by
//! PID, so it is never mistaken for one of the pod's processes); TCP and HTTP probes are
//! non-blocking sockets the init polls next to its other fds ([`Prober::interest`]). Every check
//! has a deadline (the probe's timeout) that the init's poll timeout includes
//! ([`Prober::wakeup`]); an exec probe past it is killed with its process group.
//!
//! Results are counted as Kubernetes does ([`Counter`]): `failure_threshold` consecutive failures
//! make a probe fail, `success_threshold` consecutive successes make a failed one pass again.
//! Nothing runs before `initial_delay` after the process started, and nothing while it is not
//! running.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use bramble_wire::objects::{Probe, ProbeAction};

use crate::sys::net::{self, Interest};
use crate::sys::process::{self as sysproc, Exit, ReadOutcome};
use crate::sys::spawn::{self, Exec, ProcessSetup};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Failing restarts the process.
    Liveness,
    /// Passing makes the process ready.
    Readiness,
}

impl Kind {
    /// `liveness` or `readiness`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
        }
    }
}

/// A change in a probe's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The probe passes (again): `success_threshold` consecutive successes after failing, or the
    /// first ones of a readiness probe.
    Pass,
    /// The probe just reached `failure_threshold` consecutive failures (reported once per streak).
    Fail {
        /// Consecutive failures.
        failures: u32,
        /// Why the last check failed.
        why: String,
    },
}

/// Kubernetes' counting of probe results, pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    failures: u32,
    successes: u32,
    passing: bool,
}

impl Counter {
    /// A fresh count: a liveness probe starts passing, a readiness probe failing.
    pub fn new(kind: Kind) -> Counter {
        Counter {
            failures: 0,
            successes: 0,
            passing: kind == Kind::Liveness,
        }
    }

    /// Whether the probe passes.
    pub fn passing(&self) -> bool {
        self.passing
    }

    /// Records one check's result; returns the verdict when it changes (or a failure streak
    /// reaches the threshold).
    pub fn record(&mut self, result: Result<(), String>, p: &Probe) -> Option<Verdict> {
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if !self.passing && self.successes >= p.success_threshold.max(1) {
                    self.passing = true;
                    return Some(Verdict::Pass);
                }
                None
            }
            Err(why) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.failures == p.failure_threshold.max(1) {
                    self.passing = false;
                    return Some(Verdict::Fail {
                        failures: self.failures,
                        why,
                    });
                }
                None
            }
        }
    }
}

/// What an exec probe needs from its process to start like it.
#[derive(Debug)]
pub struct ExecContext<'a> {
    /// `cgroup.procs` files of the process's cgroup.
    pub cgroup_procs: &'a [BorrowedFd<'a>],
    /// The process's cgroup v2 directory, to be born in (see [`ProcessSetup::cgroup_dir`]).
    pub cgroup_dir: Option<BorrowedFd<'a>>,
    /// Standard input (`/dev/null`).
    pub stdin: BorrowedFd<'a>,
    /// Working directory.
    pub workdir: Option<&'a std::ffi::CStr>,
    /// User, groups and capabilities: the process's own.
    pub creds: &'a crate::sys::caps::Credentials,
    /// The process's seccomp filter (`None`: unconfined).
    pub seccomp: Option<&'a crate::sys::seccomp::SeccompProgram>,
}

/// Most bytes of an exec probe's output kept for the failure message.
const OUTPUT_CAP: usize = 256;
/// Most bytes of an HTTP response read looking for the status line.
const RESPONSE_CAP: usize = 1024;

#[derive(Debug)]
enum Check {
    Exec {
        pid: i32,
        out: Option<OwnedFd>,
        output: Vec<u8>,
        exit: Option<Exit>,
        deadline: Instant,
    },
    Net {
        stream: TcpStream,
        connected: bool,
        http: Option<Http>,
        deadline: Instant,
    },
}

#[derive(Debug)]
struct Http {
    request: Vec<u8>,
    sent: usize,
    response: Vec<u8>,
}

/// One probe of one process.
#[derive(Debug)]
pub struct Prober {
    kind: Kind,
    probe: Probe,
    exec: Result<Exec, String>,
    counter: Counter,
    next_due: Option<Instant>,
    check: Option<Check>,
}

impl Prober {
    /// A probe for a process with environment `env` (an exec probe's command is resolved with
    /// `resolve`, inside the pod's root).
    pub fn new(
        kind: Kind,
        probe: Probe,
        env: &[(String, String)],
        resolve: impl Fn(&str) -> Option<std::path::PathBuf>,
    ) -> Prober {
        let exec = match &probe.action {
            ProbeAction::Exec(cmd) => match cmd.first() {
                None => Err("empty exec command".to_string()),
                Some(c) => match resolve(c) {
                    Some(path) => Exec::new(&path, cmd, env).map_err(|e| e.to_string()),
                    None => Err(format!("command not found: {c}")),
                },
            },
            _ => Err(String::new()),
        };
        Prober {
            kind,
            probe,
            exec,
            counter: Counter::new(kind),
            next_due: None,
            check: None,
        }
    }

    /// Which probe this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether it passes.
    pub fn passing(&self) -> bool {
        self.counter.passing()
    }

    /// The process (re)started at `now`: count afresh, first check after the initial delay.
    pub fn process_started(&mut self, now: Instant) {
        self.cancel();
        self.counter = Counter::new(self.kind);
        self.next_due = Some(now + ms(self.probe.initial_delay_ms));
    }

    /// The process stopped (or is being stopped): no more checks until it starts again.
    pub fn process_stopped(&mut self) {
        self.cancel();
        self.next_due = None;
    }

    fn cancel(&mut self) {
        if let Some(Check::Exec {
            pid, exit: None, ..
        }) = self.check.take()
        {
            // The probe ran `setsid`: its PID is its process group. Its zombie is reaped (and
            // ignored) with the init's other children.
            let _ = sysproc::kill(-pid, sysproc::Signal::KILL);
        }
    }

    /// When the init must call [`Prober::step`] at the latest.
    pub fn wakeup(&self) -> Option<Instant> {
        match &self.check {
            Some(Check::Exec { deadline, .. }) | Some(Check::Net { deadline, .. }) => {
                Some(*deadline)
            }
            None => self.next_due,
        }
    }

    /// The fd the init must poll for this probe, if any.
    pub fn interest(&self) -> Option<(BorrowedFd<'_>, Interest)> {
        match &self.check {
            Some(Check::Exec { out: Some(fd), .. }) => Some((fd.as_fd(), Interest::Read)),
            Some(Check::Net {
                stream,
                connected,
                http,
                ..
            }) => {
                let writing = !connected || http.as_ref().is_some_and(|h| h.sent < h.request.len());
                Some((
                    stream.as_fd(),
                    if writing {
                        Interest::Write
                    } else {
                        Interest::Read
                    },
                ))
            }
            _ => None,
        }
    }

    /// Claims a reaped child if it is this probe's exec check. Returns whether it was.
    pub fn reaped(&mut self, pid: i32, how: Exit) -> bool {
        match &mut self.check {
            Some(Check::Exec {
                pid: p,
                exit: exit @ None,
                ..
            }) if *p == pid => {
                *exit = Some(how);
                true
            }
            _ => false,
        }
    }

    /// Advances the probe at `now`: finishes a check that completed or timed out, starts one
    /// that is due. Returns a verdict when the probe's state changes.
    pub fn step(&mut self, now: Instant, ctx: &ExecContext<'_>) -> Option<Verdict> {
        let mut verdict = None;
        if let Some(result) = self.advance(now) {
            self.check = None;
            verdict = self.counter.record(result, &self.probe);
        }
        if self.check.is_none()
            && let Some(due) = self.next_due
            && due <= now
        {
            let period = ms(self.probe.period_ms.max(1));
            // Keep the rhythm, but never schedule into the past after a stall.
            self.next_due = Some((due + period).max(now + period / 2));
            if let Err(why) = self.launch(now, ctx) {
                let v = self.counter.record(Err(why), &self.probe);
                verdict = v.or(verdict);
            }
        }
        verdict
    }

    fn launch(&mut self, now: Instant, ctx: &ExecContext<'_>) -> Result<(), String> {
        let deadline = now + ms(self.probe.timeout_ms.max(1));
        let port = match &self.probe.action {
            ProbeAction::Exec(_) => {
                let exec = self.exec.as_ref().map_err(|e| format!("exec: {e}"))?;
                let (r, w) = sysproc::pipe().map_err(|e| e.to_string())?;
                let setup = ProcessSetup {
                    exec,
                    cgroup_procs: ctx.cgroup_procs,
                    cgroup_dir: ctx.cgroup_dir,
                    stdin: ctx.stdin,
                    output: w.as_fd(),
                    workdir: ctx.workdir,
                    creds: ctx.creds,
                    seccomp: ctx.seccomp,
                    stderr: None,
                    controlling_tty: false,
                };
                let pid = spawn::fork_exec(&setup).map_err(|e| format!("exec: {e}"))?;
                drop(w);
                let _ = sysproc::set_nonblocking(r.as_fd());
                self.check = Some(Check::Exec {
                    pid,
                    out: Some(r),
                    output: Vec::new(),
                    exit: None,
                    deadline,
                });
                return Ok(());
            }
            ProbeAction::Tcp { port } => *port,
            ProbeAction::Http { port, .. } => *port,
        };
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let stream = net::tcp_connect_start(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        let http = match &self.probe.action {
            ProbeAction::Http { path, .. } => Some(Http {
                request: http_request(path, port),
                sent: 0,
                response: Vec::new(),
            }),
            _ => None,
        };
        self.check = Some(Check::Net {
            stream,
            connected: false,
            http,
            deadline,
        });
        Ok(())
    }

    /// Progresses the running check; `Some(result)` once it is over.
    fn advance(&mut self, now: Instant) -> Option<Result<(), String>> {
        let timeout = self.probe.timeout_ms;
        let what = describe(&self.probe.action);
        match self.check.as_mut()? {
            Check::Exec {
                pid,
                out,
                output,
                exit,
                deadline,
            } => {
                if let Some(fd) = out {
                    let mut buf = [0u8; 512];
                    loop {
                        match sysproc::read_nonblocking(fd.as_fd(), &mut buf) {
                            Ok(ReadOutcome::Data(n)) => {
                                let room = OUTPUT_CAP.saturating_sub(output.len());
                                output.extend_from_slice(&buf[..n.min(room)]);
                            }
                            Ok(ReadOutcome::WouldBlock) => break,
                            Ok(ReadOutcome::Eof) | Err(_) => {
                                *out = None;
                                break;
                            }
                        }
                    }
                }
                match exit {
                    Some(Exit::Code(0)) => Some(Ok(())),
                    Some(e) => {
                        let how = match e {
                            Exit::Code(c) => format!("exit status {c}"),
                            Exit::Signal(s) => format!("killed by signal {}", s.number()),
                        };
                        let text = String::from_utf8_lossy(output);
                        let text = text.trim();
                        Some(Err(if text.is_empty() {
                            format!("{what}: {how}")
                        } else {
                            format!("{what}: {how}: {}", text.replace('\n', " "))
                        }))
                    }
                    None if now >= *deadline => {
                        let _ = sysproc::kill(-*pid, sysproc::Signal::KILL);
                        Some(Err(format!("{what}: timed out after {timeout}ms")))
                    }
                    None => None,
                }
            }
            Check::Net {
                stream,
                connected,
                http,
                deadline,
            } => {
                let r = net_progress(stream, connected, http);
                match r {
                    Some(Err(e)) => Some(Err(format!("{what}: {e}"))),
                    Some(Ok(())) => Some(Ok(())),
                    None if now >= *deadline => {
                        Some(Err(format!("{what}: timed out after {timeout}ms")))
                    }
                    None => None,
                }
            }
        }
    }
}

/// Does whatever the socket allows without blocking. `Some` once the check is over.
fn net_progress(
    stream: &mut TcpStream,
    connected: &mut bool,
    http: &mut Option<Http>,
) -> Option<Result<(), String>> {
    if !*connected {
        // Finished connecting (writable) or not yet: poll without waiting.
        let ready = net::poll(&[(stream.as_fd(), Interest::Write)], Some(Duration::ZERO)).ok()?;
        if !ready[0] {
            return None;
        }
        match stream.take_error() {
            Ok(None) => *connected = true,
            Ok(Some(e)) | Err(e) => return Some(Err(format!("connect: {e}"))),
        }
    }
    let Some(h) = http else {
        return Some(Ok(()));
    };
    while h.sent < h.request.len() {
        match stream.write(&h.request[h.sent..]) {
            Ok(n) => h.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Some(Err(format!("sending the request: {e}"))),
        }
    }
    let mut buf = [0u8; 512];
    loop {
        if let Some(r) = status_verdict(&h.response) {
            return Some(r);
        }
        if h.response.len() >= RESPONSE_CAP {
            return Some(Err("no HTTP status line in the first 1 KiB".into()));
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                return Some(Err(if h.response.is_empty() {
                    "connection closed without a response".into()
                } else {
                    "connection closed before the status line ended".into()
                }));
            }
            Ok(n) => h.response.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Some(Err(format!("reading the response: {e}"))),
        }
    }
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v))
}

/// The request an HTTP probe sends.
pub fn http_request(path: &str, port: u16) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: bramble-probe/1\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Judges an HTTP response by its status line once it is complete: 2xx and 3xx pass. `None`
/// while the line is incomplete.
pub fn status_verdict(response: &[u8]) -> Option<Result<(), String>> {
    let end = response.windows(2).position(|w| w == b"\r\n").or_else(|| {
        // Tolerate bare `\n` line ends.
        response.iter().position(|&b| b == b'\n')
    })?;
    let line = String::from_utf8_lossy(&response[..end]);
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or("");
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    Some(match code {
        Some(c) if version.starts_with("HTTP/") => {
            if (200..400).contains(&c) {
                Ok(())
            } else {
                Err(format!("HTTP status {c}"))
            }
        }
        _ => Err(format!(
            "not an HTTP status line: {:?}",
            line.chars().take(80).collect::<String>()
        )),
    })
}

/// A probe's action as people read it, for messages and `describe`.
pub fn describe(a: &ProbeAction) -> String {
    match a {
        ProbeAction::Exec(cmd) => format!("exec {cmd:?}"),
        ProbeAction::Tcp { port } => format!("tcp 127.0.0.1:{port}"),
        ProbeAction::Http { port, path } => format!("http GET 127.0.0.1:{port}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn probe(action: ProbeAction, failure: u32, success: u32) -> Probe {
        Probe {
            action,
            failure_threshold: failure,
            success_threshold: success,
            ..Probe::default()
        }
    }

    #[test]
    fn counting_follows_kubernetes() {
        let p = probe(ProbeAction::Tcp { port: 1 }, 3, 2);
        let mut c = Counter::new(Kind::Readiness);
        assert!(!c.passing());
        assert_eq!(c.record(Ok(()), &p), None);
        assert_eq!(c.record(Ok(()), &p), Some(Verdict::Pass));
        assert_eq!(c.record(Err("a".into()), &p), None);
        assert_eq!(c.record(Err("b".into()), &p), None);
        // A success in between resets the failure streak.
        assert_eq!(c.record(Ok(()), &p), None);
        assert!(c.passing());
        assert_eq!(c.record(Err("a".into()), &p), None);
        assert_eq!(c.record(Err("b".into()), &p), None);
        assert_eq!(
            c.record(Err("c".into()), &p),
            Some(Verdict::Fail {
                failures: 3,
                why: "c".into()
            })
        );
        // Reported once per streak.
        assert_eq!(c.record(Err("d".into()), &p), None);
        assert!(!c.passing());
        let mut l = Counter::new(Kind::Liveness);
        assert!(l.passing());
        let p1 = probe(ProbeAction::Tcp { port: 1 }, 1, 1);
        assert!(matches!(
            l.record(Err("x".into()), &p1),
            Some(Verdict::Fail { failures: 1, .. })
        ));
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_verdict(b"HTTP/1.1 200 OK\r\n"), Some(Ok(())));
        assert_eq!(
            status_verdict(b"HTTP/1.0 302 Found\r\nLocation: /"),
            Some(Ok(()))
        );
        assert_eq!(status_verdict(b"HTTP/1.1 200 O"), None);
        assert_eq!(
            status_verdict(b"HTTP/1.1 503 Unavailable\r\n"),
            Some(Err("HTTP status 503".into()))
        );
        assert_eq!(
            status_verdict(b"HTTP/1.1 404 Not Found\n"),
            Some(Err("HTTP status 404".into()))
        );
        assert!(status_verdict(b"SSH-2.0-OpenSSH\r\n").unwrap().is_err());
    }

    /// Runs one check to completion the way the init does: poll the probe's fd until its
    /// wakeup, then step.
    fn run_once(p: &mut Prober) -> Option<Verdict> {
        // Only TCP and HTTP probes here: the exec context is never used.
        let null = std::fs::File::open("/dev/null").unwrap();
        let ctx = ExecContext {
            cgroup_procs: &[],
            cgroup_dir: None,
            stdin: null.as_fd(),
            workdir: None,
            creds: &Default::default(),
            seccomp: None,
        };
        let start = Instant::now();
        p.process_started(start);
        let mut v = p.step(start, &ctx);
        let give_up = start + Duration::from_secs(10);
        while p.check.is_some() && Instant::now() < give_up {
            let timeout = p
                .wakeup()
                .map(|t| t.saturating_duration_since(Instant::now()));
            if let Some((fd, i)) = p.interest() {
                net::poll(&[(fd, i)], timeout).unwrap();
            } else if let Some(t) = timeout {
                std::thread::sleep(t);
            }
            if let Some(x) = p.step(Instant::now(), &ctx) {
                v = Some(x);
            }
        }
        assert!(p.check.is_none(), "the check did not finish");
        v
    }

    /// A probe with a timeout no loaded machine reaches (a timeout is tested with [`hasty`]).
    fn prober(action: ProbeAction) -> Prober {
        with_timeout(action, 3000)
    }

    fn hasty(action: ProbeAction) -> Prober {
        with_timeout(action, 300)
    }

    fn with_timeout(action: ProbeAction, timeout_ms: u32) -> Prober {
        let p = Probe {
            action,
            timeout_ms,
            period_ms: 1000,
            failure_threshold: 1,
            success_threshold: 1,
            ..Probe::default()
        };
        Prober::new(Kind::Readiness, p, &[], |_| None)
    }

    #[test]
    fn tcp_probe_passes_on_a_listener_and_fails_without() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let mut p = prober(ProbeAction::Tcp { port });
        assert_eq!(run_once(&mut p), Some(Verdict::Pass));
        drop(l);
        let mut p = prober(ProbeAction::Tcp { port });
        match run_once(&mut p) {
            Some(Verdict::Fail { why, .. }) => assert!(why.contains("refused"), "{why}"),
            v => panic!("{v:?}"),
        }
    }

    fn serve_once(l: TcpListener, reply: &'static [u8]) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 256];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            if !reply.is_empty() {
                s.write_all(reply).unwrap();
            } else {
                // Hang: hold the connection without answering for far longer than the timeout.
                std::thread::sleep(Duration::from_millis(3000));
            }
            String::from_utf8_lossy(&req).into_owned()
        })
    }

    #[test]
    fn http_probe_judges_the_status_and_times_out() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let t = serve_once(l.try_clone().unwrap(), b"HTTP/1.1 204 No Content\r\n\r\n");
        let mut p = prober(ProbeAction::Http {
            port,
            path: "/healthz?x=1".into(),
        });
        assert_eq!(run_once(&mut p), Some(Verdict::Pass));
        let req = t.join().unwrap();
        assert!(req.starts_with("GET /healthz?x=1 HTTP/1.0\r\n"), "{req}");

        let t = serve_once(l.try_clone().unwrap(), b"HTTP/1.1 500 Oops\r\n\r\n");
        let mut p = prober(ProbeAction::Http {
            port,
            path: "/".into(),
        });
        match run_once(&mut p) {
            Some(Verdict::Fail { why, .. }) => assert!(why.contains("HTTP status 500"), "{why}"),
            v => panic!("{v:?}"),
        }
        t.join().unwrap();

        let t = serve_once(l, b"");
        let mut p = hasty(ProbeAction::Http {
            port,
            path: "/".into(),
        });
        match run_once(&mut p) {
            Some(Verdict::Fail { why, .. }) => assert!(why.contains("timed out"), "{why}"),
            v => panic!("{v:?}"),
        }
        t.join().unwrap();
    }
}
