//! `bramble`: the command line. `master` and `up` run servers (`bramble-server`); the rest are
//! API clients (`bramble-client`).

mod artifact;
mod completion;
mod create;
mod demo;
mod drain;
mod edit;
mod exec;
mod image;
mod label;
mod portfwd;
mod rollout;
mod table;
mod token;
mod top;
mod up;
mod watch;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use bramble_wire::msg::{ApplyOutcome, RequestBody, ResponseBody};
use bramble_wire::objects::{Kind, Object};
use clap::{Parser, Subcommand};

use bramble_client::{Client, ClientError};
use bramble_server::controllers::Timings;

/// Default API port.
pub const DEFAULT_PORT: u16 = 7470;
/// Default data dir of the master.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/bramble";

/// Bramble: a small orchestrator for clusters of small ARM boards.
#[derive(Debug, Parser)]
#[command(name = "bramble", version, about)]
pub struct Cli {
    /// Master address for client commands.
    #[arg(
        long,
        global = true,
        env = "BRAMBLE_SERVER",
        default_value = "127.0.0.1:7470"
    )]
    pub server: String,
    /// Admin token file for client commands (default: DATA_DIR/admin.token of a local master).
    #[arg(long, global = true, env = "BRAMBLE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Output formats of `get` (`-o`).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// More columns.
    Wide,
    /// Kubernetes-shaped JSON (`{"kind": "List", "items": [...]}` for a list, always).
    Json,
    /// The same as YAML.
    Yaml,
    /// A manifest (`bramble apply -f` takes it back; what the master sets is left out, a
    /// service's cluster_ip is kept).
    Toml,
    /// `KIND/NAME` per line.
    Name,
    /// A kubectl JSONPath template over the JSON document.
    JsonPath(bramble_client::jsonpath::Template),
}

/// The values `-o` takes (for `--help` and completions).
pub const OUTPUT_FORMATS: &str = "table, wide, json, yaml, toml, name, jsonpath=TEMPLATE";

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Output, String> {
        Ok(match s {
            "table" => Output::Table,
            "wide" => Output::Wide,
            "json" => Output::Json,
            "yaml" => Output::Yaml,
            "toml" => Output::Toml,
            "name" => Output::Name,
            s => match s.strip_prefix("jsonpath=") {
                Some(t) => Output::JsonPath(bramble_client::jsonpath::Template::parse(t)?),
                None => {
                    return Err(format!(
                        "unknown output format {s:?}: one of {OUTPUT_FORMATS}"
                    ));
                }
            },
        })
    }
}

/// Subcommands.
/// What `label` and `annotate` take.
#[derive(clap::Args, Debug)]
pub struct MetaChange {
    /// Kind (nodes, pods, deployments, …).
    pub kind: String,
    /// Name.
    pub name: String,
    /// `KEY=VALUE` to set, `KEY-` to remove.
    #[arg(required = true)]
    pub changes: Vec<String>,
    /// Change keys that have another value.
    #[arg(long)]
    pub overwrite: bool,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the master: API server, scheduler and store.
    Master(MasterArgs),
    /// Run a single-node cluster here: a master and a local worker, with a demo pod.
    Up(UpArgs),
    /// Create or update the objects of a manifest: TOML, or JSON/YAML as `get -o json|yaml`
    /// prints them (by extension; by content for stdin).
    Apply {
        /// Manifest file (`-` for stdin).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Namespace for objects that name none.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// List objects, or show one.
    #[command(after_help = kinds_help())]
    Get {
        /// What to list: any kind below (singular, plural and short forms work).
        #[arg(value_parser = kind_values())]
        kind: String,
        /// One object's name.
        name: Option<String>,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Label selector, e.g. `app=web,tier!=db`.
        #[arg(short = 'l', long, default_value = "")]
        selector: String,
        /// Output format: table, wide, json, yaml, toml, name or jsonpath=TEMPLATE (e.g.
        /// `jsonpath={.items[*].metadata.name}`; see docs/cli.md).
        #[arg(short, long, default_value = "table")]
        output: Output,
        /// Show secret values (hidden in every output format otherwise).
        #[arg(long)]
        reveal: bool,
        /// Leave out the header line of tables.
        #[arg(long)]
        no_headers: bool,
        /// After the list, print a row (a JSON line with -o json) per change, until Ctrl-C.
        #[arg(short = 'w', long)]
        watch: bool,
        /// Like --watch, without the list first.
        #[arg(long)]
        watch_only: bool,
    },
    /// Edit an object's YAML in $EDITOR and apply it (refused if it changed meanwhile).
    Edit {
        /// Kind.
        #[arg(value_parser = kind_values())]
        kind: String,
        /// Name.
        name: String,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Create a config map or a secret from files and literals.
    Create {
        /// What to create.
        #[command(subcommand)]
        what: create::CreateCmd,
    },
    /// Show one object in detail.
    Describe {
        /// Kind.
        #[arg(value_parser = kind_values())]
        kind: String,
        /// Name.
        name: String,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Delete an object.
    Delete {
        /// Kind.
        #[arg(value_parser = kind_values())]
        kind: String,
        /// Name.
        name: String,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Change a deployment's replica count.
    Scale {
        /// `deployment`.
        kind: String,
        /// Name.
        name: String,
        /// New replica count.
        #[arg(long)]
        replicas: u32,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Follow, list or undo a deployment's rollouts.
    Rollout {
        /// What to do.
        #[command(subcommand)]
        action: RolloutCmd,
    },
    /// Create, list and revoke join tokens and node credentials (admin only).
    Token {
        /// What to do.
        #[command(subcommand)]
        action: token::TokenCmd,
    },
    /// Upload and list artifacts (pods' root filesystems, per architecture).
    Artifact {
        /// What to do.
        #[command(subcommand)]
        action: artifact::ArtifactCmd,
    },
    /// Pull, import, list and remove OCI/Docker images (pods run them with `image = "REF"`).
    Image {
        /// What to do.
        #[command(subcommand)]
        action: image::ImageCmd,
    },
    /// Set or remove labels of an object (`KEY=VALUE`, `KEY-`); changing a label's value needs
    /// --overwrite. A node's own labels (`node.bramble.io/…`, arch, board, hostname) are the
    /// node's to report, not an admin's to set.
    Label(MetaChange),
    /// Set or remove annotations of an object: free-form notes selectors never read (`KEY=VALUE`,
    /// `KEY-`); changing one's value needs --overwrite.
    Annotate(MetaChange),
    /// Mark a node unschedulable: no new pod is placed there (its pods keep running).
    Cordon {
        /// Node name.
        node: String,
    },
    /// Mark a node schedulable again.
    Uncordon {
        /// Node name.
        node: String,
    },
    /// Cordon a node, then evict its pods (all but daemon-set pods) so their owners recreate them
    /// elsewhere, never taking a deployment below `replicas − max_unavailable` available. Pods
    /// no controller manages are refused unless --force.
    Drain {
        /// Node name.
        node: String,
        /// Also delete pods no deployment, replica set, job or daemon set manages (they will
        /// not come back).
        #[arg(long)]
        force: bool,
        /// Give up after this long (exit 1, naming the pods left; the node stays cordoned).
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Show CPU (millicores) and memory (working set) of pods, processes or nodes, as the
    /// agents measure them from cgroups (the first call waits a few seconds for their reports).
    Top {
        /// Pods or nodes.
        #[command(subcommand)]
        what: top::TopCmd,
    },
    /// Print a shell completion script (bash, zsh or fish; see docs/cli.md).
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: completion::CompletionShell,
    },
    /// Run a command inside a running pod: its namespaces, cgroup, root, user, capabilities and
    /// seccomp filter (those of the process `-p`, default the first); exits with its exit code.
    Exec {
        /// Pod name.
        pod: String,
        /// The process whose security context and cgroup the command takes (default: the first).
        #[arg(short, long)]
        process: Option<String>,
        /// Pass stdin to the command (end of input closes its stdin).
        #[arg(short = 'i', long)]
        stdin: bool,
        /// Allocate a pseudo-terminal (raw mode here; Ctrl-C and Ctrl-D go to the pod).
        #[arg(short = 't', long)]
        tty: bool,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Forward local ports to a pod's ports, through the master and the pod's node (works for
    /// isolated pods): `[LOCAL:]REMOTE`, `:REMOTE` picks a free local port. Runs until
    /// interrupted.
    PortForward {
        /// Pod name.
        pod: String,
        /// `[LOCAL:]REMOTE` port pairs.
        #[arg(required = true, value_name = "[LOCAL:]REMOTE")]
        ports: Vec<String>,
        /// Local address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        address: String,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Print a process's log (kept on its node).
    Logs {
        /// Pod name.
        pod: String,
        /// Process name (default: the pod's first).
        #[arg(short, long)]
        process: Option<String>,
        /// Keep streaming as the log grows.
        #[arg(short, long)]
        follow: bool,
        /// Start this many bytes before the end.
        #[arg(long)]
        tail_bytes: Option<u64>,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The log of the previous run of a restarted process (one is kept per process).
        #[arg(long, conflicts_with = "follow")]
        previous: bool,
    },
}

/// `bramble rollout ...`.
#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Wait for the rollout to finish, showing progress.
    Status {
        /// `deployment`.
        kind: String,
        /// Name.
        name: String,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Give up after this long.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// List the revisions kept.
    History {
        /// `deployment`.
        kind: String,
        /// Name.
        name: String,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Replace every pod of a deployment or daemon set (a new template generation, the same
    /// spec), as a rolling update.
    Restart {
        /// `deployment` or `daemonset`.
        kind: String,
        /// Name.
        name: String,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Go back to the previous revision (or `--to-revision N`).
    Undo {
        /// `deployment`.
        kind: String,
        /// Name.
        name: String,
        /// Revision to restore (default: the one before the current).
        #[arg(long)]
        to_revision: Option<u64>,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

/// Flags of `bramble master`.
#[derive(Debug, clap::Args)]
pub struct MasterArgs {
    /// Where the database and the tokens live.
    #[arg(long, env = "BRAMBLE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:7470")]
    pub listen: String,
    /// Admin token file (default DATA_DIR/admin.token, created if absent).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Join token file (default DATA_DIR/join.token, created if absent).
    #[arg(long)]
    pub join_token_file: Option<PathBuf>,
    /// How often workers heartbeat, e.g. `5s`.
    #[arg(long, default_value_t = Dur::ms(Timings::DEFAULT.heartbeat_interval_ms))]
    pub heartbeat_interval: Dur,
    /// Missed-heartbeat time before a node is NotReady, e.g. `40s`.
    #[arg(long, default_value_t = Dur::ms(Timings::DEFAULT.node_grace_ms))]
    pub node_grace: Dur,
    /// NotReady time after which a node's pods are replaced elsewhere, e.g. `60s`.
    #[arg(long, default_value_t = Dur::ms(Timings::DEFAULT.eviction_timeout_ms))]
    pub eviction_timeout: Dur,
    /// Most authenticated sessions of node credentials used as clients; admins' and workers'
    /// sessions are always let in and take no slot.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Most unauthenticated connections (TLS handshake and Hello) from one source address; past
    /// it the address's oldest idle ones are closed.
    #[arg(long, default_value_t = bramble_server::api::DEFAULT_MAX_PENDING_PER_ADDR)]
    pub max_pending_per_addr: usize,
    /// Most unauthenticated connections in all; past it the busiest address's oldest idle ones
    /// are closed.
    #[arg(long, default_value_t = bramble_server::api::DEFAULT_MAX_PENDING)]
    pub max_pending: usize,
    /// Time a new connection has for its TLS handshake and its Hello, e.g. `10s`.
    #[arg(long, default_value_t = Dur::ms(10_000))]
    pub handshake_timeout: Dur,
    /// Most watches one credential (admin or node) may have open at once.
    #[arg(long, default_value_t = bramble_server::api::DEFAULT_MAX_WATCHES_PER_CREDENTIAL)]
    pub max_watches_per_credential: usize,
    /// Failed authentications an address may make at once; past them its wrong tokens are
    /// answered Busy (right tokens always get in).
    #[arg(long, default_value_t = 10)]
    pub auth_fail_burst: u32,
    /// Failed authentications an address regains per second.
    #[arg(long, default_value_t = 2.0)]
    pub auth_fail_per_s: f64,
    /// Largest artifact tarball accepted, e.g. `1Gi`.
    #[arg(long, default_value = "1Gi", value_parser = bramble_client::validate::parse_bytes)]
    pub max_artifact_size: u64,
    /// The pod range: each node gets a subnet of it for its `network = "isolated"` pods.
    #[arg(long, default_value = bramble_server::api::DEFAULT_CLUSTER_CIDR)]
    pub cluster_cidr: String,
    /// Prefix length of each node's pod subnet (24: 254 pods per node).
    #[arg(long, default_value_t = bramble_server::api::DEFAULT_NODE_CIDR_SIZE)]
    pub node_cidr_size: u8,
    /// The service range: each service gets a virtual IP of it (must not overlap --cluster-cidr).
    #[arg(long, default_value = bramble_server::api::DEFAULT_SERVICE_CIDR)]
    pub service_cidr: String,
    /// The cluster's DNS domain: services are `NAME.NAMESPACE.svc.DOMAIN`.
    #[arg(long, default_value = bramble_server::api::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Start with an empty store even though a damaged database was moved aside to
    /// DATA_DIR/bramble.db.corrupt-* (without it the master refuses to start).
    #[arg(long)]
    pub accept_empty_store: bool,
    /// Most events kept in the store (the most recently seen stay).
    #[arg(long, default_value_t = bramble_server::store::DEFAULT_MAX_EVENTS)]
    pub max_events: usize,
    /// Events not seen again for this long are removed, e.g. `1h`.
    #[arg(long, default_value_t = Dur(bramble_server::store::DEFAULT_EVENT_TTL))]
    pub event_ttl: Dur,
}

/// Flags of `bramble up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where the master's database, tokens and the worker's state live.
    #[arg(long, env = "BRAMBLE_DATA_DIR", default_value = "/var/tmp/bramble-up")]
    pub data_dir: PathBuf,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:7470")]
    pub listen: String,
    /// Do not apply the demo manifest.
    #[arg(long)]
    pub no_demo: bool,
    /// Exit after the demo instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit_after_demo: bool,
    /// The local worker's `--service-proxy`: `kernel` (nftables, the pod bridge and the cluster
    /// DNS in this machine's network) or `userspace` (touches no network settings).
    #[arg(long, default_value = "kernel", value_parser = ["kernel", "userspace"])]
    pub service_proxy: String,
}

fn main() {
    // The sources it was built from (see tests/build-id): the test harness compares it.
    if std::env::args().nth(1).as_deref() == Some("--build-id") {
        println!("{}", env!("BRAMBLE_BUILD_ID"));
        return;
    }
    let cli = Cli::parse();
    std::process::exit(run(cli));
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    bramble_client::manifest::parse_duration_ms(s).map(Duration::from_millis)
}

/// A duration flag: parsed like manifests' durations (`500ms`, `5s`, `1m30s`), shown the same way
/// in `--help`, so a default is written once, where it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    /// `ms` milliseconds.
    pub const fn ms(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Dur, String> {
        parse_duration(s).map(Dur)
    }
}

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => f.write_str("0s"),
            ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            ms if ms % 1_000 == 0 && ms < 600_000 => write!(f, "{}s", ms / 1_000),
            ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            ms if ms % 1_000 == 0 => write!(f, "{}s", ms / 1_000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

/// Runs the CLI; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.cmd {
        Cmd::Master(a) => match master_config(a).and_then(bramble_server::server::run_master) {
            Ok(()) => 0,
            Err(e) => {
                use std::io::IsTerminal;
                let refused = matches!(
                    e.downcast_ref::<bramble_server::store::StoreError>(),
                    Some(bramble_server::store::StoreError::CorruptKept { .. })
                );
                if refused && std::io::stderr().is_terminal() {
                    // Bold: this start would have served an empty cluster.
                    eprintln!("\x1b[1merror: {e:#}\x1b[0m");
                } else {
                    eprintln!("error: {e:#}");
                }
                1
            }
        },
        Cmd::Completion { shell } => {
            completion::write(shell, &mut std::io::stdout().lock());
            0
        }
        Cmd::Up(a) => match up::run_up(a, &cli.server) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
        cmd => {
            let token = match token(&cli.token_file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 5;
                }
            };
            match smol::block_on(client_cmd(&cli.server, &token, cmd)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e}");
                    e.exit_code()
                }
            }
        }
    }
}

/// The master's configuration from the flags of `bramble master`.
fn master_config(a: MasterArgs) -> anyhow::Result<bramble_server::api::Config> {
    let mut cfg = bramble_server::api::Config::new(a.data_dir, a.listen);
    cfg.admin_token_file = a.admin_token_file;
    cfg.join_token_file = a.join_token_file;
    cfg.heartbeat_interval = a.heartbeat_interval.0;
    cfg.node_grace = a.node_grace.0;
    cfg.eviction_timeout = a.eviction_timeout.0;
    cfg.max_connections = a.max_connections;
    cfg.max_pending_per_addr = a.max_pending_per_addr;
    cfg.max_pending = a.max_pending;
    cfg.handshake_timeout = a.handshake_timeout.0;
    cfg.max_watches_per_credential = a.max_watches_per_credential;
    cfg.auth_fail_burst = a.auth_fail_burst;
    cfg.auth_fail_per_s = a.auth_fail_per_s;
    cfg.max_artifact_bytes = a.max_artifact_size;
    cfg.accept_empty_store = a.accept_empty_store;
    cfg.max_events = a.max_events;
    cfg.event_ttl = a.event_ttl.0;
    cfg.cluster_cidr =
        bramble_server::controllers::podnet::ClusterCidr::parse(&a.cluster_cidr, a.node_cidr_size)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    cfg.service_cidr = bramble_server::controllers::service_ip::ServiceCidr::parse(&a.service_cidr)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    cfg.cluster_domain = bramble_client::validate::check_domain(&a.cluster_domain)
        .map_err(|e| anyhow::anyhow!("--cluster-domain {e}"))?;
    cfg.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(cfg)
}

fn token(file: &Option<PathBuf>) -> Result<String, String> {
    let path = match file {
        Some(p) => p.clone(),
        None => {
            let dir = std::env::var_os("BRAMBLE_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
            dir.join("admin.token")
        }
    };
    bramble_client::read_token_file(&path).map_err(|e| e.to_string())
}

/// Every kind with its short form, for `get --help` and errors.
fn kinds_list() -> String {
    Kind::ALL
        .iter()
        .map(|k| match short_name(*k) {
            Some(s) => format!("{} ({s})", k.as_str()),
            None => k.as_str().to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn short_name(k: Kind) -> Option<&'static str> {
    [
        "ns", "no", "po", "deploy", "rs", "ds", "ev", "svc", "ep", "cm", "art", "img", "reg",
    ]
    .into_iter()
    .find(|s| Kind::parse(s) == Some(k))
}

/// The plural of a kind, as `get` lists it.
fn plural(k: Kind) -> &'static str {
    match k {
        Kind::Namespace => "namespaces",
        Kind::Node => "nodes",
        Kind::Pod => "pods",
        Kind::Deployment => "deployments",
        Kind::ReplicaSet => "replicasets",
        Kind::DaemonSet => "daemonsets",
        Kind::Job => "jobs",
        Kind::Event => "events",
        Kind::Service => "services",
        Kind::Endpoints => "endpoints",
        Kind::ConfigMap => "configmaps",
        Kind::Secret => "secrets",
        Kind::Artifact => "artifacts",
        Kind::Image => "images",
        Kind::Registry => "registries",
    }
}

/// The kinds a KIND argument takes (plural names; singular and short forms as aliases): for
/// `--help` and shell completion.
fn kind_values() -> clap::builder::PossibleValuesParser {
    Kind::ALL
        .into_iter()
        .map(|k| {
            let mut v = clap::builder::PossibleValue::new(plural(k));
            if plural(k) != k.as_str() {
                v = v.alias(k.as_str());
            }
            if let Some(s) = short_name(k) {
                v = v.alias(s);
            }
            v
        })
        .collect::<Vec<_>>()
        .into()
}

fn kinds_help() -> String {
    format!("Kinds: {}.", kinds_list())
}

fn parse_kind(s: &str) -> Result<Kind, ClientError> {
    Kind::parse(s).ok_or_else(|| {
        ClientError::Api(bramble_wire::msg::ApiError {
            code: bramble_wire::msg::ErrorCode::Invalid,
            message: format!("unknown kind {s:?}: one of {}", kinds_list()),
        })
    })
}

pub(crate) fn usage(msg: String) -> ClientError {
    ClientError::Api(bramble_wire::msg::ApiError {
        code: bramble_wire::msg::ErrorCode::Invalid,
        message: msg,
    })
}

async fn client_cmd(server: &str, token: &str, cmd: Cmd) -> Result<i32, ClientError> {
    let mut c = Client::connect(server, token).await?;
    let mut out = std::io::stdout().lock();
    match cmd {
        Cmd::Apply { file, namespace } => {
            let (text, origin) = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .map_err(|e| usage(format!("stdin: {e}")))?;
                (s, "<stdin>".to_string())
            } else {
                let t = std::fs::read_to_string(&file)
                    .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
                (t, file.display().to_string())
            };
            let origin = if file.as_os_str() == "-" {
                "-".to_string()
            } else {
                origin
            };
            let objs = bramble_client::doc::parse(&text, &origin, &namespace).map_err(usage)?;
            apply_objects(&mut c, objs, &mut out).await?;
        }
        Cmd::Edit {
            kind,
            name,
            namespace,
        } => edit::run(&mut c, &parse_kind(&kind)?, &name, &namespace, &mut out).await?,
        Cmd::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            selector,
            output,
            reveal,
            no_headers,
            watch,
            watch_only,
        } => {
            let kind = parse_kind(&kind)?;
            if watch || watch_only {
                if !matches!(output, Output::Table | Output::Wide | Output::Json) {
                    return Err(usage(
                        "--watch prints table rows or JSON lines: use -o table, wide or json"
                            .into(),
                    ));
                }
                drop(c);
                drop(out);
                let namespace = (!all_namespaces && kind.namespaced()).then_some(namespace);
                watch::run(
                    server,
                    token,
                    watch::Watch {
                        kind,
                        name,
                        namespace,
                        selector,
                        output,
                        list_first: !watch_only,
                        no_headers,
                        reveal,
                    },
                )
                .await?;
                return Ok(0);
            }
            let single = name.is_some();
            let items = match name {
                Some(name) => match c
                    .call(RequestBody::Get {
                        kind,
                        namespace,
                        name,
                    })
                    .await?
                {
                    ResponseBody::Object(o) => vec![o],
                    _ => vec![],
                },
                None => {
                    let ns = if all_namespaces {
                        None
                    } else {
                        Some(namespace)
                    };
                    match c
                        .call(RequestBody::List {
                            kind,
                            namespace: ns,
                            selector,
                        })
                        .await?
                    {
                        ResponseBody::List { items, .. } => items,
                        _ => vec![],
                    }
                }
            };
            match &output {
                Output::Toml => {
                    if !reveal && items.iter().any(|o| o.kind() == Kind::Secret) {
                        return Err(usage(
                            "-o toml writes secret values: add --reveal to show them".into(),
                        ));
                    }
                    let text = bramble_client::manifest::render(&items).map_err(usage)?;
                    let _ = write!(out, "{text}");
                }
                Output::Json | Output::Yaml | Output::JsonPath(_) => {
                    use bramble_client::doc;
                    // One object asked for by name is that object; a list is always a List.
                    let v = match (single, items.first()) {
                        (true, Some(o)) => doc::to_doc(o, reveal),
                        _ => doc::list_doc(&items, reveal),
                    };
                    let text = match &output {
                        Output::Json => doc::to_json_text(&v),
                        Output::Yaml => doc::to_yaml(&v),
                        Output::JsonPath(t) => t.render(&v),
                        _ => String::new(),
                    };
                    let _ = write!(out, "{text}");
                }
                Output::Name => {
                    for o in &items {
                        let _ = writeln!(out, "{}", object_ref(o));
                    }
                }
                Output::Table | Output::Wide => {
                    let wide = output == Output::Wide;
                    if items.is_empty() {
                        eprintln!("no {} found", kind.as_str());
                    } else if kind == Kind::Image {
                        // With the pods using each image (matched by normalized reference).
                        let mut buf = Vec::new();
                        image::write_table(&mut c, &items, wide, &mut buf).await?;
                        let text = String::from_utf8_lossy(&buf);
                        let _ = write!(out, "{}", table::skip_header(&text, no_headers));
                    } else {
                        let text = table::render(
                            kind,
                            &items,
                            wide,
                            all_namespaces,
                            bramble_server::api::now_ms(),
                        );
                        let _ = write!(out, "{}", table::skip_header(&text, no_headers));
                    }
                }
            }
        }
        Cmd::Describe {
            kind,
            name,
            namespace,
        } => {
            let kind = parse_kind(&kind)?;
            let get = RequestBody::Get {
                kind,
                namespace: namespace.clone(),
                name: name.clone(),
            };
            if let ResponseBody::Object(o) = c.call(get).await? {
                let now = bramble_server::api::now_ms();
                let _ = write!(out, "{}", table::describe(&o, now));
                let list = RequestBody::List {
                    kind: Kind::Event,
                    namespace: Some(namespace),
                    selector: String::new(),
                };
                if let ResponseBody::List { items, .. } = c.call(list).await? {
                    let mine: Vec<Object> = items
                        .into_iter()
                        // This object's events: not those of an earlier object of the name.
                        .filter(|e| matches!(e, Object::Event(e) if e.object_kind == Some(kind) && e.object_name == name
                            && (e.object_uid.is_empty() || e.object_uid == o.meta().uid)))
                        .collect();
                    if !mine.is_empty() {
                        let _ = writeln!(out, "Events:");
                        for line in table::render(Kind::Event, &mine, false, false, now).lines() {
                            let _ = writeln!(out, "  {line}");
                        }
                    }
                }
            }
        }
        Cmd::Delete {
            kind,
            name,
            namespace,
        } => {
            let kind = parse_kind(&kind)?;
            c.call(RequestBody::Delete {
                kind,
                namespace,
                name: name.clone(),
                expected_revision: None,
            })
            .await?;
            let _ = writeln!(out, "{}/{name} deleted", kind.as_str());
        }
        Cmd::Exec {
            pod,
            process,
            stdin,
            tty,
            namespace,
            command,
        } => {
            drop(out);
            return exec::run(c, namespace, pod, process, stdin, tty, command).await;
        }
        Cmd::PortForward {
            pod,
            ports,
            address,
            namespace,
        } => {
            drop(out);
            return portfwd::run(c, namespace, pod, ports, address).await;
        }
        Cmd::Logs {
            pod,
            process,
            follow,
            tail_bytes,
            namespace,
            previous,
        } => {
            let id = c
                .start(RequestBody::Logs {
                    namespace: namespace.clone(),
                    pod: pod.clone(),
                    process: process.clone(),
                    follow,
                    tail_bytes,
                    previous,
                })
                .await?;
            drop(out);
            let stream = async {
                loop {
                    let r = c.next().await?;
                    if r.id != id {
                        continue;
                    }
                    match r.body {
                        ResponseBody::Log(data) => {
                            let mut o = std::io::stdout().lock();
                            let _ = o.write_all(&data);
                            let _ = o.flush();
                        }
                        ResponseBody::End => return Ok(()),
                        ResponseBody::Error(e) => return Err(ClientError::Api(e)),
                        _ => {}
                    }
                }
            };
            if follow {
                // `-f` ends when the process does (as kubectl's): watched on a second connection,
                // then what the node still sends is drained.
                let ended = async {
                    let mut w = Client::connect(server, token).await?;
                    loop {
                        smol::Timer::after(Duration::from_millis(500)).await;
                        let get = RequestBody::Get {
                            kind: Kind::Pod,
                            namespace: namespace.clone(),
                            name: pod.clone(),
                        };
                        let p = match w.call(get).await {
                            Ok(ResponseBody::Object(Object::Pod(p))) => Some(p),
                            Ok(_) => None,
                            Err(ClientError::Api(e))
                                if e.code == bramble_wire::msg::ErrorCode::NotFound =>
                            {
                                None
                            }
                            Err(e) => return Err(e),
                        };
                        if p.is_none_or(|p| process_ended(&p, process.as_deref())) {
                            smol::Timer::after(Duration::from_millis(1000)).await;
                            return Ok(());
                        }
                    }
                };
                smol::future::or(stream, ended).await?;
            } else {
                stream.await?;
            }
        }
        Cmd::Scale {
            kind,
            name,
            replicas,
            namespace,
        } => {
            want_deployment(&kind)?;
            // The controllers write the deployment's status too: retry on a revision conflict.
            let mut tries = 0;
            let from = loop {
                let mut d = get_deployment(&mut c, &namespace, &name).await?;
                let from = d.spec.replicas;
                d.spec.replicas = replicas;
                match c
                    .call(RequestBody::Apply(vec![Object::Deployment(d)]))
                    .await
                {
                    Ok(_) => break from,
                    Err(ClientError::Api(e))
                        if e.code == bramble_wire::msg::ErrorCode::Conflict && tries < 10 =>
                    {
                        tries += 1
                    }
                    Err(e) => return Err(e),
                }
            };
            let _ = writeln!(out, "deployment/{name} scaled from {from} to {replicas}");
        }
        Cmd::Label(MetaChange {
            kind,
            name,
            changes,
            overwrite,
            namespace,
        }) => {
            let patch = bramble_wire::msg::MetaPatch {
                labels: bramble_server::api::claims::parse_changes(&changes).map_err(usage)?,
                overwrite,
                ..Default::default()
            };
            label::run(&mut c, &kind, &name, &namespace, patch, "labeled", &mut out).await?
        }
        Cmd::Annotate(MetaChange {
            kind,
            name,
            changes,
            overwrite,
            namespace,
        }) => {
            let patch = bramble_wire::msg::MetaPatch {
                annotations: bramble_server::api::claims::parse_changes(&changes).map_err(usage)?,
                overwrite,
                ..Default::default()
            };
            label::run(
                &mut c,
                &kind,
                &name,
                &namespace,
                patch,
                "annotated",
                &mut out,
            )
            .await?
        }
        Cmd::Cordon { node } => {
            let patch = bramble_wire::msg::MetaPatch {
                unschedulable: Some(true),
                ..Default::default()
            };
            label::run(&mut c, "node", &node, "", patch, "cordoned", &mut out).await?
        }
        Cmd::Uncordon { node } => {
            let patch = bramble_wire::msg::MetaPatch {
                unschedulable: Some(false),
                ..Default::default()
            };
            label::run(&mut c, "node", &node, "", patch, "uncordoned", &mut out).await?
        }
        Cmd::Drain {
            node,
            force,
            timeout,
        } => drain::run(&mut c, &node, force, timeout, &mut out).await?,
        Cmd::Rollout { action } => rollout::run(&mut c, action, &mut out).await?,
        Cmd::Top { what } => top::run(&mut c, what, &mut out).await?,
        Cmd::Create { what } => create::run(&mut c, what, &mut out).await?,
        Cmd::Token { action } => token::run(&mut c, action, &mut out).await?,
        Cmd::Artifact { action } => artifact::run(&mut c, action, &mut out).await?,
        Cmd::Image { action } => image::run(&mut c, action, &mut out).await?,
        Cmd::Master(_) | Cmd::Up(_) | Cmd::Completion { .. } => {}
    }
    Ok(0)
}

fn want_deployment(kind: &str) -> Result<(), ClientError> {
    match Kind::parse(kind) {
        Some(Kind::Deployment) => Ok(()),
        _ => Err(usage(format!(
            "{kind:?}: only deployments can be scaled and rolled out: use `deployment NAME`"
        ))),
    }
}

async fn get_deployment(
    c: &mut Client,
    namespace: &str,
    name: &str,
) -> Result<bramble_wire::objects::Deployment, ClientError> {
    match c
        .call(RequestBody::Get {
            kind: Kind::Deployment,
            namespace: namespace.into(),
            name: name.into(),
        })
        .await?
    {
        ResponseBody::Object(Object::Deployment(d)) => Ok(d),
        _ => Err(usage(format!("deployment {name:?} not found"))),
    }
}

/// Applies `objs`, printing `KIND/NAME created|configured|unchanged` per object.
pub(crate) async fn apply_objects(
    c: &mut Client,
    objs: Vec<Object>,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let ResponseBody::Applied(res) = c.call(RequestBody::Apply(objs)).await? else {
        return Err(usage("unexpected answer".into()));
    };
    for a in res {
        let what = match a.outcome {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Updated => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        };
        let _ = writeln!(out, "{}/{} {what}", a.kind.as_str(), a.name);
    }
    Ok(())
}

/// Whether `process` (default: the first) of pod `p` has ended: the pod finished, or the process
/// exited (terminated, or waiting to be restarted after an exit).
fn process_ended(p: &bramble_wire::objects::Pod, process: Option<&str>) -> bool {
    use bramble_wire::objects::{PodPhase, ProcessState};
    if matches!(p.status.phase, PodPhase::Succeeded | PodPhase::Failed) {
        return true;
    }
    let name = process.or_else(|| p.spec.processes.first().map(|x| x.name.as_str()));
    p.status
        .processes
        .iter()
        .find(|s| Some(s.name.as_str()) == name)
        .is_some_and(|s| match s.state {
            ProcessState::Terminated { .. } => true,
            ProcessState::Waiting => s.last_exit.is_some(),
            ProcessState::Running { .. } => false,
        })
}

/// Short display of an object's kind and name.
pub fn object_ref(o: &Object) -> String {
    format!("{}/{}", o.kind().as_str(), o.meta().name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_offered_and_parses() {
        use clap::CommandFactory;
        use clap::builder::TypedValueParser;
        let p = kind_values();
        let names: Vec<String> = p
            .possible_values()
            .unwrap()
            .map(|v| v.get_name().to_string())
            .collect();
        assert_eq!(names.len(), Kind::ALL.len());
        for k in Kind::ALL {
            assert_eq!(Kind::parse(plural(k)), Some(k));
            assert!(names.iter().any(|n| n == plural(k)));
            if let Some(s) = short_name(k) {
                assert_eq!(Kind::parse(s), Some(k));
            }
        }
        let help = kinds_help();
        assert!(help.contains("deployment (deploy)") && help.contains("registry (reg)"));
        Cli::command().debug_assert();
    }
}
