//! Objects back to manifest TOML: the inverse of [`super::parse`] (what a `get -o toml` prints,
//! ready for `apply -f`).
//!
//! For every list of objects the parser makes, `parse(render(objs))` gives back the same objects,
//! whatever the default namespace (namespaces are written out). Of other objects (read from the
//! master), what the master sets is left out — uid, revision, creation time, owners, status, a
//! node's pod subnet, a namespace's phase — and environment variables come back sorted by name.
//! What a manifest cannot say is refused with the reason: the kinds the master makes itself
//! (replica sets, events, endpoints, artifacts, images), duplicate environment names, a pod template
//! pinned to a node, a job template with `restart_policy = "Always"`, a controller whose empty
//! selector the parser would replace by the template's labels.

use std::collections::BTreeMap;

use bramble_wire::objects::{
    ConfigMap, DaemonSet, Deployment, EnvFrom, Job, Labels, Meta, NetworkMode, Node, Object, Pod,
    PodSpec, PodTemplate, Probe, ProbeAction, ProcessSpec, Protocol, RestartPolicy, Secret,
    Service, TaintEffect, VolumeSource,
};
use bramble_wire::security::{CapChanges, IdRef, PodSecurity, SeccompProfile};
use serde::Serialize;

/// Renders objects as one manifest, grouped by kind in the parser's order (namespaces, nodes,
/// pods, deployments, daemon sets, jobs, config maps, secrets, services, registries), each kind in the
/// order given.
pub fn render(objs: &[Object]) -> Result<String, String> {
    let mut m = ManifestOut::default();
    for o in objs {
        match o {
            Object::Namespace(n) => m.namespace.push(NamespaceOut {
                name: n.meta.name.clone(),
                labels: n.meta.labels.clone(),
                annotations: n.meta.annotations.clone(),
                pod_security: match n.pod_security {
                    PodSecurity::Privileged => None,
                    PodSecurity::Baseline => Some("baseline"),
                },
            }),
            Object::Node(n) => m.node.push(node(n)),
            Object::Pod(p) => m.pod.push(pod(p)?),
            Object::Deployment(d) => m.deployment.push(deployment(d)?),
            Object::DaemonSet(d) => m.daemonset.push(daemonset(d)?),
            Object::Job(j) => m.job.push(job(j)?),
            Object::ConfigMap(c) => m.configmap.push(configmap(c)),
            Object::Secret(s) => m.secret.push(secret(s)),
            Object::Service(s) => m.service.push(service(s)),
            Object::Registry(r) => m.registry.push(RegistryOut {
                name: r.meta.name.clone(),
                labels: r.meta.labels.clone(),
                annotations: r.meta.annotations.clone(),
                host: r.spec.host.clone(),
                insecure: r.spec.insecure,
                credentials: r.spec.credentials.clone(),
                mirror: r.spec.mirror.clone(),
                ca: r.spec.ca.clone(),
            }),
            Object::ReplicaSet(_)
            | Object::Event(_)
            | Object::Endpoints(_)
            | Object::Artifact(_)
            | Object::Image(_) => {
                return Err(format!(
                    "{} {:?}: {} objects are made by the master and cannot be written in a manifest",
                    o.kind().as_str(),
                    o.meta().name,
                    o.kind().as_str()
                ));
            }
        }
    }
    toml::to_string(&m).map_err(|e| format!("cannot write the manifest: {e}"))
}

/// Bytes as the parser reads them: the largest binary unit that divides them exactly
/// (`32Mi`), else a plain number.
fn bytes_text(b: u64) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if b >= size && b.is_multiple_of(size) {
            return format!("{}{unit}", b / size);
        }
    }
    b.to_string()
}

/// Millicores as the parser reads them: whole cores as `2`, the rest as `250m`.
fn cpu_text(millis: u32) -> String {
    if millis > 0 && millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// Milliseconds as [`super::parse_duration_ms`] reads them, in the largest exact unit (`10s`).
fn duration_text(ms: u64) -> String {
    for (unit, size) in [("h", 3_600_000u64), ("m", 60_000), ("s", 1_000)] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize, Default)]
struct ManifestOut {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    namespace: Vec<NamespaceOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    node: Vec<NodeOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pod: Vec<PodOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    deployment: Vec<DeploymentOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    daemonset: Vec<DaemonSetOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    job: Vec<JobOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    configmap: Vec<ConfigMapOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secret: Vec<SecretOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    service: Vec<ServiceOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    registry: Vec<RegistryOut>,
}

#[derive(Serialize)]
struct RegistryOut {
    name: String,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    annotations: Labels,
    host: String,
    #[serde(skip_serializing_if = "is_false")]
    insecure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    credentials: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mirror: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
}

#[derive(Serialize)]
struct NamespaceOut {
    name: String,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    annotations: Labels,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_security: Option<&'static str>,
}

#[derive(Serialize)]
struct NodeOut {
    name: String,
    #[serde(skip_serializing_if = "is_false")]
    unschedulable: bool,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    annotations: Labels,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    taints: Vec<TaintOut>,
}

#[derive(Serialize)]
struct TaintOut {
    key: String,
    value: String,
    effect: TaintEffect,
}

fn node(n: &Node) -> NodeOut {
    NodeOut {
        name: n.meta.name.clone(),
        unschedulable: n.spec.unschedulable,
        labels: n.meta.labels.clone(),
        annotations: n.meta.annotations.clone(),
        taints: n
            .spec
            .taints
            .iter()
            .map(|t| TaintOut {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: t.effect,
            })
            .collect(),
    }
}

/// The pod fields a template shares with a pod.
#[derive(Serialize)]
struct SpecOut {
    restart_policy: RestartPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    arch: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rootfs: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    network: &'static str,
    #[serde(skip_serializing_if = "is_false")]
    privileged: bool,
    #[serde(skip_serializing_if = "is_false")]
    host_pid: bool,
    #[serde(skip_serializing_if = "is_false")]
    host_ipc: bool,
    termination_grace: String,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    node_selector: Labels,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tolerations: Vec<TolerationOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    process: Vec<ProcessOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volume: Vec<VolumeOut>,
}

#[derive(Serialize)]
struct TolerationOut {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    effect: Option<TaintEffect>,
}

#[derive(Serialize)]
struct ProcessOut {
    name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    command: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workdir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<IdRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<IdRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    supplementary_groups: Vec<IdRef>,
    #[serde(skip_serializing_if = "is_false")]
    run_as_non_root: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    seccomp: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<CapChanges>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pids: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<PortOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env_from: Vec<EnvFromOut>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    liveness: Option<ProbeOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    readiness: Option<ProbeOut>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum PortOut {
    Plain(u16),
    Full { container_port: u16, host_port: u16 },
}

#[derive(Serialize)]
struct EnvFromOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    configmap: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    prefix: String,
}

#[derive(Serialize)]
struct ProbeOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    exec: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp: Option<u16>,
    initial_delay: String,
    period: String,
    timeout: String,
    failure_threshold: u32,
    success_threshold: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<HttpOut>,
}

#[derive(Serialize)]
struct HttpOut {
    port: u16,
    path: String,
}

#[derive(Serialize)]
struct VolumeOut {
    name: String,
    mount_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_path: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    read_only: bool,
    #[serde(skip_serializing_if = "is_false")]
    empty_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    configmap: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

fn probe(p: &Probe) -> ProbeOut {
    let (exec, tcp, http) = match &p.action {
        ProbeAction::Exec(cmd) => (Some(cmd.clone()), None, None),
        ProbeAction::Tcp { port } => (None, Some(*port), None),
        ProbeAction::Http { port, path } => (
            None,
            None,
            Some(HttpOut {
                port: *port,
                path: path.clone(),
            }),
        ),
    };
    ProbeOut {
        exec,
        tcp,
        http,
        initial_delay: duration_text(p.initial_delay_ms.into()),
        period: duration_text(p.period_ms.into()),
        timeout: duration_text(p.timeout_ms.into()),
        failure_threshold: p.failure_threshold,
        success_threshold: p.success_threshold,
    }
}

fn process(what: &str, p: &ProcessSpec) -> Result<ProcessOut, String> {
    let mut env = BTreeMap::new();
    for (k, v) in &p.env {
        if env.insert(k.clone(), v.clone()).is_some() {
            return Err(format!(
                "{what}: process {:?}: env {k:?} is set twice; a manifest's env is a table with one value per name",
                p.name
            ));
        }
    }
    Ok(ProcessOut {
        name: p.name.clone(),
        command: p.command.clone(),
        args: p.args.clone(),
        workdir: p.workdir.clone(),
        user: p.user.clone(),
        group: p.group.clone(),
        supplementary_groups: p.supplementary_groups.clone(),
        run_as_non_root: p.run_as_non_root,
        seccomp: match p.seccomp {
            SeccompProfile::RuntimeDefault => None,
            SeccompProfile::Unconfined => Some("unconfined"),
        },
        capabilities: Some(p.capabilities).filter(|c| *c != CapChanges::default()),
        memory: p.resources.memory_bytes.map(bytes_text),
        cpu: p.resources.cpu_millis.map(cpu_text),
        pids: p.resources.pids,
        ports: p
            .ports
            .iter()
            .map(|port| match port.host_port {
                None => PortOut::Plain(port.container_port),
                Some(host_port) => PortOut::Full {
                    container_port: port.container_port,
                    host_port,
                },
            })
            .collect(),
        env_from: p
            .env_from
            .iter()
            .map(|e| match e {
                EnvFrom::ConfigMap { name, prefix } => EnvFromOut {
                    configmap: Some(name.clone()),
                    secret: None,
                    prefix: prefix.clone(),
                },
                EnvFrom::Secret { name, prefix } => EnvFromOut {
                    configmap: None,
                    secret: Some(name.clone()),
                    prefix: prefix.clone(),
                },
            })
            .collect(),
        env,
        liveness: p.liveness.as_ref().map(probe),
        readiness: p.readiness.as_ref().map(probe),
    })
}

fn spec(what: &str, s: &PodSpec) -> Result<SpecOut, String> {
    Ok(SpecOut {
        restart_policy: s.restart_policy,
        arch: s.arch.map(|a| a.as_str()),
        rootfs: s.rootfs.clone(),
        image: s.image.clone(),
        network: match s.network {
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
            NetworkMode::Isolated => "isolated",
        },
        privileged: s.privileged,
        host_pid: s.host_pid,
        host_ipc: s.host_ipc,
        termination_grace: duration_text(s.termination_grace_ms.into()),
        node_selector: s.node_selector.clone(),
        tolerations: s
            .tolerations
            .iter()
            .map(|t| TolerationOut {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: t.effect,
            })
            .collect(),
        process: s
            .processes
            .iter()
            .map(|p| process(what, p))
            .collect::<Result<_, _>>()?,
        volume: s
            .volumes
            .iter()
            .map(|v| {
                let mut out = VolumeOut {
                    name: v.name.clone(),
                    mount_path: v.mount_path.clone(),
                    host_path: None,
                    read_only: false,
                    empty_dir: false,
                    configmap: None,
                    secret: None,
                };
                match &v.source {
                    VolumeSource::HostPath { path, read_only } => {
                        out.host_path = Some(path.clone());
                        out.read_only = *read_only;
                    }
                    VolumeSource::EmptyDir => out.empty_dir = true,
                    VolumeSource::ConfigMap { name } => out.configmap = Some(name.clone()),
                    VolumeSource::Secret { name } => out.secret = Some(name.clone()),
                }
                out
            })
            .collect(),
    })
}

/// `Some(namespace)` unless empty (the parser then uses its default namespace).
fn namespace(m: &Meta) -> Option<String> {
    Some(m.namespace.clone()).filter(|n| !n.is_empty())
}

#[derive(Serialize)]
struct PodOut {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    annotations: Labels,
    #[serde(flatten)]
    spec: SpecOut,
}

fn pod(p: &Pod) -> Result<PodOut, String> {
    Ok(PodOut {
        name: p.meta.name.clone(),
        namespace: namespace(&p.meta),
        node: p.spec.node_name.clone(),
        labels: p.meta.labels.clone(),
        annotations: p.meta.annotations.clone(),
        spec: spec(&format!("pod {:?}", p.meta.name), &p.spec)?,
    })
}

#[derive(Serialize)]
struct TemplateOut {
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    #[serde(flatten)]
    spec: SpecOut,
}

fn template(what: &str, t: &PodTemplate) -> Result<TemplateOut, String> {
    if let Some(n) = &t.spec.node_name {
        return Err(format!(
            "{what}: its template is pinned to node {n:?}, which a manifest's template cannot say (only a [[pod]] has node = \"NAME\")"
        ));
    }
    Ok(TemplateOut {
        labels: t.labels.clone(),
        spec: spec(what, &t.spec)?,
    })
}

/// A controller's selector, unless the parser's default (the template's labels) gives it back.
fn selector(what: &str, selector: &Labels, t: &PodTemplate) -> Result<Option<Labels>, String> {
    if selector.is_empty() && !t.labels.is_empty() {
        return Err(format!(
            "{what}: its selector is empty, which a manifest cannot say: without a selector the template's labels are used"
        ));
    }
    Ok(Some(selector.clone()).filter(|s| !s.is_empty() && s != &t.labels))
}

#[derive(Serialize)]
struct DeploymentOut {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    replicas: u32,
    max_surge: u32,
    max_unavailable: u32,
    min_ready: String,
    revision_history: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress_deadline: Option<String>,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    annotations: Labels,
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<Labels>,
    template: TemplateOut,
}

fn deployment(d: &Deployment) -> Result<DeploymentOut, String> {
    let what = format!("deployment {:?}", d.meta.name);
    Ok(DeploymentOut {
        name: d.meta.name.clone(),
        namespace: namespace(&d.meta),
        replicas: d.spec.replicas,
        max_surge: d.spec.max_surge,
        max_unavailable: d.spec.max_unavailable,
        min_ready: duration_text(d.spec.min_ready_ms.into()),
        revision_history: d.spec.revision_history,
        progress_deadline: Some(d.spec.progress_deadline_ms)
            .filter(|&ms| ms != 0)
            .map(|ms| duration_text(ms.into())),
        labels: d.meta.labels.clone(),
        annotations: d.meta.annotations.clone(),
        selector: selector(&what, &d.spec.selector, &d.spec.template)?,
        template: template(&what, &d.spec.template)?,
    })
}

#[derive(Serialize)]
struct DaemonSetOut {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    max_unavailable: u32,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    annotations: Labels,
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<Labels>,
    template: TemplateOut,
}

fn daemonset(d: &DaemonSet) -> Result<DaemonSetOut, String> {
    let what = format!("daemonset {:?}", d.meta.name);
    Ok(DaemonSetOut {
        name: d.meta.name.clone(),
        namespace: namespace(&d.meta),
        max_unavailable: d.spec.max_unavailable,
        labels: d.meta.labels.clone(),
        annotations: d.meta.annotations.clone(),
        selector: selector(&what, &d.spec.selector, &d.spec.template)?,
        template: template(&what, &d.spec.template)?,
    })
}

#[derive(Serialize)]
struct JobOut {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    completions: u32,
    parallelism: u32,
    backoff_limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_deadline: Option<String>,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    annotations: Labels,
    template: TemplateOut,
}

fn job(j: &Job) -> Result<JobOut, String> {
    let what = format!("job {:?}", j.meta.name);
    if j.spec.template.spec.restart_policy == RestartPolicy::Always {
        return Err(format!(
            "{what}: its template's restart_policy is \"Always\", which a manifest's job cannot say (it runs \"Never\" instead)"
        ));
    }
    Ok(JobOut {
        name: j.meta.name.clone(),
        namespace: namespace(&j.meta),
        completions: j.spec.completions,
        parallelism: j.spec.parallelism,
        backoff_limit: j.spec.backoff_limit,
        active_deadline: j.spec.active_deadline_ms.map(duration_text),
        labels: j.meta.labels.clone(),
        annotations: j.meta.annotations.clone(),
        template: template(&what, &j.spec.template)?,
    })
}

#[derive(Serialize)]
struct ConfigMapOut {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    annotations: Labels,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    data: BTreeMap<String, String>,
}

fn configmap(c: &ConfigMap) -> ConfigMapOut {
    ConfigMapOut {
        name: c.meta.name.clone(),
        namespace: namespace(&c.meta),
        labels: c.meta.labels.clone(),
        annotations: c.meta.annotations.clone(),
        data: c.data.clone(),
    }
}

#[derive(Serialize)]
struct SecretOut {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    annotations: Labels,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    data: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    data_base64: BTreeMap<String, String>,
}

/// Text values go to `data`, the others (not UTF-8) to `data_base64`.
fn secret(s: &Secret) -> SecretOut {
    let mut data = BTreeMap::new();
    let mut data_base64 = BTreeMap::new();
    for (k, v) in &s.data {
        match std::str::from_utf8(v) {
            Ok(text) => data.insert(k.clone(), text.to_string()),
            Err(_) => data_base64.insert(k.clone(), crate::config_data::base64_encode(v)),
        };
    }
    SecretOut {
        name: s.meta.name.clone(),
        namespace: namespace(&s.meta),
        labels: s.meta.labels.clone(),
        annotations: s.meta.annotations.clone(),
        data,
        data_base64,
    }
}

#[derive(Serialize)]
struct ServiceOut {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    port: u16,
    target_port: u16,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_ip: Option<String>,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    annotations: Labels,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    selector: Labels,
}

fn service(s: &Service) -> ServiceOut {
    ServiceOut {
        name: s.meta.name.clone(),
        namespace: namespace(&s.meta),
        port: s.spec.port,
        target_port: s.spec.target_port,
        protocol: match s.spec.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        },
        cluster_ip: s.spec.cluster_ip.clone(),
        labels: s.meta.labels.clone(),
        annotations: s.meta.annotations.clone(),
        selector: s.spec.selector.clone(),
    }
}

#[cfg(test)]
mod tests;
