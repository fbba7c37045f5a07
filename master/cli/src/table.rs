//! Tables and descriptions for people.

use std::fmt::Write;

use bramble_wire::objects::{
    CapSet, ConditionKind, Kind, Object, Pod, PodSpec, ProcessSpec, ProcessState, SeccompProfile,
};

use bramble_client::validate::format_bytes;

/// Renders rows as aligned columns.
pub fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}   ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `text` without its first line (the header) when `skip`.
pub fn skip_header(text: &str, skip: bool) -> &str {
    if !skip {
        return text;
    }
    text.split_once('\n').map_or("", |(_, rest)| rest)
}

/// Human age: `5s`, `3m`, `2h`, `4d`.
pub fn age(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "-".into();
    }
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn pod_ready(p: &Pod) -> String {
    // Running and passing its readiness probe (a process without one is ready while running).
    let ready = p
        .status
        .processes
        .iter()
        .filter(|s| s.ready && matches!(s.state, ProcessState::Running { .. }))
        .count();
    format!("{ready}/{}", p.spec.processes.len())
}

/// A probe in one line: `http GET :8080/healthz every 2s, timeout 1s, 3 failures, delay 1s`.
pub fn probe(p: &bramble_wire::objects::Probe) -> String {
    use bramble_wire::objects::ProbeAction;
    let what = match &p.action {
        ProbeAction::Exec(cmd) => format!("exec {}", cmd.join(" ")),
        ProbeAction::Tcp { port } => format!("tcp :{port}"),
        ProbeAction::Http { port, path } => format!("http GET :{port}{path}"),
    };
    let mut s = format!(
        "{what} every {}, timeout {}, {} failure{}",
        ms(p.period_ms),
        ms(p.timeout_ms),
        p.failure_threshold,
        if p.failure_threshold == 1 { "" } else { "s" }
    );
    if p.success_threshold > 1 {
        s += &format!(", {} successes", p.success_threshold);
    }
    if p.initial_delay_ms > 0 {
        s += &format!(", delay {}", ms(p.initial_delay_ms));
    }
    s
}

fn ms(v: u32) -> String {
    if v >= 1000 && v.is_multiple_of(1000) {
        format!("{}s", v / 1000)
    } else {
        format!("{v}ms")
    }
}

fn pod_status(p: &Pod) -> String {
    // Like kubectl: the most telling reason wins over the phase.
    for s in &p.status.processes {
        if let (ProcessState::Waiting, Some(r)) = (&s.state, s.last_exit) {
            return format!("BackOff({})", reason(r));
        }
    }
    p.status.phase.as_str().to_string()
}

/// A pod's opt-outs of the default containment (`privileged,host_pid`), or `-`.
pub fn pod_security(spec: &PodSpec) -> String {
    let o = spec.opt_outs();
    if o.is_empty() {
        "-".into()
    } else {
        o.join(",")
    }
}

/// What differs from the default in a process's security context: user and groups,
/// `run_as_non_root`, its capability set when not the default 14 (all in a privileged pod),
/// seccomp when unconfined (also the case in a privileged pod).
pub fn process_security(p: &ProcessSpec, privileged: bool) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(u) = &p.user {
        out.push(format!("user={u}"));
    }
    if let Some(g) = &p.group {
        out.push(format!("group={g}"));
    }
    if !p.supplementary_groups.is_empty() {
        let g: Vec<String> = p
            .supplementary_groups
            .iter()
            .map(|g| g.to_string())
            .collect();
        out.push(format!("supplementary_groups={}", g.join(",")));
    }
    if p.run_as_non_root {
        out.push("run_as_non_root".into());
    }
    let caps = if privileged {
        CapSet::ALL
    } else {
        p.capabilities.effective()
    };
    if caps != CapSet::DEFAULT {
        let names: Vec<&str> = caps.names().collect();
        out.push(format!(
            "capabilities={}",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(",")
            }
        ));
    }
    if privileged || p.seccomp == SeccompProfile::Unconfined {
        out.push("seccomp=unconfined".into());
    }
    out
}

/// A process exit reason as shown in tables.
pub fn reason(r: bramble_wire::ExitReason) -> String {
    use bramble_wire::ExitReason::*;
    match r {
        Completed => "Completed".into(),
        Error(c) => format!("Error({c})"),
        Signaled(s) => format!("Signaled({s})"),
        OOMKilled => "OOMKilled".into(),
        StartFailed => "StartFailed".into(),
    }
}

/// Renders a list of objects of one kind.
pub fn render(kind: Kind, items: &[Object], wide: bool, show_ns: bool, now: u64) -> String {
    let mut rows = Vec::new();
    match kind {
        Kind::Pod => {
            let mut h: Vec<String> = ["NAME", "READY", "STATUS", "RESTARTS", "NODE", "AGE"]
                .map(String::from)
                .to_vec();
            if show_ns {
                h.insert(0, "NAMESPACE".into());
            }
            if wide {
                h.extend(["IP", "SECURITY", "MESSAGE"].map(String::from));
            }
            rows.push(h);
            for o in items {
                let Object::Pod(p) = o else { continue };
                let restarts: u32 = p.status.processes.iter().map(|s| s.restarts).sum();
                let mut r = vec![
                    p.meta.name.clone(),
                    pod_ready(p),
                    pod_status(p),
                    restarts.to_string(),
                    p.spec.node_name.clone().unwrap_or_else(|| "<none>".into()),
                    age(now, p.meta.created_ms),
                ];
                if show_ns {
                    r.insert(0, p.meta.namespace.clone());
                }
                if wide {
                    r.push(if p.status.ip.is_empty() {
                        "-".into()
                    } else {
                        p.status.ip.clone()
                    });
                    r.push(pod_security(&p.spec));
                    r.push(p.status.message.clone());
                }
                rows.push(r);
            }
        }
        Kind::Node => {
            let mut h: Vec<String> = ["NAME", "STATUS", "ARCH", "CPU", "MEMORY", "CGROUP", "AGE"]
                .map(String::from)
                .to_vec();
            if wide {
                h.extend(["KERNEL", "BOARD", "VERSION", "ADDRESS", "POD-CIDR"].map(String::from));
            }
            rows.push(h);
            for o in items {
                let Object::Node(n) = o else { continue };
                let mut status = if n.status.is_ready() {
                    "Ready".to_string()
                } else {
                    "NotReady".to_string()
                };
                if n.spec.unschedulable {
                    status.push_str(",SchedulingDisabled");
                }
                let info = n.status.info.as_deref();
                let cg = info.map(|i| {
                    let v = match i.cgroup {
                        bramble_wire::CgroupVersion::V1 => "v1",
                        bramble_wire::CgroupVersion::V2 => "v2",
                        bramble_wire::CgroupVersion::None => "none",
                    };
                    let c: Vec<&str> = i.controllers.names().collect();
                    format!("{v}({})", c.join(","))
                });
                let mut r = vec![
                    n.meta.name.clone(),
                    status,
                    info.map(|i| i.arch.as_str().to_string())
                        .unwrap_or_else(|| "-".into()),
                    info.map(|i| i.cpus.to_string())
                        .unwrap_or_else(|| "-".into()),
                    info.map(|i| format_bytes(i.memory_bytes))
                        .unwrap_or_else(|| "-".into()),
                    cg.unwrap_or_else(|| "-".into()),
                    age(now, n.meta.created_ms),
                ];
                if wide {
                    r.push(info.map(|i| i.kernel.to_string()).unwrap_or_default());
                    r.push(info.map(|i| i.board.to_string()).unwrap_or_default());
                    r.push(
                        info.map(|i| i.agent_version.to_string())
                            .unwrap_or_default(),
                    );
                    r.push(n.status.addresses.join(","));
                    r.push(if n.spec.pod_cidr.is_empty() {
                        "-".into()
                    } else {
                        n.spec.pod_cidr.clone()
                    });
                }
                rows.push(r);
            }
        }
        Kind::Namespace => {
            rows.push(["NAME", "STATUS", "AGE"].map(String::from).to_vec());
            for o in items {
                let Object::Namespace(n) = o else { continue };
                rows.push(vec![
                    n.meta.name.clone(),
                    format!("{:?}", n.phase),
                    age(now, n.meta.created_ms),
                ]);
            }
        }
        Kind::Deployment => {
            rows.push(
                [
                    "NAME",
                    "READY",
                    "UP-TO-DATE",
                    "AVAILABLE",
                    "REVISION",
                    "AGE",
                ]
                .map(String::from)
                .to_vec(),
            );
            for o in items {
                let Object::Deployment(d) = o else { continue };
                rows.push(vec![
                    d.meta.name.clone(),
                    format!("{}/{}", d.status.available, d.spec.replicas),
                    d.status.updated.to_string(),
                    d.status.available.to_string(),
                    d.status.revision.to_string(),
                    age(now, d.meta.created_ms),
                ]);
            }
        }
        Kind::ReplicaSet => {
            rows.push(
                ["NAME", "DESIRED", "CURRENT", "AVAILABLE", "REVISION", "AGE"]
                    .map(String::from)
                    .to_vec(),
            );
            for o in items {
                let Object::ReplicaSet(r) = o else { continue };
                rows.push(vec![
                    r.meta.name.clone(),
                    r.spec.replicas.to_string(),
                    r.status.replicas.to_string(),
                    r.status.available.to_string(),
                    r.spec.revision.to_string(),
                    age(now, r.meta.created_ms),
                ]);
            }
        }
        Kind::DaemonSet => {
            rows.push(
                [
                    "NAME",
                    "DESIRED",
                    "CURRENT",
                    "UP-TO-DATE",
                    "AVAILABLE",
                    "AGE",
                ]
                .map(String::from)
                .to_vec(),
            );
            for o in items {
                let Object::DaemonSet(d) = o else { continue };
                rows.push(vec![
                    d.meta.name.clone(),
                    d.status.desired.to_string(),
                    d.status.current.to_string(),
                    d.status.updated.to_string(),
                    d.status.available.to_string(),
                    age(now, d.meta.created_ms),
                ]);
            }
        }
        Kind::Job => {
            rows.push(
                [
                    "NAME",
                    "STATUS",
                    "COMPLETIONS",
                    "ACTIVE",
                    "SUCCEEDED",
                    "FAILED",
                    "AGE",
                ]
                .map(String::from)
                .to_vec(),
            );
            for o in items {
                let Object::Job(j) = o else { continue };
                rows.push(vec![
                    j.meta.name.clone(),
                    format!("{:?}", j.status.phase),
                    format!("{}/{}", j.status.succeeded, j.spec.completions),
                    j.status.active.to_string(),
                    j.status.succeeded.to_string(),
                    j.status.failed.to_string(),
                    age(now, j.meta.created_ms),
                ]);
            }
        }
        Kind::Event => {
            rows.push(
                ["LAST SEEN", "OBJECT", "REASON", "COUNT", "MESSAGE"]
                    .map(String::from)
                    .to_vec(),
            );
            for o in items {
                let Object::Event(e) = o else { continue };
                let obj = match e.object_kind {
                    Some(k) => format!("{}/{}", k.as_str(), e.object_name),
                    None => e.object_name.clone(),
                };
                rows.push(vec![
                    age(now, e.last_ms),
                    obj,
                    e.reason.clone(),
                    e.count.to_string(),
                    e.message.clone(),
                ]);
            }
        }
        Kind::Service => {
            rows.push(header(
                &["NAME", "CLUSTER-IP", "PORT", "TARGET", "SELECTOR", "AGE"],
                show_ns,
            ));
            for o in items {
                let Object::Service(v) = o else { continue };
                let sel: Vec<String> = v
                    .spec
                    .selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                rows.push(ns_row(
                    show_ns,
                    &v.meta.namespace,
                    vec![
                        v.meta.name.clone(),
                        v.spec
                            .cluster_ip
                            .clone()
                            .unwrap_or_else(|| "<pending>".into()),
                        format!("{}/{}", v.spec.port, v.spec.protocol.as_str()),
                        v.spec.target_port.to_string(),
                        sel.join(","),
                        age(now, v.meta.created_ms),
                    ],
                ));
            }
        }
        Kind::Endpoints => {
            rows.push(header(&["NAME", "PORT", "READY", "NOT READY"], show_ns));
            for o in items {
                let Object::Endpoints(v) = o else { continue };
                let list = |a: &[bramble_wire::objects::EndpointAddress]| {
                    if a.is_empty() {
                        "<none>".to_string()
                    } else if wide {
                        a.iter()
                            .map(|e| format!("{}:{} ({}@{})", e.ip, e.port, e.pod, e.node))
                            .collect::<Vec<_>>()
                            .join(",")
                    } else {
                        a.iter()
                            .map(|e| format!("{}:{}", e.ip, e.port))
                            .collect::<Vec<_>>()
                            .join(",")
                    }
                };
                rows.push(ns_row(
                    show_ns,
                    &v.meta.namespace,
                    vec![
                        v.meta.name.clone(),
                        format!("{}/{}", v.port, v.protocol.as_str()),
                        list(&v.ready),
                        list(&v.not_ready),
                    ],
                ));
            }
        }
        Kind::ConfigMap | Kind::Secret => {
            rows.push(header(&["NAME", "KEYS", "BYTES", "AGE"], show_ns));
            for o in items {
                // Key count and total size only: values (secret or not) stay out of tables.
                let (meta, keys, bytes) = match o {
                    Object::ConfigMap(v) => (
                        &v.meta,
                        v.data.len(),
                        v.data.values().map(|d| d.len()).sum(),
                    ),
                    Object::Secret(v) => (
                        &v.meta,
                        v.data.len(),
                        v.data.values().map(|d| d.len()).sum(),
                    ),
                    _ => continue,
                };
                let cols = vec![
                    meta.name.clone(),
                    keys.to_string(),
                    usize::to_string(&bytes),
                    age(now, meta.created_ms),
                ];
                rows.push(ns_row(show_ns, &meta.namespace, cols));
            }
        }
        Kind::Artifact => {
            rows.push(header(&["NAME", "ARCHES", "SIZE", "AGE"], false));
            for o in items {
                let Object::Artifact(v) = o else { continue };
                let arches: Vec<&str> = v.variants.iter().map(|x| x.arch.as_str()).collect();
                let size: u64 = v.variants.iter().map(|x| x.size).sum();
                rows.push(vec![
                    v.meta.name.clone(),
                    arches.join(","),
                    format_bytes(size),
                    age(now, v.meta.created_ms),
                ]);
            }
        }
        Kind::Image => return images(items, &Default::default(), wide, now),
        Kind::Registry => {
            rows.push(header(
                &["NAME", "HOST", "SCHEME", "CREDENTIALS", "MIRROR", "AGE"],
                false,
            ));
            for o in items {
                let Object::Registry(v) = o else { continue };
                rows.push(vec![
                    v.meta.name.clone(),
                    v.spec.host.clone(),
                    if v.spec.insecure { "http" } else { "https" }.into(),
                    v.spec.credentials.clone().unwrap_or_else(|| "-".into()),
                    v.spec.mirror.clone().unwrap_or_else(|| "-".into()),
                    age(now, v.meta.created_ms),
                ]);
            }
        }
    }
    columns(&rows)
}

/// Images: REFERENCE, DIGEST, ARCHES, SIZE (each blob once), USED BY (from `used_by`, keyed by
/// reference: all pods with `wide`, else the first two and a count), AGE (since the pull or import).
pub fn images(
    items: &[Object],
    used_by: &std::collections::BTreeMap<String, Vec<String>>,
    wide: bool,
    now: u64,
) -> String {
    let mut rows = vec![header(
        &["REFERENCE", "DIGEST", "ARCHES", "SIZE", "USED BY", "AGE"],
        false,
    )];
    for o in items {
        let Object::Image(v) = o else { continue };
        let arches: Vec<&str> = v.variants.iter().map(|x| x.arch.as_str()).collect();
        let mut seen = std::collections::BTreeSet::new();
        let size: u64 = v
            .variants
            .iter()
            .flat_map(|x| &x.layers)
            .filter(|l| seen.insert(l.sha256.as_str()))
            .map(|l| l.size)
            .sum();
        let digest = v.digest.strip_prefix("sha256:").unwrap_or(&v.digest);
        let pods = used_by.get(&v.reference).map(Vec::as_slice).unwrap_or(&[]);
        let users = match pods.len() {
            0 => "-".to_string(),
            n if wide || n <= 2 => pods.join(","),
            n => format!("{} +{} more", pods[..2].join(","), n - 2),
        };
        let when = if v.pulled_ms > 0 {
            v.pulled_ms
        } else {
            v.meta.created_ms
        };
        rows.push(vec![
            v.reference.clone(),
            if wide {
                v.digest.clone()
            } else {
                format!("sha256:{}", digest.get(..12).unwrap_or(digest))
            },
            if arches.is_empty() {
                "-".into()
            } else {
                arches.join(",")
            },
            format_bytes(size),
            users,
            age(now, when),
        ]);
    }
    columns(&rows)
}

/// A detailed, multi-line description.
pub fn describe(o: &Object, now: u64) -> String {
    let mut s = String::new();
    let m = o.meta();
    let _ = writeln!(s, "Kind:        {}", o.kind().as_str());
    let _ = writeln!(s, "Name:        {}", m.name);
    if !m.namespace.is_empty() {
        let _ = writeln!(s, "Namespace:   {}", m.namespace);
    }
    let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        s,
        "Labels:      {}",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join(", ")
        }
    );
    // Annotations: one per line (values may be long or span lines; continuation lines are
    // indented under the value).
    if m.annotations.is_empty() {
        let _ = writeln!(s, "Annotations: <none>");
    } else {
        let _ = writeln!(s, "Annotations:");
        for (k, v) in &m.annotations {
            let v = v.replace('\n', "\n               ");
            let _ = writeln!(s, "  {k}={v}");
        }
    }
    let _ = writeln!(s, "UID:         {}", m.uid);
    let _ = writeln!(s, "Revision:    {}", m.revision);
    let _ = writeln!(s, "Age:         {}", age(now, m.created_ms));
    match o {
        Object::Pod(p) => {
            let _ = writeln!(
                s,
                "Node:        {}",
                p.spec.node_name.as_deref().unwrap_or("<none>")
            );
            let _ = writeln!(s, "Phase:       {}", p.status.phase.as_str());
            let _ = writeln!(s, "Restart:     {:?}", p.spec.restart_policy);
            let _ = writeln!(s, "Network:     {:?}", p.spec.network);
            let _ = writeln!(
                s,
                "Security:    {}",
                pod_security(&p.spec).replace(',', ", ")
            );
            if let Some(a) = p.spec.arch {
                let _ = writeln!(s, "Arch:        {}", a.as_str());
            }
            if !p.status.message.is_empty() {
                let _ = writeln!(s, "Message:     {}", p.status.message);
            }
            let _ = writeln!(s, "Processes:");
            for spec in &p.spec.processes {
                let _ = writeln!(s, "  {}:", spec.name);
                let _ = writeln!(s, "    Command:   {}", spec.command.join(" "));
                let r = &spec.resources;
                let _ = writeln!(
                    s,
                    "    Limits:    cpu={} memory={} pids={}",
                    r.cpu_millis
                        .map(|c| format!("{c}m"))
                        .unwrap_or_else(|| "-".into()),
                    r.memory_bytes
                        .map(format_bytes)
                        .unwrap_or_else(|| "-".into()),
                    r.pids.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
                );
                let sec = process_security(spec, p.spec.privileged);
                if !sec.is_empty() {
                    let _ = writeln!(s, "    Security:  {}", sec.join(", "));
                }
                for (what, pr) in [("Liveness", &spec.liveness), ("Readiness", &spec.readiness)] {
                    if let Some(pr) = pr {
                        let _ =
                            writeln!(s, "    {what}:{:w$}{}", "", probe(pr), w = 10 - what.len());
                    }
                }
                if let Some(st) = p.status.processes.iter().find(|x| x.name == spec.name) {
                    let state = match &st.state {
                        ProcessState::Waiting => "Waiting".to_string(),
                        ProcessState::Running { pid, started_ms } => {
                            format!("Running (pid {pid}, {})", age(now, *started_ms))
                        }
                        ProcessState::Terminated { reason: r, .. } => {
                            format!("Terminated: {}", reason(*r))
                        }
                    };
                    let _ = writeln!(s, "    State:     {state}");
                    let _ = writeln!(s, "    Ready:     {}", st.ready);
                    let _ = writeln!(s, "    Restarts:  {}", st.restarts);
                    if let Some(l) = st.last_exit {
                        let _ = writeln!(s, "    Last exit: {}", reason(l));
                    }
                }
            }
        }
        Object::Node(n) => {
            if let Some(i) = n.status.info.as_deref() {
                let _ = writeln!(s, "Arch:        {}", i.arch.as_str());
                let _ = writeln!(s, "OS:          {}", i.os);
                let _ = writeln!(s, "Kernel:      {}", i.kernel);
                let _ = writeln!(
                    s,
                    "Board:       {}",
                    if i.board.is_empty() {
                        "-"
                    } else {
                        i.board.as_str()
                    }
                );
                let _ = writeln!(
                    s,
                    "Capacity:    cpu={} memory={} pids={}",
                    i.cpus,
                    format_bytes(i.memory_bytes),
                    i.pids
                );
                let c: Vec<&str> = i.controllers.names().collect();
                let _ = writeln!(s, "Cgroup:      {:?} ({})", i.cgroup, c.join(","));
                let _ = writeln!(s, "Agent:       {}", i.agent_version);
            }
            let a = &n.status.allocatable;
            let _ = writeln!(
                s,
                "Allocatable: cpu={}m memory={} pids={}",
                a.cpu_millis.unwrap_or(0),
                format_bytes(a.memory_bytes.unwrap_or(0)),
                a.pids.unwrap_or(0)
            );
            let _ = writeln!(s, "Addresses:   {}", n.status.addresses.join(", "));
            let taints: Vec<String> = n
                .spec
                .taints
                .iter()
                .map(|t| format!("{}={}:{:?}", t.key, t.value, t.effect))
                .collect();
            let _ = writeln!(
                s,
                "Taints:      {}",
                if taints.is_empty() {
                    "<none>".into()
                } else {
                    taints.join(", ")
                }
            );
            let _ = writeln!(s, "Conditions:");
            for c in &n.status.conditions {
                let kind = match c.kind {
                    ConditionKind::Ready => "Ready",
                    ConditionKind::MemoryCgroup => "MemoryCgroup",
                    ConditionKind::DiskPressure => "DiskPressure",
                    ConditionKind::KernelNetwork => "KernelNetwork",
                };
                let _ = writeln!(
                    s,
                    "  {kind:<13} {:<5} {} ({})",
                    c.status,
                    c.message,
                    age(now, c.since_ms)
                );
            }
        }
        Object::Namespace(n) => {
            let _ = writeln!(s, "Phase:       {:?}", n.phase);
        }
        Object::Deployment(d) => {
            let _ = writeln!(
                s,
                "Replicas:    {} desired, {} updated, {} available, {} total",
                d.spec.replicas, d.status.updated, d.status.available, d.status.replicas
            );
            let _ = writeln!(
                s,
                "Strategy:    rolling, max_surge={} max_unavailable={} min_ready={}ms",
                d.spec.max_surge, d.spec.max_unavailable, d.spec.min_ready_ms
            );
            let _ = writeln!(s, "Revision:    {}", d.status.revision);
            if !d.status.message.is_empty() {
                let _ = writeln!(s, "Message:     {}", d.status.message);
            }
            template(&mut s, &d.spec.template);
        }
        Object::ReplicaSet(r) => {
            let _ = writeln!(
                s,
                "Replicas:    {} desired, {} current, {} available",
                r.spec.replicas, r.status.replicas, r.status.available
            );
            let _ = writeln!(s, "Revision:    {}", r.spec.revision);
            template(&mut s, &r.spec.template);
        }
        Object::DaemonSet(d) => {
            let _ = writeln!(
                s,
                "Nodes:       {} desired, {} current, {} updated, {} available",
                d.status.desired, d.status.current, d.status.updated, d.status.available
            );
            template(&mut s, &d.spec.template);
        }
        Object::Job(j) => {
            let _ = writeln!(s, "Status:      {:?}", j.status.phase);
            let _ = writeln!(
                s,
                "Completions: {}/{} (parallelism {}, backoff limit {})",
                j.status.succeeded, j.spec.completions, j.spec.parallelism, j.spec.backoff_limit
            );
            let _ = writeln!(
                s,
                "Pods:        {} active, {} succeeded, {} failed",
                j.status.active, j.status.succeeded, j.status.failed
            );
            if !j.status.message.is_empty() {
                let _ = writeln!(s, "Message:     {}", j.status.message);
            }
            template(&mut s, &j.spec.template);
        }
        Object::Event(e) => {
            let _ = writeln!(s, "Reason:      {}", e.reason);
            let _ = writeln!(s, "Message:     {}", e.message);
            let _ = writeln!(s, "Count:       {}", e.count);
        }
        Object::Service(v) => {
            let sel: Vec<String> = v
                .spec
                .selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "Selector:    {}", sel.join(", "));
            let ip = match v.spec.cluster_ip.as_deref() {
                Some("None") => "None (headless: its name answers with the ready pods' addresses)",
                Some(ip) => ip,
                None => "<pending>",
            };
            let _ = writeln!(s, "Cluster IP:  {ip}");
            let _ = writeln!(
                s,
                "Port:        {} (on every node) -> {}",
                v.spec.port, v.spec.target_port
            );
        }
        Object::Endpoints(v) => {
            let _ = writeln!(s, "Port:        {}", v.port);
            for (what, list) in [("Ready", &v.ready), ("Not ready", &v.not_ready)] {
                let _ = writeln!(s, "{what}:");
                for e in list {
                    let _ = writeln!(s, "  {}:{}  pod {} on {}", e.ip, e.port, e.pod, e.node);
                }
            }
        }
        Object::ConfigMap(v) => {
            let _ = writeln!(s, "Data:");
            for (k, d) in &v.data {
                let _ = writeln!(s, "  {k}: {} bytes", d.len());
                for line in d.lines().take(20) {
                    let _ = writeln!(s, "    {line}");
                }
            }
        }
        Object::Secret(v) => {
            let _ = writeln!(s, "Data (values hidden):");
            for (k, d) in &v.data {
                let _ = writeln!(s, "  {k}: {} bytes", d.len());
            }
        }
        Object::Artifact(v) => {
            let _ = writeln!(s, "Variants:");
            for x in &v.variants {
                let _ = writeln!(
                    s,
                    "  {}: sha256:{} {}",
                    x.arch.as_str(),
                    x.sha256,
                    format_bytes(x.size)
                );
            }
        }
        Object::Image(v) => {
            let _ = writeln!(s, "Reference:   {}", v.reference);
            let _ = writeln!(s, "Digest:      {}", v.digest);
            let _ = writeln!(s, "Pulled:      {} ago", age(now, v.pulled_ms));
            let _ = writeln!(s, "Variants:");
            for x in &v.variants {
                let _ = writeln!(
                    s,
                    "  {}: {} {} in {} layers",
                    x.arch.as_str(),
                    x.manifest_digest,
                    format_bytes(x.size()),
                    x.layers.len()
                );
                let c = &x.config;
                let list = |v: &[String]| {
                    if v.is_empty() {
                        "<none>".to_string()
                    } else {
                        format!("{v:?}")
                    }
                };
                let _ = writeln!(s, "    Entrypoint: {}", list(&c.entrypoint));
                let _ = writeln!(s, "    Cmd:        {}", list(&c.cmd));
                let _ = writeln!(
                    s,
                    "    WorkingDir: {}",
                    c.workdir.as_deref().unwrap_or("<none>")
                );
                let _ = writeln!(
                    s,
                    "    User:       {}",
                    c.user.as_deref().unwrap_or("<none>")
                );
                let env: Vec<&str> = c.env.iter().map(|(k, _)| k.as_str()).collect();
                let _ = writeln!(
                    s,
                    "    Env:        {}",
                    if env.is_empty() {
                        "<none>".into()
                    } else {
                        env.join(", ")
                    }
                );
                if !c.exposed_ports.is_empty() {
                    let _ = writeln!(s, "    Ports:      {}", c.exposed_ports.join(", "));
                }
                for l in &x.layers {
                    let _ = writeln!(
                        s,
                        "    layer sha256:{} {} {:?}",
                        l.sha256.get(..12).unwrap_or(&l.sha256),
                        format_bytes(l.size),
                        l.compression
                    );
                }
            }
        }
        Object::Registry(v) => {
            let _ = writeln!(s, "Host:        {}", v.spec.host);
            let _ = writeln!(
                s,
                "Scheme:      {}",
                if v.spec.insecure { "http" } else { "https" }
            );
            let _ = writeln!(
                s,
                "Credentials: {}",
                v.spec.credentials.as_deref().unwrap_or("<none>")
            );
            let _ = writeln!(
                s,
                "Mirror:      {}",
                v.spec.mirror.as_deref().unwrap_or("<none>")
            );
            let _ = writeln!(
                s,
                "CA:          {}",
                if v.spec.ca.is_some() {
                    "custom"
                } else {
                    "system roots"
                }
            );
        }
    }
    s
}

fn header(cols: &[&str], show_ns: bool) -> Vec<String> {
    let mut h: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
    if show_ns {
        h.insert(0, "NAMESPACE".into());
    }
    h
}

fn ns_row(show_ns: bool, ns: &str, mut r: Vec<String>) -> Vec<String> {
    if show_ns {
        r.insert(0, ns.to_string());
    }
    r
}

fn template(s: &mut String, t: &bramble_wire::objects::PodTemplate) {
    let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(s, "Template:    labels {}", labels.join(", "));
    for p in &t.spec.processes {
        let r = &p.resources;
        let _ = writeln!(
            s,
            "  {}: {} (cpu={} memory={})",
            p.name,
            p.command.join(" "),
            r.cpu_millis
                .map(|c| format!("{c}m"))
                .unwrap_or_else(|| "-".into()),
            r.memory_bytes
                .map(format_bytes)
                .unwrap_or_else(|| "-".into())
        );
    }
}

#[cfg(test)]
mod probe_tests {
    use bramble_wire::objects::{Probe, ProbeAction};

    #[test]
    fn probes_read_in_one_line() {
        let p = Probe {
            action: ProbeAction::Http {
                port: 8080,
                path: "/healthz".into(),
            },
            period_ms: 2000,
            initial_delay_ms: 1500,
            ..Probe::default()
        };
        assert_eq!(
            super::probe(&p),
            "http GET :8080/healthz every 2s, timeout 1s, 3 failures, delay 1500ms"
        );
        let p = Probe {
            action: ProbeAction::Exec(vec!["cat".into(), "/tmp/healthy".into()]),
            failure_threshold: 1,
            success_threshold: 2,
            ..Probe::default()
        };
        assert_eq!(
            super::probe(&p),
            "exec cat /tmp/healthy every 10s, timeout 1s, 1 failure, 2 successes"
        );
    }
}

#[cfg(test)]
mod security_tests {
    use bramble_wire::objects::{
        CapChanges, CapSet, IdRef, NetworkMode, PodSpec, ProcessSpec, SeccompProfile,
    };

    #[test]
    fn opt_outs_and_process_context_read_in_one_line() {
        let mut spec = PodSpec {
            network: NetworkMode::None,
            processes: vec![ProcessSpec::default()],
            ..Default::default()
        };
        assert_eq!(super::pod_security(&spec), "-");
        spec.privileged = true;
        spec.host_pid = true;
        assert_eq!(super::pod_security(&spec), "privileged,host_pid");

        let p = &mut spec.processes[0];
        assert!(super::process_security(p, false).is_empty());
        p.user = Some(IdRef::Name("nobody".into()));
        p.group = Some(IdRef::Id(100));
        p.supplementary_groups = vec![IdRef::Name("video".into()), IdRef::Id(7)];
        p.run_as_non_root = true;
        p.capabilities = CapChanges {
            add: CapSet::parse("NET_ADMIN").unwrap(),
            drop: CapSet::ALL,
        };
        p.seccomp = SeccompProfile::Unconfined;
        assert_eq!(
            super::process_security(p, false),
            [
                "user=nobody",
                "group=100",
                "supplementary_groups=video,7",
                "run_as_non_root",
                "capabilities=NET_ADMIN",
                "seccomp=unconfined"
            ]
        );
        p.capabilities.add = CapSet::EMPTY;
        p.seccomp = SeccompProfile::RuntimeDefault;
        assert_eq!(super::process_security(p, false)[4], "capabilities=none");
        assert_eq!(
            super::process_security(p, true)[4..],
            ["capabilities=ALL", "seccomp=unconfined"]
        );
    }
}

#[cfg(test)]
mod image_tests {
    use std::collections::BTreeMap;

    use bramble_wire::Arch;
    use bramble_wire::objects::{
        Image, ImageConfig, ImageLayer, ImageVariant, LayerCompression, Meta, Object,
    };

    fn image() -> Object {
        let layer = |c: char, size| ImageLayer {
            sha256: c.to_string().repeat(64),
            size,
            compression: LayerCompression::Gzip,
        };
        let variant = |arch, layers| ImageVariant {
            arch,
            manifest_digest: format!("sha256:{}", "d".repeat(64)),
            config_sha256: "c".repeat(64),
            config: ImageConfig {
                entrypoint: vec!["/init".into()],
                env: vec![("PATH".into(), "/bin".into())],
                workdir: Some("/srv".into()),
                ..Default::default()
            },
            layers,
        };
        Object::Image(Image {
            meta: Meta {
                name: "docker-io-library-alpine-3-20-0123456789".into(),
                created_ms: 1_000,
                ..Default::default()
            },
            reference: "docker.io/library/alpine:3.20".into(),
            digest: format!("sha256:{}", "0123456789ab".repeat(5) + "cdef"),
            // The base layer is shared: counted once.
            variants: vec![
                variant(
                    Arch::Aarch64,
                    vec![layer('a', 3 << 20), layer('b', 1 << 20)],
                ),
                variant(Arch::Armv7, vec![layer('a', 3 << 20), layer('e', 1 << 20)]),
            ],
            pulled_ms: 100_000,
        })
    }

    #[test]
    fn images_table_shows_size_arches_and_users() {
        let items = [image()];
        let mut used = BTreeMap::new();
        used.insert(
            "docker.io/library/alpine:3.20".to_string(),
            vec!["default/a".to_string(), "default/b".into(), "edge/c".into()],
        );
        let t = super::images(&items, &used, false, 160_000);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["REFERENCE", "DIGEST", "ARCHES", "SIZE", "USED", "BY", "AGE"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "docker.io/library/alpine:3.20",
                "sha256:0123456789ab",
                "aarch64,armv7",
                "5Mi",
                "default/a,default/b",
                "+1",
                "more",
                "60s"
            ]
        );
        let wide = super::images(&items, &used, true, 160_000);
        assert!(wide.contains("default/a,default/b,edge/c"), "{wide}");
        assert!(wide.contains(&"0123456789ab".repeat(5)), "{wide}");
        // Through render (get images without the pod list): no users.
        let plain = super::render(
            bramble_wire::objects::Kind::Image,
            &items,
            false,
            false,
            160_000,
        );
        assert!(plain.lines().nth(1).unwrap().contains("   -   "), "{plain}");
    }

    #[test]
    fn image_description_shows_each_variant_config() {
        let d = super::describe(&image(), 160_000);
        assert!(
            d.contains("Reference:   docker.io/library/alpine:3.20"),
            "{d}"
        );
        assert!(d.contains("armv7: sha256:"), "{d}");
        assert!(d.contains("Entrypoint: [\"/init\"]"), "{d}");
        assert!(d.contains("WorkingDir: /srv"), "{d}");
        assert!(d.contains("Env:        PATH"), "{d}");
    }
}
