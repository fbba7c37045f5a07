//! `bramble exec` relayed: the client's session (its [`RequestBody::Exec`] request and the
//! [`RequestBody::ExecInput`]s that follow on the same connection) tunnelled to the node
//! running the pod ([`NodeDown::Exec`], [`NodeDown::ExecInput`]) and the node's events back
//! ([`NodeUp::Exec`] → [`ResponseBody::Exec`]).
//!
//! The master holds at most a window per direction and session: it counts the bytes and the
//! acknowledgements passing through with [`Credit`] (the peers keep to [`bramble_wire::stream`]'s
//! window) and ends a session whose peer overruns it, so a fast producer cannot make it buffer.
//! Stdin is forwarded with backpressure (the client's reads wait for the node's channel).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bramble_wire::msg::{
    ApiError, ErrorCode, ExecInput, ExecOutput, ExecSpec, NodeDown, PortForwardSpec, Response,
    ResponseBody,
};
use bramble_wire::objects::{Kind, Object, PodPhase};
use bramble_wire::stream::{CHUNK, Credit};

use super::Master;
use super::client::{not_found, scope};

/// One session as the node-facing side sees it (by the master's request id to the node).
#[derive(Debug)]
pub(crate) struct ExecRoute {
    /// The node running it.
    node: String,
    /// To the client-facing task (unbounded, but never more than a window: see `out`).
    tx: async_channel::Sender<ExecOutput>,
    /// Output bytes relayed and not yet acknowledged by the client.
    out: Credit,
    /// Stdin bytes relayed and not yet acknowledged by the node.
    stdin: Credit,
}

/// A client connection's sessions: its request id → the node request and the node's channel.
pub(crate) type ClientExecs = Arc<Mutex<HashMap<u32, (u32, async_channel::Sender<NodeDown>)>>>;

fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
    }
}

/// What a session runs on the node.
#[derive(Debug)]
pub(crate) enum Start {
    /// `bramble exec`.
    Exec(ExecSpec),
    /// One `bramble port-forward` connection.
    PortForward(PortForwardSpec),
}

/// Runs one session for the client's request `id`: checks, starts it on the node, relays its
/// events until the exit.
pub(crate) async fn run(
    m: Arc<Master>,
    id: u32,
    start: Start,
    tx: super::client::Outbox,
    execs: ClientExecs,
) {
    let result = async {
        let (namespace, name, process) = match &start {
            Start::Exec(spec) => {
                if spec.command.is_empty() {
                    return Err(err(
                        ErrorCode::Invalid,
                        "no command: `bramble exec POD -- CMD ARGS…`",
                    ));
                }
                (spec.namespace.clone(), spec.pod.clone(), spec.process.clone())
            }
            Start::PortForward(spec) => {
                if spec.port == 0 {
                    return Err(err(ErrorCode::Invalid, "port 0: give the pod's port (1-65535)"));
                }
                (spec.namespace.clone(), spec.pod.clone(), None)
            }
        };
        let ns = scope(Kind::Pod, &namespace);
        let Some(Object::Pod(p)) = super::get_opt(&m.store, Kind::Pod, &ns, &name).await? else {
            return Err(not_found(Kind::Pod, &ns, &name));
        };
        if let Some(proc_name) = &process
            && !p.spec.processes.iter().any(|x| &x.name == proc_name)
        {
            let names: Vec<_> = p.spec.processes.iter().map(|x| x.name.as_str()).collect();
            return Err(err(
                ErrorCode::NotFound,
                format!("pod {name:?} has no process {proc_name:?}; it has {names:?} (pick one with -p)"),
            ));
        }
        let node = match (&p.spec.node_name, p.status.phase) {
            (Some(node), PodPhase::Running) => node.clone(),
            (_, phase) => {
                return Err(err(
                    ErrorCode::Invalid,
                    format!(
                        "pod {ns}/{name} is {phase:?}, not Running: exec and port-forward need a running pod; see `bramble describe pod {name} -n {ns}`"
                    ),
                ));
            }
        };
        let session = m.nodes.lock().await.get(&node).and_then(|n| n.session.clone());
        let Some((_, node_tx)) = session else {
            return Err(err(
                ErrorCode::Unavailable,
                format!("node {node:?} running pod {ns}/{name} is not connected; try again when it is back (`bramble get nodes`)"),
            ));
        };
        let request = (m.next_id() & 0xffff_ffff) as u32;
        let (rtx, rrx) = async_channel::unbounded();
        m.exec_routes.lock().await.insert(
            request,
            ExecRoute {
                node: node.clone(),
                tx: rtx,
                out: Credit::default(),
                stdin: Credit::default(),
            },
        );
        let _guard = Guard {
            m: m.clone(),
            id,
            request,
            node_tx: node_tx.clone(),
            execs: execs.clone(),
        };
        let down = match start {
            Start::Exec(mut spec) => {
                spec.namespace = ns.clone();
                NodeDown::Exec { request, spec }
            }
            Start::PortForward(mut spec) => {
                spec.namespace = ns.clone();
                NodeDown::PortForward { request, spec }
            }
        };
        node_tx
            .send(down)
            .await
            .map_err(|_| err(ErrorCode::Unavailable, format!("node {node:?} disconnected")))?;
        while let Ok(out) = rrx.recv().await {
            if out == ExecOutput::Started
                && let Ok(mut e) = execs.lock()
            {
                e.insert(id, (request, node_tx.clone()));
            }
            let end = matches!(out, ExecOutput::Exit { .. } | ExecOutput::Error(_));
            if tx.send(Response { id, body: ResponseBody::Exec(out) }).await.is_err() {
                return Ok(());
            }
            if end {
                let _ = tx.send(Response { id, body: ResponseBody::End }).await;
                return Ok(());
            }
        }
        Err(err(
            ErrorCode::Unavailable,
            format!("node {node:?} disconnected during the exec in pod {ns}/{name}"),
        ))
    }
    .await;
    if let Err(e) = result {
        let _ = tx
            .send(Response {
                id,
                body: ResponseBody::Error(e),
            })
            .await;
    }
}

/// Input from the client for its session `exec` (ignored once the session ended).
pub(crate) async fn input(m: &Master, execs: &ClientExecs, exec: u32, input: ExecInput) {
    let Some((request, node_tx)) = execs.lock().ok().and_then(|e| e.get(&exec).cloned()) else {
        return;
    };
    let ok = {
        let mut routes = m.exec_routes.lock().await;
        match routes.get_mut(&request) {
            None => return,
            Some(r) => match &input {
                ExecInput::Stdin(d) => d.len() <= CHUNK && r.stdin.sent(d.len()).is_ok(),
                ExecInput::Ack(n) => r.out.ack(*n).is_ok(),
                _ => true,
            },
        }
    };
    if !ok {
        overrun(m, request, "the client sent beyond its window").await;
        return;
    }
    let _ = node_tx.send(NodeDown::ExecInput { request, input }).await;
}

/// An event from `node` for session `request`.
pub(crate) async fn from_node(m: &Master, node: &str, request: u32, output: ExecOutput) {
    let mut routes = m.exec_routes.lock().await;
    let Some(r) = routes.get_mut(&request).filter(|r| r.node == node) else {
        return;
    };
    let ok = match &output {
        ExecOutput::Stdout(d) | ExecOutput::Stderr(d) => r.out.sent(d.len()).is_ok(),
        ExecOutput::StdinAck(n) => r.stdin.ack(*n).is_ok(),
        _ => true,
    };
    if !ok {
        drop(routes);
        overrun(m, request, "the node sent beyond its window").await;
        return;
    }
    let end = matches!(output, ExecOutput::Exit { .. } | ExecOutput::Error(_));
    let _ = r.tx.try_send(output);
    if end {
        routes.remove(&request);
    }
}

/// A node's session ended: its exec sessions end with an error (their routes close).
pub(crate) async fn node_gone(m: &Master, node: &str) {
    m.exec_routes.lock().await.retain(|_, r| r.node != node);
}

async fn overrun(m: &Master, request: u32, why: &str) {
    tracing::warn!(request, "exec session ended: {why}");
    if let Some(r) = m.exec_routes.lock().await.remove(&request) {
        let _ = r.tx.try_send(ExecOutput::Error(err(
            ErrorCode::Internal,
            format!("exec session ended: {why} (a bug in that peer)"),
        )));
    }
}

/// Ends the node's side when the client's task ends (exit, error, or the client went away).
struct Guard {
    m: Arc<Master>,
    id: u32,
    request: u32,
    node_tx: async_channel::Sender<NodeDown>,
    execs: ClientExecs,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut e) = self.execs.lock() {
            e.remove(&self.id);
        }
        let (m, request, node_tx) = (self.m.clone(), self.request, self.node_tx.clone());
        smol::spawn(async move {
            if m.exec_routes.lock().await.remove(&request).is_some() {
                // Still running: the client went away.
                let _ = node_tx.try_send(NodeDown::ExecInput {
                    request,
                    input: ExecInput::Kill,
                });
            }
        })
        .detach();
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exec::Guard({})", self.request)
    }
}
