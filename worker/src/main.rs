//! `bramble-worker`: the agent on every board.

use std::path::PathBuf;
use std::time::Duration;

use bramble_worker::persist::{RunDir, StateDir};
use clap::Parser;

/// Bramble's node agent: runs the pods the master assigns, as processes in namespaces and
/// cgroups, and keeps them running when the master is away.
#[derive(Debug, Parser)]
#[command(name = "bramble-worker", version, about)]
struct Args {
    /// Master address (host:port).
    #[arg(long, env = "BRAMBLE_MASTER", required_unless_present = "cleanup")]
    master: Option<String>,
    /// File holding the master's join token.
    #[arg(long, env = "BRAMBLE_TOKEN_FILE", required_unless_present = "cleanup")]
    token_file: Option<PathBuf>,
    /// Node name (default: the hostname).
    #[arg(long)]
    name: Option<String>,
    /// Where the assignment, pod state and logs live.
    #[arg(long, default_value = "/var/lib/bramble-worker")]
    state_dir: PathBuf,
    /// Labels this node reports about itself, `k=v,k2=v2`: the master files them under
    /// `node.bramble.io/` (`zone=b` becomes `node.bramble.io/zone=b`); other labels are an
    /// admin's to set (`bramble label node NAME k=v`).
    #[arg(long, default_value = "")]
    labels: String,
    /// Board profile name, if the device tree does not tell.
    #[arg(long)]
    board: Option<String>,
    /// Runtime state of running pods (keep it on tmpfs: it changes with every process event).
    #[arg(long, default_value = "/run/bramble")]
    run_dir: PathBuf,
    /// Parent cgroup of all pods of this agent.
    #[arg(long, default_value = "bramble")]
    cgroup_parent: String,
    /// Address the service proxy listens on (every service's port); `0.0.0.0` = all addresses.
    #[arg(long, default_value = "0.0.0.0")]
    proxy_address: std::net::IpAddr,
    /// Bridge that `network = "isolated"` pods join (created at the first such pod, with the
    /// gateway address of the node's pod subnet).
    #[arg(long, default_value = "bramble0")]
    pod_bridge: String,
    /// How services are served: `kernel` (nftables rules for virtual IPs, node ports and host
    /// ports, egress NAT of the pod range, cluster DNS on the bridge; they outlive the agent)
    /// or `userspace` (the agent's own proxy only).
    #[arg(long, default_value = "kernel", value_parser = ["kernel", "userspace"])]
    service_proxy: String,
    /// The nftables table (family inet) the agent owns; no other table is touched.
    #[arg(long, default_value = "bramble")]
    nft_table: String,
    /// Port of the cluster DNS on the bridge's gateway address.
    #[arg(long, default_value_t = 53)]
    dns_port: u16,
    /// The node's resolvers (`nameserver` lines), where the cluster DNS forwards names outside
    /// the cluster domain; re-read when it changes.
    #[arg(long, default_value = "/etc/resolv.conf")]
    upstream_resolv_conf: PathBuf,
    /// Collect unused image layers when the state disk is this full (percent, like kubelet's
    /// `imageGCHighThresholdPercent`).
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(1..=100))]
    image_gc_high: u8,
    /// ... until it is under this (percent).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_low: u8,
    /// Serve Prometheus metrics (cAdvisor's container names, node CPU/memory/load, bytes the
    /// agent wrote) at http://ADDR/metrics, e.g. `127.0.0.1:9101`. Off by default; plain HTTP
    /// without authentication: prefer a loopback or private address.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Remove what the agent added to the node's network (the nftables table, the pod bridge,
    /// the pods' veth ends, its routes) and exit. Pods' processes are not touched.
    #[arg(long)]
    cleanup: bool,
}

fn main() {
    // The sources it was built from (see tests/build-id): the test harness compares it.
    if std::env::args().nth(1).as_deref() == Some("--build-id") {
        println!("{}", env!("BRAMBLE_BUILD_ID"));
        return;
    }
    if let Some(code) = bramble_worker::runtime::run_init_if_requested() {
        std::process::exit(code);
    }
    if let Some(code) = bramble_worker::runtime::run_exec_if_requested() {
        std::process::exit(code);
    }
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    // Colour only on a terminal: a log file or journal gets no escape codes.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn hostname() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let n: String = h
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let n: String = n.trim_matches('-').chars().take(63).collect();
    if n.is_empty() { "node".into() } else { n }
}

/// `--cleanup`: removes the agent's network state from this network namespace.
fn cleanup(args: &Args) -> anyhow::Result<()> {
    bramble_worker::sys::nft::delete_table(&args.nft_table).map_err(|e| {
        anyhow::anyhow!("cannot delete nftables table inet {}: {e}", args.nft_table)
    })?;
    let removed = bramble_worker::sys::podnet::cleanup(&args.pod_bridge)
        .map_err(|e| anyhow::anyhow!("cannot remove the pod network: {e}"))?;
    println!(
        "removed nftables table inet {}, {} links (bridge {} and pods' veths), {} routes",
        args.nft_table, removed.links, args.pod_bridge, removed.routes
    );
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.nft_table.is_empty()
        || args.nft_table.len() > 64
        || !args
            .nft_table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        anyhow::bail!(
            "--nft-table {:?}: 1 to 64 letters, digits, '-' or '_'",
            args.nft_table
        );
    }
    if args.cleanup {
        return cleanup(&args);
    }
    let (Some(master), Some(token_file)) = (args.master.clone(), args.token_file.clone()) else {
        anyhow::bail!("--master and --token-file are required");
    };
    let token = std::fs::read_to_string(&token_file)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read join token {}: {e}; copy the master's DATA_DIR/join.token here",
                token_file.display()
            )
        })?
        .trim()
        .to_string();
    // Refuse at once a token that cannot authenticate the master.
    bramble_worker::agent::tls::pin_and_credential(&token)
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", token_file.display()))?;
    let name = args.name.unwrap_or_else(hostname);
    let mut labels = Vec::new();
    for kv in args
        .labels
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--labels: {kv:?} is not k=v"))?;
        if k.contains('/') && !k.starts_with("node.bramble.io/") {
            anyhow::bail!(
                "--labels: {k:?}: a node reports labels under node.bramble.io/ only (write {:?}); an admin sets other labels with `bramble label node NAME {k}={v}`",
                k.rsplit('/').next().unwrap_or(k)
            );
        }
        labels.push((k.to_string(), v.to_string()));
    }
    std::fs::create_dir_all(&args.state_dir).map_err(|e| {
        anyhow::anyhow!("cannot create state dir {}: {e}", args.state_dir.display())
    })?;
    let state = StateDir::new(&args.state_dir);
    let mut paths = bramble_worker::agent::driver::default_paths(
        &state,
        &RunDir::new(&args.run_dir),
        &args.cgroup_parent,
    );
    if args.pod_bridge.is_empty() || args.pod_bridge.len() > 15 || args.pod_bridge.contains('/') {
        anyhow::bail!(
            "--pod-bridge {:?}: an interface name is 1 to 15 characters without '/'",
            args.pod_bridge
        );
    }
    paths.pod_bridge = args.pod_bridge.clone();
    let driver = bramble_worker::agent::driver::LinuxDriver::new(&paths)?;
    let (version, controllers) = driver.cgroup_info();
    for p in driver.problems() {
        tracing::warn!("preflight: {p}");
    }
    let info = bramble_worker::agent::info::collect(
        &name,
        &labels,
        args.board.as_deref(),
        version,
        controllers,
    );
    tracing::info!(node = %name, arch = info.arch.as_str(), cgroup = ?version, "bramble-worker starting");
    let net = bramble_worker::agent::netpath::NetConfig {
        mode: if args.service_proxy == "userspace" {
            bramble_worker::agent::netpath::ServiceProxy::Userspace
        } else {
            bramble_worker::agent::netpath::ServiceProxy::Kernel
        },
        table: args.nft_table.clone(),
        bridge: args.pod_bridge.clone(),
        dns_port: args.dns_port,
        upstream_resolv_conf: args.upstream_resolv_conf.clone(),
    };
    if args.image_gc_low > args.image_gc_high {
        anyhow::bail!(
            "--image-gc-low {} is above --image-gc-high {}: the low mark must not be higher",
            args.image_gc_low,
            args.image_gc_high
        );
    }
    let overlay = bramble_worker::sys::layers::overlay_supported();
    if overlay {
        tracing::info!("preflight: image pods get overlayfs roots (layers shared on the node)");
    } else {
        tracing::warn!(
            "preflight: no overlayfs in this kernel (/proc/filesystems): image pods get a flattened copy of their image per image under {} (more disk; load the overlay module to share layers)",
            args.state_dir.join("images").display()
        );
    }
    let images = bramble_worker::agent::NodeImages {
        overlay,
        gc_high: args.image_gc_high,
        gc_low: args.image_gc_low,
    };
    let cfg = bramble_worker::agent::Config {
        master,
        token,
        name,
        state,
        info,
        poll_interval: Duration::from_secs(1),
        proxy_address: args.proxy_address,
        net,
        images,
        metrics_listen: args.metrics_listen,
    };
    smol::block_on(bramble_worker::agent::run(cfg, driver))
}
