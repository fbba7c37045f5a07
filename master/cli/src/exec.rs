//! `bramble exec POD [-p PROCESS] [-i] [-t] -- CMD ARGS…`: a process run inside a pod, its
//! stdio streamed through the master (see `bramble_server::api::exec`) with the credit of
//! [`bramble_wire::stream`]. With `-t` the terminal is put in raw mode (restored on every way
//! out: the guard's `Drop`, and SIGTERM/SIGHUP end the session first), so Ctrl-C and Ctrl-D go
//! to the remote terminal as in `kubectl exec -it`; SIGWINCH sends the new size. The remote
//! exit code becomes ours.

use std::io::{IsTerminal, Write};

use bramble_client::{Client, ClientError};
use bramble_wire::msg::{ExecInput, ExecOutput, ExecSpec, RequestBody, Response, ResponseBody};
use bramble_wire::stream::{Acks, CHUNK, Credit};
use smol::future::FutureExt;
use smol::io::AsyncReadExt;

/// The terminal's mode before raw mode, put back when dropped.
struct RawMode(rustix::termios::Termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

fn window_size() -> Option<(u16, u16)> {
    [
        rustix::termios::tcgetwinsize(std::io::stdin()),
        rustix::termios::tcgetwinsize(std::io::stdout()),
    ]
    .into_iter()
    .flatten()
    .map(|w| (w.ws_row, w.ws_col))
    .find(|&(r, c)| r > 0 && c > 0)
}

enum Step {
    Resp(Option<Box<Response>>),
    Stdin(std::io::Result<usize>),
    Winch,
    Quit,
}

/// Runs the session; returns the remote exit code.
pub async fn run(
    c: Client,
    namespace: String,
    pod: String,
    process: Option<String>,
    stdin: bool,
    mut tty: bool,
    command: Vec<String>,
) -> Result<i32, ClientError> {
    if tty && stdin && !std::io::stdin().is_terminal() {
        eprintln!("Unable to use a TTY - input is not a terminal; running without one");
        tty = false;
    }
    let (rows, cols) = if tty {
        window_size().unwrap_or((24, 80))
    } else {
        (0, 0)
    };
    let (mut rx, mut tx) = c.split();
    let id = tx
        .start(RequestBody::Exec(ExecSpec {
            namespace,
            pod,
            process,
            command,
            stdin,
            tty,
            rows,
            cols,
        }))
        .await?;
    // Responses on their own task: reading a frame is not cancelled halfway by the loop below.
    let (resp_tx, resp_rx) = smol::channel::bounded::<Result<Response, ClientError>>(64);
    let _reader = smol::spawn(async move {
        loop {
            let r = rx.next().await;
            let failed = r.is_err();
            if resp_tx.send(r).await.is_err() || failed {
                return;
            }
        }
    });
    // Until the process runs: errors (pod not found, not running, forbidden) end it here.
    loop {
        let r = resp_rx.recv().await.map_err(|_| closed())??;
        if r.id != id {
            continue;
        }
        match r.body {
            ResponseBody::Exec(ExecOutput::Started) => break,
            ResponseBody::Exec(ExecOutput::Error(e)) | ResponseBody::Error(e) => {
                return Err(ClientError::Api(e));
            }
            ResponseBody::Exec(ExecOutput::Exit { code, .. }) => return Ok(code),
            _ => {}
        }
    }
    let _raw = if tty && stdin { RawMode::enter() } else { None };
    let mut signals = async_signal::Signals::new([
        async_signal::Signal::Winch,
        async_signal::Signal::Term,
        async_signal::Signal::Hup,
    ])
    .ok();
    let mut input = stdin.then(|| smol::Unblock::new(std::io::stdin()));
    let mut buf = vec![0u8; CHUNK];
    let mut credit = Credit::default();
    let mut acks = Acks::default();
    let send = |input: ExecInput| RequestBody::ExecInput { exec: id, input };
    loop {
        let avail = credit.available();
        let step =
            async { Step::Resp(resp_rx.recv().await.ok().and_then(Result::ok).map(Box::new)) }
                .or(async {
                    match &mut input {
                        Some(i) if avail > 0 => {
                            let n = buf.len().min(avail as usize);
                            Step::Stdin(i.read(&mut buf[..n]).await)
                        }
                        _ => std::future::pending().await,
                    }
                })
                .or(async {
                    use smol::stream::StreamExt;
                    match &mut signals {
                        Some(s) => match s.next().await {
                            Some(Ok(async_signal::Signal::Winch)) => Step::Winch,
                            Some(Ok(_)) => Step::Quit,
                            _ => std::future::pending().await,
                        },
                        None => std::future::pending().await,
                    }
                })
                .await;
        match step {
            Step::Resp(None) => return Err(closed()),
            Step::Resp(Some(r)) if r.id != id => {}
            Step::Resp(Some(r)) => match r.body {
                ResponseBody::Exec(ExecOutput::Stdout(d)) => {
                    let mut o = std::io::stdout().lock();
                    let _ = o.write_all(&d);
                    let _ = o.flush();
                    if let Some(n) = acks.consumed(d.len()) {
                        tx.start(send(ExecInput::Ack(n))).await?;
                    }
                }
                ResponseBody::Exec(ExecOutput::Stderr(d)) => {
                    let mut o = std::io::stderr().lock();
                    let _ = o.write_all(&d);
                    let _ = o.flush();
                    if let Some(n) = acks.consumed(d.len()) {
                        tx.start(send(ExecInput::Ack(n))).await?;
                    }
                }
                ResponseBody::Exec(ExecOutput::StdinAck(n)) => {
                    let _ = credit.ack(n);
                }
                ResponseBody::Exec(ExecOutput::Exit { code, .. }) => return Ok(code),
                ResponseBody::Exec(ExecOutput::Error(e)) | ResponseBody::Error(e) => {
                    return Err(ClientError::Api(e));
                }
                ResponseBody::End => return Err(closed()),
                _ => {}
            },
            Step::Stdin(Ok(0)) | Step::Stdin(Err(_)) => {
                input = None;
                tx.start(send(ExecInput::StdinEof)).await?;
            }
            Step::Stdin(Ok(n)) => {
                let _ = credit.take(n);
                tx.start(send(ExecInput::Stdin(buf[..n].to_vec()))).await?;
            }
            Step::Winch => {
                if let Some((rows, cols)) = window_size() {
                    tx.start(send(ExecInput::Resize { rows, cols })).await?;
                }
            }
            Step::Quit => {
                let _ = tx.start(send(ExecInput::Kill)).await;
                // The terminal is restored by `_raw`'s drop on the way out.
                return Ok(128 + 15);
            }
        }
    }
}

fn closed() -> ClientError {
    ClientError::Api(bramble_wire::msg::ApiError {
        code: bramble_wire::msg::ErrorCode::Unavailable,
        message: "the master closed the exec session before the process exited".into(),
    })
}
