//! `bramble exec` sessions on the node: one task per session runs the exec helper
//! ([`crate::runtime::exec`]) on a pseudo-terminal or pipes and pumps its I/O to and from the
//! master as [`NodeUp::Exec`] / [`NodeDown::ExecInput`] events, with the credit of
//! [`bramble_wire::stream`] in both directions (output waits for the client's
//! acknowledgements; stdin is acknowledged once written to the process).
//!
//! A session ends when the process ends (its exit code reported), when the client asks
//! ([`ExecInput::Kill`]) or when the master connection drops (the sessions' channels close): the
//! helper is then told to kill the process. The process lives in the pod's cgroup and PID
//! namespace, so stopping the pod kills it too.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use bramble_wire::msg::{
    ApiError, ErrorCode, ExecInput, ExecOutput, ExecSpec, NodeUp, PortForwardSpec,
};
use bramble_wire::stream::{CHUNK, Credit};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use smol::Async;

use crate::runtime::exec::HelperArgs;
use crate::sys::exec as sysexec;
use crate::sys::process::{self as sysproc, Signal};

/// Where an exec runs: the pod's running init and its state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    /// The pod's state directory.
    pub state_dir: PathBuf,
    /// The init's host PID.
    pub init_pid: i32,
}

/// Queued inputs per session: a window of stdin chunks plus acknowledgements and resizes.
const INPUT_QUEUE: usize = 256;
/// After the process exited, how long output still held open by its own children is read.
const DRAIN: Duration = Duration::from_secs(2);

/// The agent's exec sessions, by request.
#[derive(Debug, Default)]
pub struct Sessions {
    map: HashMap<u32, async_channel::Sender<ExecInput>>,
}

impl Sessions {
    /// Starts a session (or reports why it cannot run).
    pub fn start(
        &mut self,
        request: u32,
        spec: ExecSpec,
        target: Result<ExecTarget, String>,
        up: &async_channel::Sender<NodeUp>,
    ) {
        self.map.retain(|_, tx| !tx.is_closed());
        let up = up.clone();
        let target = match target {
            Ok(t) => t,
            Err(message) => {
                smol::spawn(async move {
                    let output = ExecOutput::Error(ApiError {
                        code: ErrorCode::Unavailable,
                        message,
                    });
                    let _ = up.send(NodeUp::Exec { request, output }).await;
                })
                .detach();
                return;
            }
        };
        let (tx, rx) = async_channel::bounded(INPUT_QUEUE);
        self.map.insert(request, tx);
        smol::spawn(async move {
            let output = match run(request, &spec, target, &up, rx).await {
                Ok(code) => ExecOutput::Exit { code, signal: None },
                Err(message) => ExecOutput::Error(ApiError {
                    code: ErrorCode::Internal,
                    message: format!("exec in pod {}/{}: {message}", spec.namespace, spec.pod),
                }),
            };
            let _ = up.send(NodeUp::Exec { request, output }).await;
        })
        .detach();
    }

    /// Starts a tunnelled TCP connection to `spec.port` inside the pod's network namespace.
    pub fn port_forward(
        &mut self,
        request: u32,
        spec: PortForwardSpec,
        target: Result<ExecTarget, String>,
        up: &async_channel::Sender<NodeUp>,
    ) {
        self.map.retain(|_, tx| !tx.is_closed());
        let up = up.clone();
        let (tx, rx) = async_channel::bounded(INPUT_QUEUE);
        if target.is_ok() {
            self.map.insert(request, tx);
        }
        smol::spawn(async move {
            let output = match forward(request, &spec, target, &up, rx).await {
                Ok(()) => ExecOutput::Exit {
                    code: 0,
                    signal: None,
                },
                Err(message) => ExecOutput::Error(ApiError {
                    code: ErrorCode::Unavailable,
                    message: format!(
                        "port-forward to pod {}/{} port {}: {message}",
                        spec.namespace, spec.pod, spec.port
                    ),
                }),
            };
            let _ = up.send(NodeUp::Exec { request, output }).await;
        })
        .detach();
    }

    /// Hands a session its input; a session that cannot take it (the master ignored the
    /// window) is ended.
    pub fn input(&mut self, request: u32, input: ExecInput) {
        if let Some(tx) = self.map.get(&request)
            && tx.try_send(input).is_err()
        {
            tracing::warn!(request, "exec session input overran its window: ending it");
            self.map.remove(&request);
        }
    }

    /// Ends every session (the master connection is gone).
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

fn file(fd: OwnedFd) -> Result<Async<File>, String> {
    Async::new(File::from(fd)).map_err(|e| format!("registering an fd: {e}"))
}

/// Where stdin goes: the process's pipe or terminal, or a tunnelled socket.
enum Writer {
    File(Async<File>),
    Tcp(Async<std::net::TcpStream>),
}

impl Writer {
    async fn write_all(&mut self, d: &[u8]) -> std::io::Result<()> {
        match self {
            Writer::File(f) => f.write_all(d).await,
            Writer::Tcp(t) => t.write_all(d).await,
        }
    }

    /// The end of input: a pipe or socket is closed for writing; a terminal reads ^D.
    async fn end(&mut self, tty: bool) {
        match self {
            Writer::File(f) if tty => {
                let _ = f.write_all(&[4]).await;
            }
            Writer::File(_) => {}
            Writer::Tcp(t) => {
                let _ = t.get_ref().shutdown(std::net::Shutdown::Write);
            }
        }
    }
}

/// Output readers.
enum Reader {
    File(Async<File>),
    Tcp(Async<std::net::TcpStream>),
}

impl Reader {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Reader::File(f) => f.read(buf).await,
            Reader::Tcp(t) => t.read(buf).await,
        }
    }
}

/// A session's I/O, however it was set up.
struct Io {
    stdin: Option<Writer>,
    out: Option<Reader>,
    err: Option<Reader>,
    /// The terminal, for resizes.
    pty: Option<OwnedFd>,
    /// The helper's PID and its exit (`None`: a tunnel, over when its output ends).
    helper: Option<(i32, smol::Task<i32>)>,
    tty: bool,
}

enum Step {
    Out(usize, bool),
    Input(Option<ExecInput>),
    Exited(i32),
    Drained,
}

/// Reads into `buf` if the stream is open and credit allows; never resolves otherwise.
async fn read_some(r: &mut Option<Reader>, buf: &mut [u8], credit: u32) -> usize {
    match r {
        Some(f) if credit > 0 => {
            let n = buf.len().min(credit as usize);
            // A terminal whose other side is closed reads EIO: the end, like EOF.
            f.read(&mut buf[..n]).await.unwrap_or(0)
        }
        _ => std::future::pending().await,
    }
}

async fn run(
    request: u32,
    spec: &ExecSpec,
    target: ExecTarget,
    up: &async_channel::Sender<NodeUp>,
    rx: async_channel::Receiver<ExecInput>,
) -> Result<i32, String> {
    let e = |e: crate::sys::SysError| e.to_string();
    // (helper's stdin, stdout, stderr), our stdin writer, stdout and stderr readers, the pty.
    let (stdio, stdin_w, out_r, err_r, pty) = if spec.tty {
        let (master, slave) = sysexec::openpty(spec.rows.max(1), spec.cols.max(1)).map_err(e)?;
        let stdio = [
            sysproc::dup(slave.as_fd()).map_err(e)?,
            sysproc::dup(slave.as_fd()).map_err(e)?,
            slave,
        ];
        let w = file(sysproc::dup(master.as_fd()).map_err(e)?)?;
        let r = file(sysproc::dup(master.as_fd()).map_err(e)?)?;
        (stdio, Some(w), Some(r), None, Some(master))
    } else {
        let (stdin, w) = if spec.stdin {
            let (r, w) = sysproc::pipe().map_err(e)?;
            (r, Some(file(w)?))
        } else {
            (
                sysproc::open_read(std::path::Path::new("/dev/null")).map_err(e)?,
                None,
            )
        };
        let (or, ow) = sysproc::pipe().map_err(e)?;
        let (er, ew) = sysproc::pipe().map_err(e)?;
        ([stdin, ow, ew], w, Some(file(or)?), Some(file(er)?), None)
    };
    let args = HelperArgs {
        state_dir: target.state_dir,
        init_pid: target.init_pid,
        process: spec.process.clone(),
        tty: spec.tty,
        command: spec.command.clone(),
    };
    let [i, o, er] = stdio;
    let child = sysexec::spawn_self(&args.to_args(), i, o, er).map_err(e)?;
    let helper = child.id() as i32;
    let mut child = child;
    let wait = smol::spawn(smol::unblock(move || match child.wait() {
        Ok(s) => s.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)
        }),
        Err(_) => 1,
    }));
    let _ = up
        .send(NodeUp::Exec {
            request,
            output: ExecOutput::Started,
        })
        .await;
    let io = Io {
        stdin: stdin_w.map(Writer::File),
        out: out_r.map(Reader::File),
        err: err_r.map(Reader::File),
        pty,
        helper: Some((helper, wait)),
        tty: spec.tty,
    };
    Ok(pump(request, up, rx, io).await.unwrap_or(1))
}

/// Connects to the pod's port from a thread inside the pod's network namespace.
async fn forward(
    request: u32,
    spec: &PortForwardSpec,
    target: Result<ExecTarget, String>,
    up: &async_channel::Sender<NodeUp>,
    rx: async_channel::Receiver<ExecInput>,
) -> Result<(), String> {
    let target = target?;
    let port = spec.port;
    let netns = PathBuf::from(format!("/proc/{}/ns/net", target.init_pid));
    let stream = smol::unblock(move || {
        std::thread::spawn(move || {
            crate::sys::podnet::join_netns(&netns).map_err(|e| e.to_string())?;
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(5),
            )
            .map_err(|e| format!("connecting inside the pod: {e}"))
        })
        .join()
        .map_err(|_| "the connecting thread panicked".to_string())?
    })
    .await?;
    let _ = stream.set_nodelay(true);
    let r = stream.try_clone().map_err(|e| e.to_string())?;
    let w = Async::new(stream).map_err(|e| e.to_string())?;
    let r = Async::new(r).map_err(|e| e.to_string())?;
    let _ = up
        .send(NodeUp::Exec {
            request,
            output: ExecOutput::Started,
        })
        .await;
    let io = Io {
        stdin: Some(Writer::Tcp(w)),
        out: Some(Reader::Tcp(r)),
        err: None,
        pty: None,
        helper: None,
        tty: false,
    };
    pump(request, up, rx, io).await;
    Ok(())
}

/// Moves a session's bytes until it ends; returns the process's exit code (`None` for a tunnel).
async fn pump(
    request: u32,
    up: &async_channel::Sender<NodeUp>,
    rx: async_channel::Receiver<ExecInput>,
    io: Io,
) -> Option<i32> {
    let send = |output: ExecOutput| up.send(NodeUp::Exec { request, output });
    let Io {
        stdin: stdin_w,
        out: out_r,
        err: err_r,
        pty,
        helper,
        tty,
    } = io;
    let (helper, mut wait) = match helper {
        Some((pid, w)) => (Some(pid), Some(w)),
        None => (None, None),
    };

    // Stdin: its own task, so a process that does not read never blocks output or resizes.
    let (stdin_tx, stdin_rx) = async_channel::unbounded::<Option<Vec<u8>>>();
    let stdin_task = stdin_w.map(|mut w| {
        let up = up.clone();
        smol::spawn(async move {
            while let Ok(data) = stdin_rx.recv().await {
                match data {
                    Some(d) => {
                        if w.write_all(&d).await.is_err() {
                            return;
                        }
                        let output = ExecOutput::StdinAck(d.len() as u32);
                        let _ = up.send(NodeUp::Exec { request, output }).await;
                    }
                    None => {
                        w.end(tty).await;
                        // A terminal may get more input after ^D; a pipe or socket is done.
                        if !tty {
                            return;
                        }
                    }
                }
            }
        })
    });

    let mut credit = Credit::default();
    let (mut out_r, mut err_r) = (out_r, err_r);
    let mut obuf = vec![0u8; CHUNK];
    let mut ebuf = vec![0u8; CHUNK];
    let mut exit: Option<i32> = None;
    let mut input_open = true;
    let mut killed = false;
    loop {
        if (exit.is_some() || wait.is_none()) && out_r.is_none() && err_r.is_none() {
            break;
        }
        let avail = credit.available();
        let step = async { Step::Out(read_some(&mut out_r, &mut obuf, avail).await, false) }
            .or(async { Step::Out(read_some(&mut err_r, &mut ebuf, avail).await, true) })
            .or(async {
                if input_open {
                    Step::Input(rx.recv().await.ok())
                } else {
                    std::future::pending().await
                }
            })
            .or(async {
                if exit.is_none()
                    && let Some(w) = &mut wait
                {
                    Step::Exited(w.await)
                } else if wait.is_none() {
                    std::future::pending().await
                } else {
                    smol::Timer::after(DRAIN).await;
                    Step::Drained
                }
            })
            .await;
        match step {
            Step::Out(0, false) => out_r = None,
            Step::Out(0, true) => err_r = None,
            Step::Out(n, is_err) => {
                let _ = credit.take(n);
                let data = if is_err {
                    ebuf[..n].to_vec()
                } else {
                    obuf[..n].to_vec()
                };
                let out = if is_err {
                    ExecOutput::Stderr(data)
                } else {
                    ExecOutput::Stdout(data)
                };
                if send(out).await.is_err() {
                    input_open = false;
                }
            }
            Step::Input(Some(ExecInput::Stdin(d))) => {
                let _ = stdin_tx.try_send(Some(d));
            }
            Step::Input(Some(ExecInput::StdinEof)) => {
                let _ = stdin_tx.try_send(None);
            }
            Step::Input(Some(ExecInput::Resize { rows, cols })) => {
                if let Some(m) = &pty {
                    let _ = sysexec::set_winsize(m.as_fd(), rows.max(1), cols.max(1));
                }
            }
            Step::Input(Some(ExecInput::Ack(n))) => {
                if credit.ack(n).is_err() {
                    tracing::warn!(request, "exec session: acknowledgement of bytes never sent");
                }
            }
            Step::Input(Some(ExecInput::Kill) | None) => {
                input_open = false;
                if !killed && exit.is_none() {
                    killed = true;
                    match helper {
                        Some(pid) => {
                            let _ = sysproc::kill(pid, Signal::TERM);
                        }
                        // A tunnel: closing it is the end.
                        None => break,
                    }
                }
            }
            Step::Exited(code) => exit = Some(code),
            Step::Drained => break,
        }
    }
    drop(stdin_task);
    exit
}
