//! `bramble port-forward POD [LOCAL:]REMOTE…`: local TCP listeners; each accepted connection is
//! tunnelled through the master to the pod's node, whose agent connects to `REMOTE` on the pod's
//! loopback from inside the pod's network namespace (so isolated pods work, and a laptop that
//! reaches only the master reaches the pod). All connections share one connection to the
//! master, one request each, with the exec stream's credit ([`bramble_wire::stream`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bramble_client::{Client, ClientError, ClientTx};
use bramble_wire::msg::{ExecInput, ExecOutput, PortForwardSpec, RequestBody, ResponseBody};
use bramble_wire::stream::{Acks, CHUNK, Credit};
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// One `[LOCAL:]REMOTE` argument: the local port (`0`: any free one) and the pod's port.
pub fn parse_port(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str, what: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{s:?}: {what} port {p:?} is not a number 0-65535"))
    };
    let (local, remote) = match s.split_once(':') {
        Some(("", r)) => (0, port(r, "pod")?),
        Some((l, r)) => (port(l, "local")?, port(r, "pod")?),
        None => {
            let p = port(s, "pod")?;
            (p, p)
        }
    };
    if remote == 0 {
        return Err(format!("{s:?}: the pod's port must be 1-65535"));
    }
    Ok((local, remote))
}

type Routes = Arc<Mutex<HashMap<u32, smol::channel::Sender<ResponseBody>>>>;

/// Runs until interrupted or the master connection ends.
pub async fn run(
    c: Client,
    namespace: String,
    pod: String,
    ports: Vec<String>,
    address: String,
) -> Result<i32, ClientError> {
    let usage = |m: String| {
        ClientError::Api(bramble_wire::msg::ApiError {
            code: bramble_wire::msg::ErrorCode::Invalid,
            message: m,
        })
    };
    let ports = ports
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    let mut listeners = Vec::new();
    for (local, remote) in ports {
        let l = async_net::TcpListener::bind((address.as_str(), local))
            .await
            .map_err(|e| usage(format!("cannot listen on {address}:{local}: {e}")))?;
        let at = l.local_addr().map_err(|e| usage(e.to_string()))?;
        println!("Forwarding from {at} -> {remote}");
        listeners.push((l, remote));
    }
    let (mut rx, tx) = c.split();
    let tx = Arc::new(smol::lock::Mutex::new(tx));
    let routes: Routes = Arc::default();
    let mut tasks = Vec::new();
    for (l, remote) in listeners {
        let (tx, routes, namespace, pod) =
            (tx.clone(), routes.clone(), namespace.clone(), pod.clone());
        tasks.push(smol::spawn(async move {
            while let Ok((conn, _)) = l.accept().await {
                let _ = conn.set_nodelay(true);
                let spec = PortForwardSpec {
                    namespace: namespace.clone(),
                    pod: pod.clone(),
                    port: remote,
                };
                smol::spawn(tunnel(conn, spec, tx.clone(), routes.clone())).detach();
            }
        }));
    }
    // Answers go to their connection's task; the end of the master connection ends it all.
    loop {
        let r = rx.next().await?;
        let route = routes.lock().ok().and_then(|m| m.get(&r.id).cloned());
        if let Some(route) = route {
            let _ = route.send(r.body).await;
        }
    }
}

async fn send(tx: &smol::lock::Mutex<ClientTx>, body: RequestBody) -> Result<(), ClientError> {
    tx.lock().await.start(body).await.map(|_| ())
}

/// One accepted connection, tunnelled until either side closes.
async fn tunnel(
    mut conn: async_net::TcpStream,
    spec: PortForwardSpec,
    tx: Arc<smol::lock::Mutex<ClientTx>>,
    routes: Routes,
) {
    let (rtx, rrx) = smol::channel::bounded::<ResponseBody>(64);
    let port = spec.port;
    let id = {
        let mut t = tx.lock().await;
        let id = t.next_id();
        if let Ok(mut r) = routes.lock() {
            r.insert(id, rtx);
        }
        if t.start(RequestBody::PortForward(spec)).await.is_err() {
            return;
        }
        id
    };
    let input = |input: ExecInput| RequestBody::ExecInput { exec: id, input };
    let mut started = false;
    let mut credit = Credit::default();
    let mut acks = Acks::default();
    let mut buf = vec![0u8; CHUNK];
    let mut reading = true;
    enum Step {
        Resp(Option<Box<ResponseBody>>),
        Read(std::io::Result<usize>),
    }
    loop {
        let avail = if started { credit.available() } else { 0 };
        let mut c2 = conn.clone();
        let step = async { Step::Resp(rrx.recv().await.ok().map(Box::new)) }
            .or(async {
                if reading && avail > 0 {
                    let n = buf.len().min(avail as usize);
                    Step::Read(c2.read(&mut buf[..n]).await)
                } else {
                    std::future::pending().await
                }
            })
            .await;
        match step {
            Step::Resp(Some(b)) => match *b {
                ResponseBody::Exec(ExecOutput::Started) => started = true,
                ResponseBody::Exec(ExecOutput::Stdout(d) | ExecOutput::Stderr(d)) => {
                    if conn.write_all(&d).await.is_err() {
                        let _ = send(&tx, input(ExecInput::Kill)).await;
                        break;
                    }
                    if let Some(n) = acks.consumed(d.len())
                        && send(&tx, input(ExecInput::Ack(n))).await.is_err()
                    {
                        break;
                    }
                }
                ResponseBody::Exec(ExecOutput::StdinAck(n)) => {
                    let _ = credit.ack(n);
                }
                ResponseBody::Exec(ExecOutput::Exit { .. }) => break,
                ResponseBody::Exec(ExecOutput::Error(e)) | ResponseBody::Error(e) => {
                    eprintln!("error forwarding port {port}: {}", e.message);
                    break;
                }
                _ => {}
            },
            Step::Resp(None) => break,
            Step::Read(Ok(0)) | Step::Read(Err(_)) => {
                reading = false;
                if send(&tx, input(ExecInput::StdinEof)).await.is_err() {
                    break;
                }
            }
            Step::Read(Ok(n)) => {
                let _ = credit.take(n);
                if send(&tx, input(ExecInput::Stdin(buf[..n].to_vec())))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
    if let Ok(mut r) = routes.lock() {
        r.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_port;

    #[test]
    fn ports_parse_like_kubectl() {
        assert_eq!(parse_port("8080:80"), Ok((8080, 80)));
        assert_eq!(parse_port("5432"), Ok((5432, 5432)));
        assert_eq!(parse_port(":80"), Ok((0, 80)));
        assert!(parse_port("80:0").is_err());
        assert!(parse_port("x:80").unwrap_err().contains("local port"));
        assert!(parse_port("70000").is_err());
    }
}
