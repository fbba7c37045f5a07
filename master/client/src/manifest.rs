//! Manifests: TOML files with one or more objects as arrays of tables named by kind.
//!
//! ```toml
//! [[pod]]
//! name = "hello"
//! restart_policy = "Never"
//! [[pod.process]]
//! name = "main"
//! command = ["/bin/sh", "-c", "echo hello from $(hostname); sleep 2"]
//! memory = "32Mi"
//! cpu = "250m"
//! ```
//! Unknown fields are errors; sizes, CPU amounts and names are checked while parsing so that the
//! error names the file, line and field.

use std::collections::BTreeMap;

use bramble_wire::objects::{
    Arch, DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, EphemeralStorage, Job, JobSpec,
    Labels, Meta, Namespace, NetworkMode, Node, NodeSpec, Object, Pod, PodSpec, PodTemplate, Port,
    ProcessSpec, Protocol, Registry, RegistrySpec, Resources, RestartPolicy, Service, ServiceSpec,
    StorageMedium, Taint, TaintEffect, Toleration, Volume, VolumeSource,
};
use bramble_wire::security::{CapChanges, IdRef, PodSecurity, SeccompProfile};
use serde::{Deserialize, Deserializer};

use crate::validate;

mod probe;
mod render;

pub use render::render;

/// A manifest file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    namespace: Vec<NamespaceM>,
    #[serde(default)]
    node: Vec<NodeM>,
    #[serde(default)]
    pod: Vec<PodM>,
    #[serde(default)]
    deployment: Vec<DeploymentM>,
    #[serde(default)]
    daemonset: Vec<DaemonSetM>,
    #[serde(default)]
    job: Vec<JobM>,
    #[serde(default)]
    configmap: Vec<crate::config_data::ConfigMapM>,
    #[serde(default)]
    secret: Vec<crate::config_data::SecretM>,
    #[serde(default)]
    service: Vec<ServiceM>,
    #[serde(default)]
    registry: Vec<RegistryM>,
}

/// `[[registry]]`: how the master reaches one registry host (cluster-scoped).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryM {
    #[serde(deserialize_with = "de_name")]
    name: String,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    #[serde(deserialize_with = "de_host")]
    host: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default, deserialize_with = "de_secret_ref")]
    credentials: Option<String>,
    #[serde(default, deserialize_with = "de_opt_host")]
    mirror: Option<String>,
    #[serde(default, deserialize_with = "de_pem")]
    ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceM {
    #[serde(deserialize_with = "de_name")]
    name: String,
    #[serde(default, deserialize_with = "de_opt_name")]
    namespace: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    #[serde(default)]
    selector: Labels,
    port: u16,
    target_port: u16,
    #[serde(default, deserialize_with = "de_protocol")]
    protocol: Protocol,
    /// `"None"` (headless) or an address of the service range; absent: the master picks one.
    #[serde(default)]
    cluster_ip: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceM {
    #[serde(deserialize_with = "de_name")]
    name: String,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    #[serde(default, deserialize_with = "de_pod_security")]
    pod_security: PodSecurity,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeM {
    #[serde(deserialize_with = "de_name")]
    name: String,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    #[serde(default)]
    taints: Vec<TaintM>,
    #[serde(default)]
    unschedulable: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaintM {
    key: String,
    #[serde(default)]
    value: String,
    effect: TaintEffect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TolerationM {
    #[serde(default)]
    key: String,
    value: Option<String>,
    effect: Option<TaintEffect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PodM {
    #[serde(deserialize_with = "de_name")]
    name: String,
    #[serde(default, deserialize_with = "de_opt_name")]
    namespace: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    #[serde(default)]
    restart_policy: RestartPolicy,
    #[serde(default)]
    node_selector: Labels,
    #[serde(default)]
    tolerations: Vec<TolerationM>,
    #[serde(default, deserialize_with = "de_arch")]
    arch: Option<Arch>,
    rootfs: Option<String>,
    image: Option<String>,
    #[serde(default, deserialize_with = "de_medium")]
    ephemeral_storage: StorageMedium,
    #[serde(default, deserialize_with = "de_opt_bytes")]
    ephemeral_storage_limit: Option<u64>,
    #[serde(default = "isolated", deserialize_with = "de_network")]
    network: NetworkMode,
    #[serde(default)]
    privileged: bool,
    #[serde(default)]
    host_pid: bool,
    #[serde(default)]
    host_ipc: bool,
    #[serde(default, deserialize_with = "de_opt_duration_ms")]
    termination_grace: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_name")]
    node: Option<String>,
    #[serde(default)]
    process: Vec<ProcessM>,
    #[serde(default)]
    volume: Vec<VolumeM>,
}

/// A pod template (`[deployment.template]`, `[job.template]`, `[daemonset.template]`): a pod
/// without name and namespace.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TemplateM {
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    restart_policy: RestartPolicy,
    #[serde(default)]
    node_selector: Labels,
    #[serde(default)]
    tolerations: Vec<TolerationM>,
    #[serde(default, deserialize_with = "de_arch")]
    arch: Option<Arch>,
    rootfs: Option<String>,
    image: Option<String>,
    #[serde(default, deserialize_with = "de_medium")]
    ephemeral_storage: StorageMedium,
    #[serde(default, deserialize_with = "de_opt_bytes")]
    ephemeral_storage_limit: Option<u64>,
    #[serde(default = "isolated", deserialize_with = "de_network")]
    network: NetworkMode,
    #[serde(default)]
    privileged: bool,
    #[serde(default)]
    host_pid: bool,
    #[serde(default)]
    host_ipc: bool,
    #[serde(default, deserialize_with = "de_opt_duration_ms")]
    termination_grace: Option<u32>,
    #[serde(default)]
    process: Vec<ProcessM>,
    #[serde(default)]
    volume: Vec<VolumeM>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentM {
    #[serde(deserialize_with = "de_name")]
    name: String,
    #[serde(default, deserialize_with = "de_opt_name")]
    namespace: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    #[serde(default = "one")]
    replicas: u32,
    #[serde(default)]
    selector: Labels,
    #[serde(default = "one")]
    max_surge: u32,
    #[serde(default)]
    max_unavailable: u32,
    #[serde(default, deserialize_with = "de_opt_duration_ms")]
    min_ready: Option<u32>,
    #[serde(default = "ten")]
    revision_history: u32,
    /// No progress for this long fails the rollout (default 10m).
    #[serde(default, deserialize_with = "de_opt_duration_ms")]
    progress_deadline: Option<u32>,
    template: TemplateM,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonSetM {
    #[serde(deserialize_with = "de_name")]
    name: String,
    #[serde(default, deserialize_with = "de_opt_name")]
    namespace: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    #[serde(default)]
    selector: Labels,
    #[serde(default = "one")]
    max_unavailable: u32,
    template: TemplateM,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobM {
    #[serde(deserialize_with = "de_name")]
    name: String,
    #[serde(default, deserialize_with = "de_opt_name")]
    namespace: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    #[serde(default = "one")]
    completions: u32,
    #[serde(default = "one")]
    parallelism: u32,
    #[serde(default = "six")]
    backoff_limit: u32,
    #[serde(default, deserialize_with = "de_opt_duration_ms64")]
    active_deadline: Option<u64>,
    template: TemplateM,
}

fn one() -> u32 {
    1
}
fn six() -> u32 {
    6
}
fn ten() -> u32 {
    10
}

fn de_opt_duration_ms64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration_ms(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessM {
    #[serde(deserialize_with = "de_name")]
    name: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    user: Option<IdRef>,
    group: Option<IdRef>,
    #[serde(default)]
    supplementary_groups: Vec<IdRef>,
    #[serde(default)]
    run_as_non_root: bool,
    #[serde(default)]
    capabilities: CapChanges,
    #[serde(default, deserialize_with = "de_seccomp")]
    seccomp: SeccompProfile,
    #[serde(default, deserialize_with = "de_opt_bytes")]
    memory: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_cpu")]
    cpu: Option<u32>,
    pids: Option<u32>,
    #[serde(default)]
    ports: Vec<PortM>,
    liveness: Option<probe::ProbeSpec>,
    readiness: Option<probe::ProbeSpec>,
    #[serde(default)]
    env_from: Vec<crate::config_data::EnvFromM>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PortM {
    Plain(u16),
    Full {
        container_port: u16,
        host_port: Option<u16>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeM {
    #[serde(deserialize_with = "de_name")]
    name: String,
    mount_path: String,
    host_path: Option<String>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    empty_dir: bool,
    #[serde(default, deserialize_with = "de_opt_name")]
    configmap: Option<String>,
    #[serde(default, deserialize_with = "de_opt_name")]
    secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    S(String),
    N(f64),
}

fn de_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    validate::check_name("name", &s).map_err(|e| serde::de::Error::custom(e.message))?;
    Ok(s)
}

fn de_opt_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_name(d).map(Some)
}

/// A registry host as in image references: `registry.lan`, `registry.lan:5000`, `[::1]:5000`.
pub fn check_registry_host(s: &str) -> Result<(), String> {
    let fix = "write a host and optional port, e.g. \"registry.lan:5000\" or \"docker.io\" (no scheme, no path)";
    if s.contains("://") || s.contains('/') {
        return Err(format!("registry host {s:?}: {fix}"));
    }
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, p)) if h.parse::<std::net::Ipv6Addr>().is_ok() => (h, p.strip_prefix(':')),
            _ => return Err(format!("registry host {s:?}: {fix}")),
        },
        None => match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        },
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && (s.starts_with('[')
            || host.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!("registry host {s:?}: {fix}"))
    }
}

fn de_host<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_registry_host(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn de_opt_host<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_host(d).map(Some)
}

/// A secret reference: `NAME` (in `default`) or `NAMESPACE/NAME`.
fn de_secret_ref<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let ok = match s.split_once('/') {
        Some((ns, name)) => {
            validate::check_name("namespace", ns).is_ok()
                && validate::check_name("name", name).is_ok()
        }
        None => validate::check_name("name", &s).is_ok(),
    };
    if !ok {
        return Err(serde::de::Error::custom(format!(
            "credentials {s:?}: name a secret as \"NAME\" (namespace default) or \"NAMESPACE/NAME\", with keys username and password"
        )));
    }
    Ok(Some(s))
}

/// PEM certificates (`-----BEGIN CERTIFICATE-----` blocks).
fn de_pem<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let begins = s.matches("-----BEGIN CERTIFICATE-----").count();
    let ends = s.matches("-----END CERTIFICATE-----").count();
    if begins == 0 || begins != ends {
        return Err(serde::de::Error::custom(
            "ca: give PEM certificates (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----), e.g. ca = '''<the contents of ca.crt>'''",
        ));
    }
    Ok(Some(s))
}

fn de_opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match StrOrNum::deserialize(d)? {
        StrOrNum::S(s) => validate::parse_bytes(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
        StrOrNum::N(n) if n >= 0.0 && n.fract() == 0.0 => Ok(Some(n as u64)),
        StrOrNum::N(n) => Err(serde::de::Error::custom(format!(
            "{n} is not a size: write it like 64Mi"
        ))),
    }
}

fn de_opt_cpu<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let s = match StrOrNum::deserialize(d)? {
        StrOrNum::S(s) => s,
        StrOrNum::N(n) => n.to_string(),
    };
    validate::parse_cpu(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn de_arch<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arch>, D::Error> {
    let s = String::deserialize(d)?;
    Arch::parse(&s).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown architecture {s:?}: use aarch64, armv7, armv6, x86_64 or riscv64"
        ))
    })
}

fn de_protocol<'de, D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
    let s = String::deserialize(d)?;
    match s.to_ascii_uppercase().as_str() {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        _ => Err(serde::de::Error::custom(format!(
            "unknown protocol {s:?}: use \"TCP\" (the default) or \"UDP\""
        ))),
    }
}

/// One of a fixed set of words; the error names `what` was unknown and the words to use.
fn de_word<'de, D: Deserializer<'de>, T: Copy>(
    d: D,
    words: &[(&str, T)],
    what: &str,
    hint: &str,
) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    words
        .iter()
        .find(|(w, _)| *w == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown {what} {s:?}: use {hint}")))
}

fn de_seccomp<'de, D: Deserializer<'de>>(d: D) -> Result<SeccompProfile, D::Error> {
    de_word(
        d,
        &[
            ("runtime-default", SeccompProfile::RuntimeDefault),
            ("unconfined", SeccompProfile::Unconfined),
        ],
        "seccomp profile",
        "\"runtime-default\" (the default filter) or \"unconfined\" (no filter)",
    )
}

fn de_pod_security<'de, D: Deserializer<'de>>(d: D) -> Result<PodSecurity, D::Error> {
    de_word(
        d,
        &[
            ("privileged", PodSecurity::Privileged),
            ("baseline", PodSecurity::Baseline),
        ],
        "pod_security level",
        "\"privileged\" (no limit) or \"baseline\" (no privileged pods, host namespaces, added capabilities or unconfined seccomp)",
    )
}

/// A pod's network when its manifest names none: its own, as in Kubernetes (`"host"` is the
/// explicit opt-out).
fn isolated() -> NetworkMode {
    NetworkMode::Isolated
}

fn de_medium<'de, D: Deserializer<'de>>(d: D) -> Result<StorageMedium, D::Error> {
    de_word(
        d,
        &[
            ("disk", StorageMedium::Disk),
            ("tmpfs", StorageMedium::Tmpfs),
        ],
        "ephemeral_storage medium",
        "\"disk\" (the node's state disk, the default) or \"tmpfs\" (memory, no flash writes)",
    )
}

fn de_network<'de, D: Deserializer<'de>>(d: D) -> Result<NetworkMode, D::Error> {
    de_word(
        d,
        &[
            ("host", NetworkMode::Host),
            ("none", NetworkMode::None),
            ("isolated", NetworkMode::Isolated),
        ],
        "network",
        "\"host\", \"none\" or \"isolated\"",
    )
}

/// Parses a duration like `500ms`, `10s`, `5m`, `1h`, `1m30s`.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration: write it like 500ms, 10s, 5m or 1h30m");
    let mut total: u64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, tail) = rest.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let mul = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(n.checked_mul(mul).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        rest = tail;
    }
    Ok(total)
}

fn de_opt_duration_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let s = String::deserialize(d)?;
    let ms = parse_duration_ms(&s).map_err(serde::de::Error::custom)?;
    u32::try_from(ms)
        .map(Some)
        .map_err(|_| serde::de::Error::custom("duration too long"))
}

/// Default grace period between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE_MS: u32 = 10_000;

impl Manifest {
    /// Parses a manifest. `origin` (a file name) prefixes errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, String> {
        toml::from_str(text).map_err(|e| format!("{origin}: {e}"))
    }

    /// Converts to objects; `default_ns` fills pods without a namespace.
    pub fn into_objects(self, default_ns: &str) -> Result<Vec<Object>, String> {
        let mut out = Vec::new();
        for n in self.namespace {
            out.push(Object::Namespace(Namespace {
                meta: meta(n.name, String::new(), n.labels, n.annotations),
                pod_security: n.pod_security,
                ..Default::default()
            }));
        }
        for n in self.node {
            out.push(Object::Node(Node {
                meta: meta(n.name, String::new(), n.labels, n.annotations),
                spec: NodeSpec {
                    taints: n
                        .taints
                        .into_iter()
                        .map(|t| Taint {
                            key: t.key,
                            value: t.value,
                            effect: t.effect,
                        })
                        .collect(),
                    unschedulable: n.unschedulable,
                    pod_cidr: String::new(),
                },
                status: Default::default(),
            }));
        }
        for p in self.pod {
            let ns = p.namespace.unwrap_or_else(|| default_ns.to_string());
            let t = TemplateM {
                labels: Labels::new(),
                restart_policy: p.restart_policy,
                node_selector: p.node_selector,
                tolerations: p.tolerations,
                arch: p.arch,
                rootfs: p.rootfs,
                image: p.image,
                ephemeral_storage: p.ephemeral_storage,
                ephemeral_storage_limit: p.ephemeral_storage_limit,
                network: p.network,
                privileged: p.privileged,
                host_pid: p.host_pid,
                host_ipc: p.host_ipc,
                termination_grace: p.termination_grace,
                process: p.process,
                volume: p.volume,
            };
            let mut spec = pod_spec(t, &format!("pod {:?}", p.name))?;
            spec.node_name = p.node;
            out.push(Object::Pod(Pod {
                meta: meta(p.name, ns, p.labels, p.annotations),
                spec,
                status: Default::default(),
            }));
        }
        for d in self.deployment {
            let ns = d.namespace.unwrap_or_else(|| default_ns.to_string());
            let labels = d.template.labels.clone();
            let spec = pod_spec(d.template, &format!("deployment {:?}", d.name))?;
            let selector = if d.selector.is_empty() {
                labels.clone()
            } else {
                d.selector
            };
            out.push(Object::Deployment(Deployment {
                meta: meta(d.name, ns, d.labels, d.annotations),
                spec: DeploymentSpec {
                    replicas: d.replicas,
                    selector,
                    template: PodTemplate {
                        labels,
                        spec,
                        ..Default::default()
                    },
                    max_surge: d.max_surge,
                    max_unavailable: d.max_unavailable,
                    min_ready_ms: d.min_ready.unwrap_or(0),
                    revision_history: d.revision_history,
                    progress_deadline_ms: d.progress_deadline.unwrap_or(0),
                },
                status: Default::default(),
            }));
        }
        for d in self.daemonset {
            let ns = d.namespace.unwrap_or_else(|| default_ns.to_string());
            let labels = d.template.labels.clone();
            let spec = pod_spec(d.template, &format!("daemonset {:?}", d.name))?;
            let selector = if d.selector.is_empty() {
                labels.clone()
            } else {
                d.selector
            };
            out.push(Object::DaemonSet(DaemonSet {
                meta: meta(d.name, ns, d.labels, d.annotations),
                spec: DaemonSetSpec {
                    selector,
                    template: PodTemplate {
                        labels,
                        spec,
                        ..Default::default()
                    },
                    max_unavailable: d.max_unavailable,
                },
                status: Default::default(),
            }));
        }
        for j in self.job {
            let ns = j.namespace.unwrap_or_else(|| default_ns.to_string());
            let labels = j.template.labels.clone();
            let mut t = j.template;
            if t.restart_policy == RestartPolicy::Always {
                // A job's pods end: Kubernetes requires Never or OnFailure; default to Never.
                t.restart_policy = RestartPolicy::Never;
            }
            let spec = pod_spec(t, &format!("job {:?}", j.name))?;
            out.push(Object::Job(Job {
                meta: meta(j.name, ns, j.labels, j.annotations),
                spec: JobSpec {
                    completions: j.completions,
                    parallelism: j.parallelism,
                    backoff_limit: j.backoff_limit,
                    active_deadline_ms: j.active_deadline,
                    template: PodTemplate {
                        labels,
                        spec,
                        ..Default::default()
                    },
                },
                status: Default::default(),
            }));
        }
        for c in self.configmap {
            out.push(c.into_object(default_ns));
        }
        for c in self.secret {
            out.push(c.into_object(default_ns)?);
        }
        for v in self.service {
            let ns = v.namespace.unwrap_or_else(|| default_ns.to_string());
            out.push(Object::Service(Service {
                meta: meta(v.name, ns, v.labels, v.annotations),
                spec: ServiceSpec {
                    selector: v.selector,
                    port: v.port,
                    target_port: v.target_port,
                    protocol: v.protocol,
                    cluster_ip: v.cluster_ip,
                },
            }));
        }
        for r in self.registry {
            out.push(Object::Registry(Registry {
                meta: meta(r.name, String::new(), r.labels, r.annotations),
                spec: RegistrySpec {
                    host: r.host,
                    insecure: r.insecure,
                    credentials: r.credentials,
                    mirror: r.mirror,
                    ca: r.ca,
                },
            }));
        }
        for o in &out {
            validate::check_object(o).map_err(|e| e.to_string())?;
        }
        Ok(out)
    }
}

fn pod_spec(mut t: TemplateM, what: &str) -> Result<PodSpec, String> {
    let mut env_from = Vec::new();
    for pr in &mut t.process {
        let list = std::mem::take(&mut pr.env_from)
            .into_iter()
            .map(|e| e.into_wire(&format!("{what}: process {:?}", pr.name)))
            .collect::<Result<Vec<_>, _>>()?;
        env_from.push(list);
    }
    let processes = t
        .process
        .into_iter()
        .zip(env_from)
        .map(|(pr, env_from)| ProcessSpec {
            name: pr.name,
            command: pr.command,
            args: pr.args,
            env: pr.env.into_iter().collect(),
            workdir: pr.workdir,
            user: pr.user,
            group: pr.group,
            supplementary_groups: pr.supplementary_groups,
            run_as_non_root: pr.run_as_non_root,
            capabilities: pr.capabilities,
            seccomp: pr.seccomp,
            resources: Resources {
                cpu_millis: pr.cpu,
                memory_bytes: pr.memory,
                pids: pr.pids,
            },
            ports: pr
                .ports
                .into_iter()
                .map(|p| match p {
                    PortM::Plain(c) => Port {
                        container_port: c,
                        host_port: None,
                    },
                    PortM::Full {
                        container_port,
                        host_port,
                    } => Port {
                        container_port,
                        host_port,
                    },
                })
                .collect(),
            liveness: pr.liveness.map(|p| p.0),
            readiness: pr.readiness.map(|p| p.0),
            env_from,
        })
        .collect();
    let mut volumes = Vec::new();
    for v in t.volume {
        let named = crate::config_data::volume_source(what, &v.name, v.configmap, v.secret)?;
        let source = match (v.host_path, v.empty_dir, named) {
            (None, false, Some(source)) => source,
            (Some(path), false, None) => VolumeSource::HostPath {
                path,
                read_only: v.read_only,
            },
            (None, true, None) => VolumeSource::EmptyDir,
            _ => {
                return Err(format!(
                    "{what}: volume {:?}: give exactly one of host_path = \"/dir\", empty_dir = true, configmap = \"NAME\" or secret = \"NAME\"",
                    v.name
                ));
            }
        };
        volumes.push(Volume {
            name: v.name,
            mount_path: v.mount_path,
            source,
        });
    }
    Ok(PodSpec {
        processes,
        restart_policy: t.restart_policy,
        node_selector: t.node_selector,
        tolerations: t
            .tolerations
            .into_iter()
            .map(|t| Toleration {
                key: t.key,
                value: t.value,
                effect: t.effect,
            })
            .collect(),
        arch: t.arch,
        rootfs: t.rootfs,
        image: t.image,
        network: t.network,
        volumes,
        termination_grace_ms: t.termination_grace.unwrap_or(DEFAULT_GRACE_MS),
        node_name: None,
        privileged: t.privileged,
        host_pid: t.host_pid,
        host_ipc: t.host_ipc,
        ephemeral_storage: EphemeralStorage {
            medium: t.ephemeral_storage,
            limit_bytes: t.ephemeral_storage_limit,
        },
    })
}

fn meta(name: String, namespace: String, labels: Labels, annotations: Labels) -> Meta {
    Meta {
        name,
        namespace,
        labels,
        annotations,
        ..Default::default()
    }
}

/// Parses a manifest file's text into objects.
pub fn parse(text: &str, origin: &str, default_ns: &str) -> Result<Vec<Object>, String> {
    let objs = Manifest::parse(text, origin)?
        .into_objects(default_ns)
        .map_err(|e| format!("{origin}: {e}"))?;
    if objs.is_empty() {
        return Err(format!(
            "{origin}: no objects: write [[pod]], [[deployment]], [[daemonset]], [[job]], [[service]], [[configmap]], [[secret]], [[namespace]], [[node]] or [[registry]] tables"
        ));
    }
    Ok(objs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::security::CapSet;

    pub(super) const HELLO: &str = r#"
[[pod]]
name = "hello"
restart_policy = "Never"
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "echo hello from $(hostname); sleep 2"]
memory = "32Mi"
cpu = "250m"
"#;

    #[test]
    fn hello_pod() {
        let objs = parse(HELLO, "hello.toml", "default").unwrap();
        let Object::Pod(p) = &objs[0] else { panic!() };
        assert_eq!(p.meta.namespace, "default");
        assert_eq!(p.spec.restart_policy, RestartPolicy::Never);
        assert_eq!(p.spec.processes[0].resources.memory_bytes, Some(32 << 20));
        assert_eq!(p.spec.processes[0].resources.cpu_millis, Some(250));
        assert_eq!(p.spec.termination_grace_ms, DEFAULT_GRACE_MS);
    }

    fn err(text: &str) -> String {
        parse(text, "app.toml", "default").unwrap_err()
    }

    const SECURE: &str = r#"
[[namespace]]
name = "apps"
pod_security = "baseline"

[[pod]]
name = "tools"
namespace = "apps"
privileged = true
host_pid = true
host_ipc = true
[[pod.process]]
name = "main"
command = ["/bin/true"]
user = "app"
group = 1000
supplementary_groups = ["video", 44]
run_as_non_root = true
seccomp = "unconfined"
capabilities = { add = ["net_admin", "CAP_SYS_TIME"], drop = ["ALL"] }
"#;

    #[test]
    fn security_context_parses_and_renders_back() {
        let objs = parse(SECURE, "secure.toml", "default").unwrap();
        let Object::Namespace(ns) = &objs[0] else {
            panic!()
        };
        assert_eq!(ns.pod_security, PodSecurity::Baseline);
        let Object::Pod(p) = &objs[1] else { panic!() };
        assert!(p.spec.privileged && p.spec.host_pid && p.spec.host_ipc);
        let pr = &p.spec.processes[0];
        assert_eq!(pr.user, Some(IdRef::Name("app".into())));
        assert_eq!(pr.group, Some(IdRef::Id(1000)));
        assert_eq!(
            pr.supplementary_groups,
            [IdRef::Name("video".into()), IdRef::Id(44)]
        );
        assert!(pr.run_as_non_root);
        assert_eq!(pr.seccomp, SeccompProfile::Unconfined);
        let names: Vec<_> = pr.capabilities.effective().names().collect();
        assert_eq!(names, ["NET_ADMIN", "SYS_TIME"]);
        let text = super::render::render(&objs).unwrap();
        assert_eq!(
            parse(&text, "again.toml", "default").unwrap(),
            objs,
            "{text}"
        );
    }

    #[test]
    fn annotations_parse_validate_and_render_back() {
        let text = "[[node]]\nname = \"pi1\"\nannotations = { note = \"new SD card\" }\n\
                    [[configmap]]\nname = \"c\"\nannotations = { \"team.example/owner\" = \"ops\" }\ndata = { k = \"v\" }\n\
                    [[deployment]]\nname = \"web\"\nannotations = { why = \"line one\\nline two\" }\n\
                    [deployment.template]\nlabels = { app = \"web\" }\n[[deployment.template.process]]\nname = \"m\"\ncommand = [\"x\"]\n";
        let objs = parse(text, "a.toml", "default").unwrap();
        let notes: Vec<_> = objs
            .iter()
            .map(|o| {
                o.meta()
                    .annotations
                    .values()
                    .next()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(notes, ["new SD card", "line one\nline two", "ops"]);
        for o in &objs {
            crate::validate::check_object(o).unwrap();
        }
        let back = super::render::render(&objs).unwrap();
        assert_eq!(
            parse(&back, "again.toml", "default").unwrap(),
            objs,
            "{back}"
        );
        // Bounded: a value over 4 KiB is refused, naming the key and the fix.
        let mut big = objs[0].clone();
        big.meta_mut()
            .annotations
            .insert("blob".into(), "x".repeat(5000));
        let e = crate::validate::check_object(&big).unwrap_err().to_string();
        assert!(e.contains("\"blob\"") && e.contains("config map"), "{e}");
    }

    #[test]
    fn security_context_bad_inputs_are_refused() {
        let proc = |extra: &str| {
            err(&format!(
                "[[pod]]\nname = \"a\"\n[[pod.process]]\nname = \"m\"\ncommand = [\"x\"]\n{extra}\n"
            ))
        };
        let e = proc("user = 4294967295");
        assert!(e.contains("4294967295") && e.contains("4294967294"), "{e}");
        let e = proc("user = -1");
        assert!(e.contains("negative"), "{e}");
        let e = proc("user = \"root:x\"");
        assert!(e.contains("not a user or group name"), "{e}");
        let e = proc("group = \"\"");
        assert!(e.contains("not a user or group name"), "{e}");
        let e = proc("capabilities = { add = [\"SYS_GOD\"] }");
        assert!(e.contains("unknown capability \"SYS_GOD\""), "{e}");
        let e = proc("capabilities = { keep = [\"CHOWN\"] }");
        assert!(e.contains("keep"), "{e}");
        let e = proc("seccomp = \"off\"");
        assert!(e.contains("unknown seccomp profile"), "{e}");
        let e = proc("user = 0\nrun_as_non_root = true");
        assert!(e.contains("run_as_non_root"), "{e}");
        let e = err("[[namespace]]\nname = \"a\"\npod_security = \"restricted\"\n");
        assert!(e.contains("unknown pod_security level"), "{e}");
        for path in ["../../..", "/srv/../etc", "srv", "/a/./b"] {
            let e = err(&format!(
                "[[pod]]\nname = \"a\"\n[[pod.process]]\nname = \"m\"\ncommand = [\"x\"]\n\
                 [[pod.volume]]\nname = \"v\"\nmount_path = \"/v\"\nhost_path = \"{path}\"\n"
            ));
            assert!(
                e.contains("must be an absolute path on the node"),
                "{path}: {e}"
            );
            if path != "srv" {
                let e = err(&format!(
                    "[[pod]]\nname = \"a\"\nrootfs = \"/{path}\"\n[[pod.process]]\nname = \"m\"\ncommand = [\"x\"]\n"
                ));
                assert!(
                    e.contains("must be an absolute path on the node"),
                    "{path}: {e}"
                );
            }
        }
    }

    #[test]
    fn baseline_refuses_opt_outs_and_added_capabilities() {
        let objs = parse(SECURE, "secure.toml", "default").unwrap();
        let spec = objs[1].pod_spec().unwrap();
        let e = validate::check_pod_security("pod \"tools\"", "apps", PodSecurity::Baseline, spec)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("privileged = true is refused") && e.contains("pod_security"),
            "{e}"
        );
        validate::check_pod_security("pod \"tools\"", "apps", PodSecurity::Privileged, spec)
            .unwrap();
        let mut plain = spec.clone();
        (plain.privileged, plain.host_pid, plain.host_ipc) = (false, false, false);
        plain.network = NetworkMode::None;
        let e =
            validate::check_pod_security("pod \"tools\"", "apps", PodSecurity::Baseline, &plain)
                .unwrap_err()
                .to_string();
        assert!(e.contains("seccomp = \"unconfined\" is refused"), "{e}");
        plain.processes[0].seccomp = SeccompProfile::RuntimeDefault;
        let e =
            validate::check_pod_security("pod \"tools\"", "apps", PodSecurity::Baseline, &plain)
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("NET_ADMIN, SYS_TIME beyond the default set"),
            "{e}"
        );
        plain.processes[0].capabilities.add = CapSet::parse("CHOWN").unwrap();
        validate::check_pod_security("pod \"tools\"", "apps", PodSecurity::Baseline, &plain)
            .unwrap();
        // An isolated pod claiming a node port: refused too (as Kubernetes' hostPorts).
        plain.network = NetworkMode::Isolated;
        plain.processes[0].ports = vec![bramble_wire::objects::Port {
            container_port: 80,
            host_port: Some(8080),
        }];
        let e =
            validate::check_pod_security("pod \"tools\"", "apps", PodSecurity::Baseline, &plain)
                .unwrap_err()
                .to_string();
        assert!(e.contains("host_port = 8080 is refused"), "{e}");
        plain.processes[0].ports[0].host_port = None;
        validate::check_pod_security("pod \"tools\"", "apps", PodSecurity::Baseline, &plain)
            .unwrap();
        plain.network = NetworkMode::Host;
        let e =
            validate::check_pod_security("pod \"tools\"", "apps", PodSecurity::Baseline, &plain)
                .unwrap_err()
                .to_string();
        assert!(e.contains("network = \"host\" is refused"), "{e}");
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let e = err(
            "[[pod]]\nname = \"a\"\n[[pod.process]]\nname = \"m\"\ncommand = [\"x\"]\nmemroy = \"1Mi\"\n",
        );
        assert!(e.contains("app.toml"), "{e}");
        assert!(e.contains("line 6"), "{e}");
        assert!(e.contains("memroy"), "{e}");
    }

    #[test]
    fn bad_values_name_the_line() {
        let e = err(
            "[[pod]]\nname = \"a\"\n[[pod.process]]\nname = \"m\"\ncommand = [\"x\"]\nmemory = \"12XB\"\n",
        );
        assert!(e.contains("line 6") && e.contains("unknown unit"), "{e}");
        let e = err("[[pod]]\nname = \"Bad_Name\"\n");
        assert!(
            e.contains("line 2") && e.contains("not a valid name"),
            "{e}"
        );
        let e = err("[[pod]]\nname = \"a\"\nnetwork = \"bridge\"\n");
        assert!(e.contains("unknown network"), "{e}");
        let e = err(
            "[[pod]]\nname = \"a\"\nnetwork = \"none\"\n[[pod.process]]\nname = \"m\"\n\
             command = [\"x\"]\nports = [{ container_port = 80, host_port = 80 }]\n",
        );
        assert!(e.contains("host_port needs a network"), "{e}");
        // An isolated pod may claim a node port: its node forwards it to the pod.
        parse(
            "[[pod]]\nname = \"a\"\nnetwork = \"isolated\"\n[[pod.process]]\nname = \"m\"\n\
             command = [\"x\"]\nports = [{ container_port = 80, host_port = 8080 }]\n",
            "iso.toml",
            "default",
        )
        .unwrap();
        let e = err("[[pod]]\nname = \"a\"\n");
        assert!(e.contains("at least one"), "{e}");
        let e = err("");
        assert!(e.contains("no objects"), "{e}");
        let e = err("[[deployment]]\nname = \"a\"\n");
        assert!(e.contains("template"), "{e}");
        let e = err("[[replicaset]]\nname = \"a\"\n");
        assert!(e.contains("replicaset"), "{e}");
    }

    pub(super) const CONTROLLERS: &str = r#"
[[deployment]]
name = "web"
replicas = 4
max_surge = 1
max_unavailable = 0
[deployment.template]
labels = { app = "web" }
restart_policy = "Always"
[[deployment.template.process]]
name = "main"
command = ["/srv/web", "--port", "8080"]
memory = "16Mi"

[[job]]
name = "backup"
completions = 2
backoff_limit = 3
[job.template]
labels = { job = "backup" }
restart_policy = "Never"
[[job.template.process]]
name = "main"
command = ["/bin/sh", "-c", "run-backup"]

[[daemonset]]
name = "agent"
[daemonset.template]
labels = { app = "agent" }
node_selector = { "bramble.io/arch" = "aarch64" }
[[daemonset.template.process]]
name = "main"
command = ["/bin/sleep", "1000"]
"#;

    #[test]
    fn controllers_parse() {
        let objs = parse(CONTROLLERS, "c.toml", "default").unwrap();
        let Object::Deployment(d) = &objs[0] else {
            panic!("{objs:?}")
        };
        assert_eq!(
            (d.spec.replicas, d.spec.max_surge, d.spec.max_unavailable),
            (4, 1, 0)
        );
        assert_eq!(d.spec.selector.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            d.spec.template.spec.processes[0].resources.memory_bytes,
            Some(16 << 20)
        );
        let Object::DaemonSet(ds) = &objs[1] else {
            panic!()
        };
        assert_eq!(ds.spec.template.spec.node_selector.len(), 1);
        let Object::Job(j) = &objs[2] else { panic!() };
        assert_eq!(
            (j.spec.completions, j.spec.parallelism, j.spec.backoff_limit),
            (2, 1, 3)
        );
        assert_eq!(j.spec.template.spec.restart_policy, RestartPolicy::Never);
        let e = err(
            "[[deployment]]\nname = \"d\"\nreplicas = 2\n[deployment.template]\nlabels = { app = \"x\" }\nselector = 3\n",
        );
        assert!(e.contains("selector"), "{e}");
        let e = err(
            "[[deployment]]\nname = \"d\"\n[deployment.template]\n[[deployment.template.process]]\nname = \"m\"\ncommand = [\"x\"]\n",
        );
        assert!(e.contains("labels"), "{e}");
    }

    #[test]
    fn service_parses_and_checks() {
        let objs = parse(
            "[[service]]\nname = \"web\"\nselector = { app = \"web\" }\nport = 8080\ntarget_port = 80\n",
            "s.toml",
            "default",
        )
        .unwrap();
        let Object::Service(s) = &objs[0] else {
            panic!("{objs:?}")
        };
        assert_eq!(s.meta.namespace, "default");
        assert_eq!((s.spec.port, s.spec.target_port), (8080, 80));
        assert_eq!(s.spec.selector.get("app").map(String::as_str), Some("web"));
        let e = err("[[service]]\nname = \"web\"\nport = 8080\ntarget_port = 80\n");
        assert!(e.contains("selector"), "{e}");
        let e = err(
            "[[service]]\nname = \"web\"\nselector = { app = \"web\" }\nport = 70000\ntarget_port = 80\n",
        );
        assert!(e.contains("line 4"), "{e}");
        let e = err("[[service]]\nname = \"web\"\nselector = { app = \"web\" }\nport = 8080\n");
        assert!(e.contains("target_port"), "{e}");
        assert_eq!(s.spec.protocol, Protocol::Tcp, "TCP by default");
        let udp = parse(
            "[[service]]\nname = \"dns\"\nselector = { app = \"dns\" }\nport = 53\ntarget_port = 5353\nprotocol = \"udp\"\n",
            "s.toml",
            "default",
        )
        .unwrap();
        let Object::Service(u) = &udp[0] else {
            panic!("{udp:?}")
        };
        assert_eq!(u.spec.protocol, Protocol::Udp);
        let e = err(
            "[[service]]\nname = \"x\"\nselector = { a = \"b\" }\nport = 1\ntarget_port = 2\nprotocol = \"SCTP\"\n",
        );
        assert!(e.contains("unknown protocol") && e.contains("UDP"), "{e}");
        assert_eq!(s.spec.cluster_ip, None, "absent: the master picks one");
        for (given, want) in [("None", "None"), ("10.43.0.20", "10.43.0.20")] {
            let objs = parse(
                &format!(
                    "[[service]]\nname = \"w\"\nselector = {{ a = \"b\" }}\nport = 1\n\
                     target_port = 2\ncluster_ip = \"{given}\"\n"
                ),
                "s.toml",
                "default",
            )
            .unwrap();
            let Object::Service(c) = &objs[0] else {
                panic!()
            };
            assert_eq!(c.spec.cluster_ip.as_deref(), Some(want));
        }
        for bad in ["none", "10.43.0", "10.43.0.300", "fd00::1", ""] {
            let e = err(&format!(
                "[[service]]\nname = \"w\"\nselector = {{ a = \"b\" }}\nport = 1\n\
                 target_port = 2\ncluster_ip = \"{bad}\"\n"
            ));
            assert!(
                e.contains("service \"w\": cluster_ip") && e.contains("leave cluster_ip out"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("s").is_err());
        assert!(parse_duration_ms("5d").is_err());
    }

    #[test]
    fn pods_and_templates_take_an_image_and_args() {
        let objs = parse(
            "[[pod]]\nname = \"ha\"\nimage = \"ghcr.io/home-assistant/home-assistant:2024.6\"\n\
             [[pod.process]]\nname = \"main\"\n\
             [[pod.process]]\nname = \"side\"\ncommand = [\"/bin/sh\"]\nargs = [\"-c\", \"sleep 9\"]\n\
             [[deployment]]\nname = \"web\"\n[deployment.template]\nlabels = { app = \"web\" }\n\
             image = \"alpine:3.20\"\n[[deployment.template.process]]\nname = \"main\"\nargs = [\"httpd\", \"-f\"]\n",
            "img.toml",
            "default",
        )
        .unwrap();
        let Object::Pod(p) = &objs[0] else { panic!() };
        assert_eq!(
            p.spec.image.as_deref(),
            Some("ghcr.io/home-assistant/home-assistant:2024.6")
        );
        assert!(p.spec.processes[0].command.is_empty() && p.spec.processes[0].args.is_empty());
        assert_eq!(p.spec.processes[1].args, ["-c", "sleep 9"]);
        let Object::Deployment(d) = &objs[1] else {
            panic!()
        };
        assert_eq!(d.spec.template.spec.image.as_deref(), Some("alpine:3.20"));
        // The writable layer: on disk by default, or a capped tmpfs.
        assert_eq!(p.spec.ephemeral_storage, Default::default());
        let objs = parse(
            "[[pod]]\nname = \"t\"\nimage = \"alpine\"\nephemeral_storage = \"tmpfs\"\n\
             ephemeral_storage_limit = \"128Mi\"\n[[pod.process]]\nname = \"m\"\n",
            "t.toml",
            "default",
        )
        .unwrap();
        let Object::Pod(t) = &objs[0] else { panic!() };
        assert_eq!(
            t.spec.ephemeral_storage,
            bramble_wire::objects::EphemeralStorage {
                medium: StorageMedium::Tmpfs,
                limit_bytes: Some(128 << 20)
            }
        );
        let e = err(
            "[[pod]]\nname = \"a\"\nimage = \"alpine\"\nephemeral_storage = \"ram\"\n[[pod.process]]\nname = \"m\"\n",
        );
        assert!(e.contains("\"tmpfs\""), "{e}");
        assert_eq!(d.spec.template.spec.processes[0].args, ["httpd", "-f"]);

        // Without an image, a process still needs a command; image and rootfs exclude each other.
        let e = err("[[pod]]\nname = \"a\"\n[[pod.process]]\nname = \"m\"\nargs = [\"x\"]\n");
        assert!(e.contains("command") && e.contains("image"), "{e}");
        let e = err(
            "[[pod]]\nname = \"a\"\nimage = \"alpine\"\nrootfs = \"artifact:x\"\n[[pod.process]]\nname = \"m\"\n",
        );
        assert!(e.contains("exclude each other"), "{e}");
        let e = err("[[pod]]\nname = \"a\"\nimage = \"al pine\"\n[[pod.process]]\nname = \"m\"\n");
        assert!(e.contains("invalid image reference"), "{e}");
        let e = err("[[pod]]\nname = \"a\"\nimage = 3\n[[pod.process]]\nname = \"m\"\n");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn registries_parse_and_check_their_values() {
        let objs = parse(
            "[[registry]]\nname = \"lan\"\nhost = \"registry.lan:5000\"\ninsecure = true\n\
             [[registry]]\nname = \"hub\"\nhost = \"docker.io\"\ncredentials = \"hub-login\"\nmirror = \"mirror.lan:5000\"\n",
            "reg.toml",
            "default",
        )
        .unwrap();
        let Object::Registry(r) = &objs[0] else {
            panic!()
        };
        assert_eq!(r.meta.name, "lan");
        assert!(r.meta.namespace.is_empty());
        assert_eq!(r.spec.host, "registry.lan:5000");
        assert!(r.spec.insecure && r.spec.credentials.is_none());
        let Object::Registry(r) = &objs[1] else {
            panic!()
        };
        assert_eq!(r.spec.credentials.as_deref(), Some("hub-login"));
        assert_eq!(r.spec.mirror.as_deref(), Some("mirror.lan:5000"));

        for (field, value, want) in [
            ("host", "\"https://registry.lan\"", "no scheme"),
            ("host", "\"registry.lan:99999\"", "no scheme"),
            ("host", "\"reg_istry\"", "registry host"),
            ("mirror", "\"mirror.lan/path\"", "no scheme"),
            ("credentials", "\"a/b/c\"", "NAMESPACE/NAME"),
            ("ca", "\"not a certificate\"", "PEM"),
            ("insecure", "\"yes\"", "bool"),
            ("username", "\"me\"", "unknown field"),
        ] {
            let text = if field == "host" {
                format!("[[registry]]\nname = \"r\"\n{field} = {value}\n")
            } else {
                format!("[[registry]]\nname = \"r\"\nhost = \"r.lan\"\n{field} = {value}\n")
            };
            let e = err(&text);
            let line = if field == "host" { "line 3" } else { "line 4" };
            assert!(
                e.contains(want) && e.contains(line) && e.contains("app.toml"),
                "{field}: {e}"
            );
        }
        let e = err("[[registry]]\nname = \"r\"\n");
        assert!(e.contains("host"), "{e}");
    }
}
