//! `bramble-nodesim`: many simulated worker nodes over the real wire protocol, for load tests.
//!
//! ```text
//! bramble-nodesim --master 127.0.0.1:7000 --token-file DATA/join.token --nodes 100 \
//!     --heartbeat 1s [--prefix sim] [--duration 60s] [--concurrency 64] [--churn 100]
//!     [--until-stdin-closes] [--spray-logs N]
//! ```
//!
//! Each simulated node dials the master, says `Hello` (role worker, identity `<prefix>-<i>`),
//! registers as an aarch64 board with 4 CPUs and 4 GiB, heartbeats at the interval (the first one
//! at a random offset within it) and answers every `Assign` with a `Status` that
//! reports the newly assigned pods Running, so pods scheduled onto simulated nodes look alive.
//! A dropped connection is redialled after a second, like a real agent.
//!
//! A `Logs` request is answered with one line, `NAME: log of POD`, then the end of the stream
//! (with `follow`, the stream stays open). `--spray-logs N` makes node 0 hostile: at every
//! heartbeat it also sends a log chunk `INJECTED by NAME` for each request id 1..=N, as a node
//! trying to write into other nodes' `bramble logs -f` streams would.
//!
//! `--churn N` adds N pod status changes per second across the cluster: nodes that run pods take
//! turns (round robin) reporting one of their pods restarted once more (a change of meaning the
//! master writes), as a cluster whose processes sometimes crash would.
//!
//! It prints `nodesim: ready N/N after T ms` once every node got its first assignment (proof that
//! the master stored its registration), and a summary when it stops: at the end of `--duration`,
//! or when its stdin closes with `--until-stdin-closes` (so a parent can stop it and still get the
//! summary).
//!
//! Bounded on purpose: at most 10,000 nodes, at most one hour, loopback masters only.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use async_net::TcpStream;
use bramble_wire::io::{FrameReader, send};
use bramble_wire::msg::{NodeDown, NodeUp, PodReport};
use bramble_wire::objects::{PodPhase, PodStatus, ProcessState, ProcessStatus};
use bramble_wire::{Arch, CgroupVersion, Controllers, Heartbeat, Hello, NodeInfo, Role};
use futures_lite::FutureExt;

const MAX_NODES: usize = 10_000;
const MAX_DURATION: Duration = Duration::from_secs(3600);
const MAX_FRAME: usize = bramble_wire::DEFAULT_MAX_FRAME * 16;

const USAGE: &str = "usage: bramble-nodesim --master ADDR --token-file FILE --nodes N --heartbeat 1s \
[--prefix sim] [--duration 60s] [--concurrency 64] [--churn 0] [--until-stdin-closes] \
[--spray-logs N]";

#[derive(Debug, Clone)]
struct Args {
    master: SocketAddr,
    token: String,
    nodes: usize,
    heartbeat: Duration,
    prefix: String,
    duration: Duration,
    concurrency: usize,
    churn: u32,
    until_stdin_closes: bool,
    spray_logs: u32,
}

/// Parses `500ms`, `5s`, `2m`, `1h` (a bare number is seconds).
fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration like 500ms, 5s, 2m"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => bail!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)"),
    };
    anyhow::ensure!(
        secs.is_finite() && secs >= 0.0,
        "{s:?} is not a valid duration"
    );
    Ok(Duration::from_secs_f64(secs))
}

fn parse_args() -> anyhow::Result<Args> {
    let mut master = None;
    let mut token_file: Option<PathBuf> = None;
    let mut nodes = None;
    let mut heartbeat = Duration::from_secs(5);
    let mut prefix = "sim".to_string();
    let mut duration = Duration::from_secs(60);
    let mut concurrency = 64usize;
    let mut churn = 0u32;
    let mut until_stdin_closes = false;
    let mut spray_logs = 0u32;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut val = |name: &str| -> anyhow::Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .with_context(|| format!("{name} needs a value\n{USAGE}")),
            }
        };
        match flag.as_str() {
            "--master" => master = Some(val("--master")?),
            "--token-file" => token_file = Some(PathBuf::from(val("--token-file")?)),
            "--nodes" => {
                nodes = Some(
                    val("--nodes")?
                        .parse::<usize>()
                        .context("--nodes must be a number")?,
                )
            }
            "--heartbeat" => heartbeat = parse_duration(&val("--heartbeat")?)?,
            "--prefix" => prefix = val("--prefix")?,
            "--duration" => duration = parse_duration(&val("--duration")?)?,
            "--concurrency" => {
                concurrency = val("--concurrency")?
                    .parse()
                    .context("--concurrency must be a number")?
            }
            "--churn" => {
                churn = val("--churn")?
                    .parse()
                    .context("--churn must be a number of status changes per second")?
            }
            "--until-stdin-closes" => until_stdin_closes = true,
            "--spray-logs" => {
                spray_logs = val("--spray-logs")?
                    .parse()
                    .context("--spray-logs must be a number of request ids")?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let master = master.with_context(|| format!("--master is required\n{USAGE}"))?;
    let token_file = token_file.with_context(|| format!("--token-file is required\n{USAGE}"))?;
    let nodes = nodes.with_context(|| format!("--nodes is required\n{USAGE}"))?;
    anyhow::ensure!(
        (1..=MAX_NODES).contains(&nodes),
        "--nodes must be within 1..={MAX_NODES}"
    );
    anyhow::ensure!(
        duration > Duration::ZERO && duration <= MAX_DURATION,
        "--duration must be within (0, 1h]"
    );
    anyhow::ensure!(
        heartbeat >= Duration::from_millis(100) && heartbeat <= Duration::from_secs(600),
        "--heartbeat must be within 100ms..=600s"
    );
    anyhow::ensure!(
        (1..=1024).contains(&concurrency),
        "--concurrency must be within 1..=1024"
    );
    anyhow::ensure!(churn <= 10_000, "--churn must be at most 10000 per second");
    anyhow::ensure!(spray_logs <= 100_000, "--spray-logs must be at most 100000");
    // Node names are `<prefix>-<i>`: a DNS-1123 label of at most 63 bytes.
    anyhow::ensure!(
        !prefix.is_empty()
            && prefix.len() <= 52
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !prefix.starts_with('-'),
        "--prefix must be lowercase letters, digits and '-', at most 52 bytes"
    );
    let addrs: Vec<SocketAddr> = master
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve --master {master:?}"))?
        .collect();
    let Some(addr) = addrs.first().copied() else {
        bail!("--master {master:?} resolves to nothing");
    };
    anyhow::ensure!(
        addrs.iter().all(|a| a.ip().is_loopback()),
        "--master {master:?} is not a loopback address: the simulator only loads a local master"
    );
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("cannot read the join token {}", token_file.display()))?
        .trim()
        .to_string();
    Ok(Args {
        master: addr,
        token,
        nodes,
        heartbeat,
        prefix,
        duration,
        concurrency,
        churn,
        until_stdin_closes,
        spray_logs,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hstr<const N: usize>(s: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

/// Counters shared by all simulated nodes.
#[derive(Debug, Default)]
struct Stats {
    connected: AtomicU64,
    ready: AtomicU64,
    sessions: AtomicU64,
    heartbeats: AtomicU64,
    assigns: AtomicU64,
    status_reports: AtomicU64,
    churn_reports: AtomicU64,
    errors: AtomicU64,
    error_kinds: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    fn error(&self, e: &anyhow::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        // Group by message without the node name.
        let msg = format!("{e:#}");
        let key: String = msg.chars().take(160).collect();
        if let Ok(mut k) = self.error_kinds.lock() {
            *k.entry(key).or_insert(0) += 1;
        }
    }
}

type Stop = smol::channel::Receiver<()>;

/// A small xorshift generator for jitter (no dependency, deterministic per node).
fn jitter(seed: u64, max: Duration) -> Duration {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let ms = max.as_millis().max(1) as u64;
    Duration::from_millis(x % ms)
}

fn running_report(p: &bramble_wire::objects::Pod, now: u64, restarts: u32) -> PodReport {
    PodReport {
        namespace: p.meta.namespace.clone(),
        name: p.meta.name.clone(),
        uid: p.meta.uid.clone(),
        status: PodStatus {
            phase: PodPhase::Running,
            processes: p
                .spec
                .processes
                .iter()
                .map(|s| ProcessStatus {
                    name: s.name.clone(),
                    // No real process: pid 0 marks a simulated one.
                    state: ProcessState::Running {
                        pid: 0,
                        started_ms: now,
                    },
                    restarts,
                    last_exit: None,
                    ready: true,
                })
                .collect(),
            message: "simulated by bramble-nodesim".into(),
            updated_ms: now,
            ip: String::new(),
        },
    }
}

enum Ev {
    Down(Result<Option<NodeDown>, bramble_wire::io::IoError>),
    Beat,
    Kick,
    Stop,
}

/// What the churn driver shares with the nodes: which nodes run pods, and one wake-up channel
/// per node.
struct Churn {
    has_pods: std::cell::RefCell<Vec<bool>>,
    kicks: Vec<smol::channel::Sender<()>>,
}

/// One connection of one simulated node, until it fails or `stop` is set.
/// Returns Ok(()) when stopped.
#[allow(clippy::too_many_arguments)]
async fn session(
    args: &Args,
    idx: usize,
    name: &str,
    stats: &Stats,
    stop: &Stop,
    gate: &smol::lock::Semaphore,
    first_ready: &mut bool,
    started: Instant,
    credential: &std::cell::RefCell<Option<String>>,
    churn: &Churn,
    kick: &smol::channel::Receiver<()>,
) -> anyhow::Result<()> {
    // Connect, handshake and register with bounded concurrency, so a burst of thousands of
    // nodes does not overflow the master's accept backlog.
    let permit = gate.acquire().await;
    let stream = TcpStream::connect(args.master)
        .or(async {
            smol::Timer::after(Duration::from_secs(10)).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out after 10 s",
            ))
        })
        .await
        .context("connect")?;
    let _ = stream.set_nodelay(true);
    // TLS like a real worker, pinning the master's certificate from the join token.
    let (tls, join_credential) =
        bramble_client::tls::dial_pinned(stream, &args.token, "join.token")
            .await
            .context("TLS handshake")?;
    let (r, mut writer) = futures_lite::io::split(tls);
    let mut reader = FrameReader::new(r, MAX_FRAME);
    let hello = Hello {
        protocol_version: bramble_wire::PROTOCOL_VERSION,
        role: Role::Worker,
        identity: hstr(name),
        // After joining once, the node's own credential (the master takes a join once per name).
        credentials: hstr(credential.borrow().as_deref().unwrap_or(&join_credential)),
        agent_version: hstr(concat!("nodesim-", env!("CARGO_PKG_VERSION"))),
    };
    bramble_wire::io::client_handshake(&mut reader, &mut writer, hello, MAX_FRAME)
        .or(async {
            smol::Timer::after(Duration::from_secs(20)).await;
            Err(bramble_wire::io::HandshakeError::Io(
                bramble_wire::io::IoError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no Welcome within 20 s",
                )),
            ))
        })
        .await
        .context("handshake")?;
    let info = NodeInfo {
        name: hstr(name),
        arch: Arch::Aarch64,
        os: hstr("Simulated Linux"),
        kernel: hstr("6.1.0-sim"),
        board: hstr("sim"),
        cpus: 4,
        memory_bytes: 4 << 30,
        pids: 4096,
        cgroup: CgroupVersion::V2,
        controllers: Controllers(Controllers::CPU | Controllers::MEMORY | Controllers::PIDS),
        agent_version: hstr(concat!("nodesim-", env!("CARGO_PKG_VERSION"))),
        labels: heapless::Vec::new(),
    };
    send(&mut writer, &NodeUp::Register(Box::new(info)), MAX_FRAME)
        .await
        .context("send Register")?;
    stats.connected.fetch_add(1, Ordering::Relaxed);
    stats.sessions.fetch_add(1, Ordering::Relaxed);
    let mut permit = Some(permit);
    let result = async {
        let mut seq = 0u32;
        let mut reported: HashSet<String> = HashSet::new();
        let mut assigned: Vec<bramble_wire::objects::Pod> = Vec::new();
        // Restart counts reported per pod uid (the churn), and whose turn is next.
        let mut restarts: std::collections::HashMap<String, u32> = Default::default();
        let mut turn = 0usize;
        let registered = Instant::now();
        let mut next_beat = Instant::now() + jitter(idx as u64 + 1, args.heartbeat);
        loop {
            let ev = async { Ev::Down(reader.recv::<NodeDown>().await) }
                .or(async {
                    smol::Timer::at(next_beat).await;
                    Ev::Beat
                })
                .or(async {
                    match kick.recv().await {
                        Ok(()) => Ev::Kick,
                        Err(_) => std::future::pending().await,
                    }
                })
                .or(async {
                    // Closing the channel wakes every node at once.
                    let _ = stop.recv().await;
                    Ev::Stop
                })
                .await;
            match ev {
                Ev::Stop => return Ok(()),
                Ev::Kick => {
                    if assigned.is_empty() {
                        continue;
                    }
                    let p = &assigned[turn % assigned.len()];
                    turn = turn.wrapping_add(1);
                    let n = restarts.entry(p.meta.uid.clone()).or_insert(0);
                    *n += 1;
                    let report = running_report(p, now_ms(), *n);
                    send(&mut writer, &NodeUp::Status(vec![report]), MAX_FRAME)
                        .await
                        .context("send Status")?;
                    stats.churn_reports.fetch_add(1, Ordering::Relaxed);
                }
                Ev::Beat => {
                    next_beat += args.heartbeat;
                    if next_beat < Instant::now() {
                        next_beat = Instant::now() + args.heartbeat;
                    }
                    seq = seq.wrapping_add(1);
                    let hb = Heartbeat {
                        seq,
                        pods_running: reported.len().min(u16::MAX as usize) as u16,
                        uptime_s: started.elapsed().as_secs() as u32,
                    };
                    send(&mut writer, &NodeUp::Heartbeat(hb), MAX_FRAME)
                        .await
                        .context("send Heartbeat")?;
                    if idx == 0 {
                        for request in 1..=args.spray_logs {
                            let data = format!("INJECTED by {name}\n").into_bytes();
                            let chunk = bramble_wire::msg::LogChunk { request, data };
                            send(&mut writer, &NodeUp::Log(chunk), MAX_FRAME)
                                .await
                                .context("send Log")?;
                        }
                    }
                    stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                    if permit.is_some() && registered.elapsed() > Duration::from_secs(15) {
                        // No assignment yet: do not hold up the other nodes forever.
                        drop(permit.take());
                    }
                }
                Ev::Down(msg) => match msg.context("read")? {
                    None => bail!("the master closed the connection"),
                    Some(
                        NodeDown::Endpoints(_)
                        | NodeDown::Secrets(_)
                        | NodeDown::Network(_)
                        | NodeDown::ClusterNetwork(_)
                        | NodeDown::ArtifactChunk { .. },
                    ) => {}
                    Some(NodeDown::Credential { secret }) => {
                        *credential.borrow_mut() = Some(secret);
                    }
                    Some(NodeDown::Replaced { message }) => {
                        bail!("the master replaced this session: {message}")
                    }
                    Some(NodeDown::Assign(a)) => {
                        stats.assigns.fetch_add(1, Ordering::Relaxed);
                        if !*first_ready {
                            *first_ready = true;
                            stats.ready.fetch_add(1, Ordering::Relaxed);
                        }
                        // The master has stored our registration: let the next node in.
                        drop(permit.take());
                        let now = now_ms();
                        let uids: HashSet<String> =
                            a.pods.iter().map(|p| p.meta.uid.clone()).collect();
                        reported.retain(|u| uids.contains(u));
                        restarts.retain(|u, _| uids.contains(u));
                        assigned = a.pods.clone();
                        if let Some(h) = churn.has_pods.borrow_mut().get_mut(idx) {
                            *h = !assigned.is_empty();
                        }
                        let fresh: Vec<PodReport> = a
                            .pods
                            .iter()
                            .filter(|p| !reported.contains(&p.meta.uid))
                            .map(|p| running_report(p, now, 0))
                            .collect();
                        if !fresh.is_empty() {
                            for r in &fresh {
                                reported.insert(r.uid.clone());
                            }
                            send(&mut writer, &NodeUp::Status(fresh), MAX_FRAME)
                                .await
                                .context("send Status")?;
                            stats.status_reports.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(NodeDown::Ping) => {}
                    Some(NodeDown::Logs {
                        request,
                        pod,
                        follow,
                        ..
                    }) => {
                        let data = format!("{name}: log of {pod}\n").into_bytes();
                        let chunk = bramble_wire::msg::LogChunk { request, data };
                        send(&mut writer, &NodeUp::Log(chunk), MAX_FRAME)
                            .await
                            .context("send Log")?;
                        if !follow {
                            let end = NodeUp::LogEnd {
                                request,
                                error: None,
                            };
                            send(&mut writer, &end, MAX_FRAME)
                                .await
                                .context("send LogEnd")?;
                        }
                    }
                    // Simulated nodes run no pods: no usage reports (`bramble top` shows
                    // them as `<unknown>`).
                    Some(
                        NodeDown::CancelLogs { .. }
                        | NodeDown::UsageWanted { .. }
                        | NodeDown::ExecInput { .. },
                    ) => {}
                    Some(
                        NodeDown::Exec { request, .. } | NodeDown::PortForward { request, .. },
                    ) => {
                        let output =
                            bramble_wire::msg::ExecOutput::Error(bramble_wire::msg::ApiError {
                                code: bramble_wire::msg::ErrorCode::Unavailable,
                                message: "simulated node: no exec".into(),
                            });
                        send(&mut writer, &NodeUp::Exec { request, output }, MAX_FRAME)
                            .await
                            .context("send Exec")?;
                    }
                },
            }
        }
    }
    .await;
    stats.connected.fetch_sub(1, Ordering::Relaxed);
    result
}

#[allow(clippy::too_many_arguments)]
async fn node(
    args: Rc<Args>,
    idx: usize,
    stats: Arc<Stats>,
    stop: Stop,
    gate: Rc<smol::lock::Semaphore>,
    started: Instant,
    churn: Rc<Churn>,
    kick: smol::channel::Receiver<()>,
) {
    let name = format!("{}-{idx}", args.prefix);
    let mut first_ready = false;
    let credential = std::cell::RefCell::new(None);
    while !stop.is_closed() {
        match session(
            &args,
            idx,
            &name,
            &stats,
            &stop,
            &gate,
            &mut first_ready,
            started,
            &credential,
            &churn,
            &kick,
        )
        .or(async {
            // Also while waiting for the gate or a connect.
            let _ = stop.recv().await;
            Ok(())
        })
        .await
        {
            Ok(()) => return,
            Err(e) => {
                stats.error(&e);
                // Like a real agent: redial after a pause (jittered, so a master restart does
                // not get every node back at the same instant).
                let wait = Duration::from_millis(500) + jitter(idx as u64 * 31 + 7, args.heartbeat);
                smol::Timer::after(wait).await;
            }
        }
    }
}

/// Kicks `per_s` nodes a second, round robin over the nodes that run pods, in 10 ms steps.
async fn drive_churn(per_s: u32, churn: Rc<Churn>, stop: Stop) {
    let step = Duration::from_millis(10);
    let mut next = Instant::now() + step;
    let mut owed = 0.0f64;
    let mut at = 0usize;
    while !stop.is_closed() {
        smol::Timer::at(next).await;
        next += step;
        owed += f64::from(per_s) * step.as_secs_f64();
        let has = churn.has_pods.borrow();
        let n = has.len();
        let mut looked = 0;
        while owed >= 1.0 && looked < n {
            let i = at % n;
            at = at.wrapping_add(1);
            looked += 1;
            if has[i] {
                // A node still busy with its last kick just skips this one.
                let _ = churn.kicks[i].try_send(());
                owed -= 1.0;
            }
        }
        if looked >= n {
            owed = owed.min(1.0); // no node runs pods yet: do not pile up
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bramble-nodesim: {e:#}");
            std::process::exit(2);
        }
    };
    let stats = Arc::new(Stats::default());
    // Never sent on: closing it stops every node.
    let (stop_tx, stop) = smol::channel::bounded::<()>(1);
    if args.until_stdin_closes {
        let stop_tx = stop_tx.clone();
        std::thread::spawn(move || {
            let mut sink = [0u8; 256];
            // Discard input until EOF.
            while matches!(std::io::Read::read(&mut std::io::stdin(), &mut sink), Ok(n) if n > 0) {}
            stop_tx.close();
        });
    }
    let started = Instant::now();
    println!(
        "nodesim: {} nodes {}-0..{} against {} (heartbeat {} ms, at most {} s)",
        args.nodes,
        args.prefix,
        args.nodes - 1,
        args.master,
        args.heartbeat.as_millis(),
        args.duration.as_secs()
    );
    let ex = smol::LocalExecutor::new();
    let args = Rc::new(args);
    let gate = Rc::new(smol::lock::Semaphore::new(args.concurrency));
    let (kicks, kicked): (Vec<_>, Vec<_>) = (0..args.nodes)
        .map(|_| smol::channel::bounded::<()>(1))
        .unzip();
    let churn = Rc::new(Churn {
        has_pods: std::cell::RefCell::new(vec![false; args.nodes]),
        kicks,
    });
    let tasks: Vec<_> = kicked
        .into_iter()
        .enumerate()
        .map(|(i, kick)| {
            ex.spawn(node(
                args.clone(),
                i,
                stats.clone(),
                stop.clone(),
                gate.clone(),
                started,
                churn.clone(),
                kick,
            ))
        })
        .collect();
    if args.churn > 0 {
        ex.spawn(drive_churn(args.churn, churn.clone(), stop.clone()))
            .detach();
    }
    let mut connected_at_stop = 0;
    smol::block_on(ex.run(async {
        let deadline = started + args.duration;
        let mut announced = false;
        loop {
            if !announced && stats.ready.load(Ordering::Relaxed) as usize >= args.nodes {
                announced = true;
                println!(
                    "nodesim: ready {}/{} after {} ms",
                    args.nodes,
                    args.nodes,
                    started.elapsed().as_millis()
                );
            }
            if Instant::now() >= deadline || stop_tx.is_closed() {
                break;
            }
            // The count just before stopping (stopping disconnects everyone).
            connected_at_stop = stats.connected.load(Ordering::Relaxed);
            smol::Timer::after(Duration::from_millis(100)).await;
        }
        stop_tx.close();
        // Every task wakes on the closed channel; bound the wait anyway.
        async {
            for t in tasks {
                t.await;
            }
        }
        .or(async {
            smol::Timer::after(Duration::from_secs(5)).await;
        })
        .await;
    }));
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "nodesim: done after {} ms: nodes={} connected={} ready={} sessions={} heartbeats={} \
assigns={} status_reports={} churn_reports={} errors={}",
        started.elapsed().as_millis(),
        args.nodes,
        connected_at_stop,
        g(&stats.ready),
        g(&stats.sessions),
        g(&stats.heartbeats),
        g(&stats.assigns),
        g(&stats.status_reports),
        g(&stats.churn_reports),
        g(&stats.errors),
    );
    if let Ok(k) = stats.error_kinds.lock() {
        for (msg, n) in k.iter().take(10) {
            println!("nodesim: error x{n}: {msg}");
        }
    }
}
