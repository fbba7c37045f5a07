//! Validation of user input at the edge: names, labels, quantities, whole objects.
//! Every error names the field and the fix.

use std::collections::BTreeSet;

use bramble_wire::security::{CapSet, IdRef, PodSecurity};

use bramble_wire::objects::{
    EnvFrom, Kind, Labels, Meta, NetworkMode, Object, Pod, PodSpec, PodTemplate, Probe,
    ProbeAction, RestartPolicy, VolumeSource,
};

/// Longest label value or name (DNS-1123 label).
pub const MAX_NAME: usize = 63;
/// Most labels per object.
pub const MAX_LABELS: usize = 32;
/// Most annotations per object.
pub const MAX_ANNOTATIONS: usize = 64;
/// Longest annotation key.
pub const MAX_ANNOTATION_KEY: usize = 253;
/// Largest annotation value, in bytes.
pub const MAX_ANNOTATION_VALUE: usize = 4096;
/// Largest sum of an object's annotation keys and values, in bytes.
pub const MAX_ANNOTATIONS_BYTES: usize = 32 * 1024;
/// Most processes per pod.
pub const MAX_PROCESSES: usize = 16;
/// The largest writable layer a pod may ask for (`ephemeral_storage_limit`).
pub const MAX_EPHEMERAL: u64 = 1 << 40;

/// A validation failure: `field` is a path like `pod.process[0].memory`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// Path of the offending field.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks a DNS-1123 label: 1–63 chars of `a-z0-9-`, starting and ending alphanumeric.
pub fn check_name(field: &str, s: &str) -> Result<(), Invalid> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{s:?} is not a valid name: use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
            ),
        ))
    }
}

/// Checks a cluster DNS domain (`--cluster-domain`): dot-separated DNS labels (each 1-63
/// lowercase letters, digits or '-', not starting or ending with '-'), at most 200 characters in
/// all (room for `NAME.NAMESPACE.svc.` in front within DNS's 253); a trailing dot is dropped.
/// Returns the domain as used.
pub fn check_domain(s: &str) -> Result<String, String> {
    let d = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= MAX_NAME
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if d.is_empty() || d.len() > 200 || !d.split('.').all(label_ok) {
        return Err(format!(
            "{s:?} is not a DNS domain: use dot-separated labels of letters, digits and '-' \
             (at most 200 characters), like bramble.local or cluster.example.org"
        ));
    }
    Ok(d)
}

/// Checks a label key or value: at most 63 chars of `A-Za-z0-9-_./`; values may be empty.
pub fn check_label(field: &str, key: &str, value: &str) -> Result<(), Invalid> {
    let good = |s: &str| {
        s.len() <= MAX_NAME
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
    };
    if key.is_empty() || !good(key) || !good(value) {
        return Err(invalid(
            field,
            format!(
                "label {key:?}={value:?} is invalid: keys and values are at most 63 characters of letters, digits, '-', '_', '.', '/' (keys non-empty)"
            ),
        ));
    }
    Ok(())
}

/// Checks an object's annotations: free-form notes, bounded in count and size. Keys are like
/// label keys (at most 253 characters of `A-Za-z0-9-_./`); values any text up to 4 KiB without
/// control characters other than newline and tab; at most 64 of them, 32 KiB in all.
pub fn check_annotations(field: &str, annotations: &Labels) -> Result<(), Invalid> {
    if annotations.len() > MAX_ANNOTATIONS {
        return Err(invalid(
            field,
            format!(
                "{} annotations: at most {MAX_ANNOTATIONS}; remove some with `bramble annotate KIND NAME key-`",
                annotations.len()
            ),
        ));
    }
    let mut total = 0;
    for (k, v) in annotations {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_ANNOTATION_KEY
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        if !key_ok {
            return Err(invalid(
                field,
                format!(
                    "annotation key {k:?} is invalid: at most {MAX_ANNOTATION_KEY} characters of letters, digits, '-', '_', '.', '/'"
                ),
            ));
        }
        if v.len() > MAX_ANNOTATION_VALUE {
            return Err(invalid(
                field,
                format!(
                    "annotation {k:?} is {} bytes: at most {MAX_ANNOTATION_VALUE}; keep large data in a config map",
                    v.len()
                ),
            ));
        }
        if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(invalid(
                field,
                format!(
                    "annotation {k:?}: control characters other than newline and tab are not allowed"
                ),
            ));
        }
        total += k.len() + v.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        return Err(invalid(
            field,
            format!(
                "annotations hold {total} bytes: at most {MAX_ANNOTATIONS_BYTES}; keep large data in a config map"
            ),
        ));
    }
    Ok(())
}

/// Parses a byte size: a plain number of bytes or a number with `Ki`, `Mi`, `Gi`, `Ti`, `k`, `M`,
/// `G`, `T` (as in Kubernetes).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("{s:?} is not a size: write a whole number with an optional unit, like 64Mi or 1Gi")
    })?;
    let mul: u64 = match unit {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit {unit:?}: use Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T"
            ));
        }
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses CPU: millicores like `250m`, or cores like `1`, `0.5`, `2.25`.
pub fn parse_cpu(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a CPU amount: write millicores like 250m or cores like 0.5");
    let millis: u64 = if let Some(m) = s.strip_suffix('m') {
        m.parse().map_err(|_| bad())?
    } else {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() && frac.is_empty() || frac.len() > 3 {
            return Err(bad());
        }
        let i: u64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let f: u64 = if frac.is_empty() {
            0
        } else {
            let v: u64 = frac.parse().map_err(|_| bad())?;
            v * 10u64.pow(3 - frac.len() as u32)
        };
        i.checked_mul(1000)
            .and_then(|x| x.checked_add(f))
            .ok_or_else(bad)?
    };
    if millis == 0 {
        return Err(format!("{s:?} is zero: leave cpu unset for no limit"));
    }
    u32::try_from(millis).map_err(|_| bad())
}

/// Formats bytes the way people write them (`32Mi`).
pub fn format_bytes(b: u64) -> String {
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
    if b >= 1 << 20 {
        return format!("{:.1}Mi", b as f64 / (1u64 << 20) as f64);
    }
    b.to_string()
}

/// Validates an object as received from a client (before defaults from the master).
pub fn check_object(obj: &Object) -> Result<(), Invalid> {
    let kind = obj.kind().as_str();
    let meta = obj.meta();
    check_name(&format!("{kind}.name"), &meta.name)?;
    if obj.kind().namespaced() {
        check_name(
            &format!("{kind} {:?}: namespace", meta.name),
            &meta.namespace,
        )?;
    }
    if meta.labels.len() > MAX_LABELS {
        return Err(invalid(
            format!("{kind} {:?}: labels", meta.name),
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    for (k, v) in &meta.labels {
        check_label(&format!("{kind} {:?}: labels", meta.name), k, v)?;
    }
    check_annotations(
        &format!("{kind} {:?}: annotations", meta.name),
        &meta.annotations,
    )?;
    match obj {
        Object::Pod(p) => check_pod(p),
        Object::Deployment(d) => {
            check_template(kind, &meta.name, &d.spec.selector, &d.spec.template)?;
            if d.spec.max_surge == 0 && d.spec.max_unavailable == 0 && d.spec.replicas > 0 {
                return Err(invalid(
                    format!("deployment {:?}: max_surge", meta.name),
                    "max_surge and max_unavailable cannot both be 0: a rollout could never make progress",
                ));
            }
            Ok(())
        }
        Object::DaemonSet(d) => {
            check_template(kind, &meta.name, &d.spec.selector, &d.spec.template)
        }
        Object::ReplicaSet(r) => {
            check_template(kind, &meta.name, &r.spec.selector, &r.spec.template)
        }
        Object::Job(j) => {
            check_template(kind, &meta.name, &Default::default(), &j.spec.template)?;
            if j.spec.template.spec.restart_policy == RestartPolicy::Always {
                return Err(invalid(
                    format!("job {:?}: template.restart_policy", meta.name),
                    "a job's pods must end: use \"Never\" or \"OnFailure\"",
                ));
            }
            if j.spec.completions == 0 || j.spec.parallelism == 0 {
                return Err(invalid(
                    format!("job {:?}: completions", meta.name),
                    "completions and parallelism must be at least 1",
                ));
            }
            Ok(())
        }
        Object::Node(_) | Object::Namespace(_) | Object::Event(_) => Ok(()),
        // An image is only ever written by the master itself (never applied).
        Object::Image(_) => Ok(()),
        Object::Registry(r) => check_registry(&meta.name, &r.spec),
        Object::Service(s) => {
            let at = |f: &str| format!("service {:?}: {f}", meta.name);
            if s.spec.selector.is_empty() {
                return Err(invalid(
                    at("selector"),
                    "give the labels of the pods to serve, e.g. selector = { app = \"web\" }",
                ));
            }
            for (k, v) in &s.spec.selector {
                check_label(&at("selector"), k, v)?;
            }
            if s.spec.port == 0 || s.spec.target_port == 0 {
                return Err(invalid(
                    at("port"),
                    "port (where every node listens) and target_port (the pods' port) must be 1-65535",
                ));
            }
            if let Some(ip) = &s.spec.cluster_ip
                && ip != "None"
                && ip.parse::<std::net::Ipv4Addr>().is_err()
            {
                return Err(invalid(
                    at("cluster_ip"),
                    format!(
                        "{ip:?} is neither \"None\" (a headless service) nor an IPv4 address: \
                         write an address of the master's service range like \"10.43.0.20\", \
                         \"None\", or leave cluster_ip out and the master picks one"
                    ),
                ));
            }
            Ok(())
        }
        Object::ConfigMap(c) => check_data(
            &format!("configmap {:?}", meta.name),
            c.data.iter().map(|(k, v)| (k.as_str(), v.len())),
        ),
        Object::Secret(c) => check_data(
            &format!("secret {:?}", meta.name),
            c.data.iter().map(|(k, v)| (k.as_str(), v.len())),
        ),
        Object::Endpoints(_) | Object::Artifact(_) => Ok(()),
    }
}

/// Checks a host in image-reference syntax: `name[:port]`, DNS labels separated by dots (or an
/// IPv4 address, or `localhost`), optional port 1-65535.
pub fn check_registry_host(host: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{host:?} is not a registry host: write NAME[:PORT] as in image references, e.g. \"registry.lan:5000\" or \"docker.io\" (no scheme, no path)"
        )
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if let Some(p) = port
        && !p.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err(bad());
    }
    if name.is_empty() || name.len() > 253 {
        return Err(bad());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !name.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(())
}

/// Checks a `[[registry]]`: its host and mirror (`name[:port]`), the credentials secret
/// reference (`NAME` or `NAMESPACE/NAME`), and that `ca` holds at least one PEM certificate.
pub fn check_registry(
    name: &str,
    spec: &bramble_wire::objects::RegistrySpec,
) -> Result<(), Invalid> {
    let at = |f: &str| format!("registry {name:?}: {f}");
    check_registry_host(&spec.host).map_err(|e| invalid(at("host"), e))?;
    if let Some(m) = &spec.mirror {
        check_registry_host(m).map_err(|e| invalid(at("mirror"), e))?;
    }
    if let Some(c) = &spec.credentials {
        let hint = "write credentials = \"NAME\" (a secret in namespace default) or \"NAMESPACE/NAME\"; the secret holds keys username and password";
        let parts: Vec<&str> = c.split('/').collect();
        if parts.len() > 2 {
            return Err(invalid(at("credentials"), format!("{c:?}: {hint}")));
        }
        for part in parts {
            check_name(&at("credentials"), part)
                .map_err(|e| invalid(at("credentials"), format!("{c:?}: {}; {hint}", e.message)))?;
        }
    }
    if let Some(ca) = &spec.ca {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            if let Err(e) = c {
                return Err(invalid(
                    at("ca"),
                    format!(
                        "not valid PEM ({e}): paste the CA certificate(s) as -----BEGIN CERTIFICATE----- blocks"
                    ),
                ));
            }
            n += 1;
        }
        if n == 0 {
            return Err(invalid(
                at("ca"),
                "holds no certificate: paste the registry's CA certificate(s) as -----BEGIN CERTIFICATE----- blocks",
            ));
        }
    }
    Ok(())
}

/// Most bytes of data in one config map or secret (it travels in one frame).
pub const MAX_DATA_BYTES: usize = 48 * 1024;

/// Checks config map / secret keys (they become file names) and the total size.
fn check_data<'a>(
    what: &str,
    entries: impl Iterator<Item = (&'a str, usize)>,
) -> Result<(), Invalid> {
    let mut total = 0usize;
    for (k, len) in entries {
        if k.is_empty()
            || k == "."
            || k.starts_with("..")
            || k.len() > 253
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                format!("{what}: data.{k:?}"),
                "keys become file names: use 1-253 characters of a-z, A-Z, 0-9, '.', '_' and '-' (not \".\", not starting with \"..\")",
            ));
        }
        total += k.len() + len;
    }
    if total > MAX_DATA_BYTES {
        return Err(invalid(
            format!("{what}: data"),
            format!(
                "{total} bytes is over the {MAX_DATA_BYTES}-byte limit; split it, or ship large files in an artifact"
            ),
        ));
    }
    Ok(())
}

/// Checks a controller's pod template: a valid pod, with labels its selector matches.
fn check_template(
    kind: &str,
    name: &str,
    selector: &Labels,
    t: &PodTemplate,
) -> Result<(), Invalid> {
    let pod = Pod {
        meta: Meta {
            name: name.to_string(),
            labels: t.labels.clone(),
            ..Default::default()
        },
        spec: t.spec.clone(),
        ..Default::default()
    };
    check_pod(&pod).map_err(|e| Invalid {
        field: format!("{kind} {name:?}: template: {}", e.field),
        message: e.message,
    })?;
    for (k, v) in &t.labels {
        check_label(&format!("{kind} {name:?}: template.labels"), k, v)?;
    }
    if t.labels.is_empty() && selector.is_empty() {
        return Err(invalid(
            format!("{kind} {name:?}: template.labels"),
            "give the template labels (e.g. labels = { app = \"web\" }) so its pods can be found",
        ));
    }
    for (k, v) in selector {
        if t.labels.get(k) != Some(v) {
            return Err(invalid(
                format!("{kind} {name:?}: selector"),
                format!(
                    "selector {k}={v} does not match the template's labels; the pods would never be found"
                ),
            ));
        }
    }
    Ok(())
}

fn check_pod(p: &Pod) -> Result<(), Invalid> {
    let at = |f: &str| format!("pod {:?}: {f}", p.meta.name);
    if p.spec.processes.is_empty() {
        return Err(invalid(
            at("process"),
            "a pod needs at least one [[pod.process]]",
        ));
    }
    if p.spec.processes.len() > MAX_PROCESSES {
        return Err(invalid(
            at("process"),
            format!("at most {MAX_PROCESSES} processes per pod"),
        ));
    }
    if let Some(image) = &p.spec.image {
        if p.spec.rootfs.is_some() {
            return Err(invalid(
                at("image"),
                "image and rootfs exclude each other: the image is the pod's root; remove one of them",
            ));
        }
        if let Err(e) = bramble_wire::image_ref::ImageRef::parse(image) {
            return Err(invalid(at("image"), format!("{image:?}: {e}")));
        }
    }
    let es = p.spec.ephemeral_storage;
    if es != Default::default() && p.spec.image.is_none() {
        return Err(invalid(
            at("ephemeral_storage"),
            "ephemeral_storage and ephemeral_storage_limit apply to the writable layer of a pod with an image; \
             give the pod an image, or use an empty_dir volume",
        ));
    }
    if es.limit_bytes.is_some() && es.medium == bramble_wire::objects::StorageMedium::Disk {
        return Err(invalid(
            at("ephemeral_storage_limit"),
            "a cap is enforced on a tmpfs layer only (this version does not measure a layer on disk): \
             add ephemeral_storage = \"tmpfs\", or remove the limit",
        ));
    }
    if let Some(limit) = es.limit_bytes
        && !(1 << 20..=MAX_EPHEMERAL).contains(&limit)
    {
        return Err(invalid(
            at("ephemeral_storage_limit"),
            format!(
                "{limit} bytes: give between 1Mi and {}Gi",
                MAX_EPHEMERAL >> 30
            ),
        ));
    }
    match bramble_wire::objects::RootfsRef::parse(p.spec.rootfs.as_deref()) {
        Ok(bramble_wire::objects::RootfsRef::Artifact(name)) => {
            check_name(&at("rootfs"), name).map_err(|e| {
                invalid(
                    at("rootfs"),
                    format!("{}; write rootfs = \"artifact:NAME\" with the name given to bramble artifact push", e.message),
                )
            })?;
        }
        Ok(bramble_wire::objects::RootfsRef::Dir(dir)) => {
            check_host_path(&at("rootfs"), dir)?;
        }
        Ok(bramble_wire::objects::RootfsRef::Host) => {}
        Err(e) => {
            return Err(invalid(
                at("rootfs"),
                format!(
                    "{e}; write rootfs = \"artifact:NAME\" with the name given to bramble artifact push"
                ),
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, proc) in p.spec.processes.iter().enumerate() {
        check_name(&at(&format!("process[{i}].name")), &proc.name)?;
        if !seen.insert(proc.name.as_str()) {
            return Err(invalid(
                at(&format!("process[{i}].name")),
                format!(
                    "{:?} is used twice; process names must be unique",
                    proc.name
                ),
            ));
        }
        let from_image = p.spec.image.is_some() && proc.command.is_empty();
        if !from_image && (proc.command.is_empty() || proc.command[0].is_empty()) {
            if p.spec.image.is_some() {
                return Err(invalid(
                    at(&format!("process[{i}].command")),
                    "the program must not be empty: give it, e.g. [\"/bin/sh\", \"-c\", \"...\"], or leave command out to run the image's entrypoint",
                ));
            }
            return Err(invalid(
                at(&format!("process[{i}].command")),
                "give the program and its arguments, e.g. [\"/bin/sh\", \"-c\", \"...\"] (or image = \"REF\" on the pod to run the image's entrypoint)",
            ));
        }
        if proc
            .command
            .iter()
            .chain(&proc.args)
            .any(|a| a.contains('\0'))
            || proc.env.iter().any(|(k, v)| {
                k.contains('\0') || v.contains('\0') || k.contains('=') || k.is_empty()
            })
        {
            return Err(invalid(
                at(&format!("process[{i}]")),
                "command and env must not contain NUL bytes; env names must be non-empty and contain no '='",
            ));
        }
        if let Some(m) = proc.resources.memory_bytes
            && m < 1 << 20
        {
            return Err(invalid(
                at(&format!("process[{i}].memory")),
                "a memory limit under 1Mi cannot run a process; raise it",
            ));
        }
        check_security(&at(&format!("process[{i}]")), proc)?;
        for port in &proc.ports {
            if port.container_port == 0 || port.host_port == Some(0) {
                return Err(invalid(
                    at(&format!("process[{i}].ports")),
                    "port 0 is not a port",
                ));
            }
            if port.host_port.is_some() && p.spec.network == NetworkMode::None {
                return Err(invalid(
                    at(&format!("process[{i}].ports")),
                    "host_port needs a network: a pod with network = \"none\" has only loopback, \
                     so nothing can reach it on the node's port; use network = \"isolated\" \
                     (the node forwards the port to the pod) or \"host\"",
                ));
            }
        }
        for (what, probe) in [("liveness", &proc.liveness), ("readiness", &proc.readiness)] {
            if let Some(probe) = probe {
                check_probe(
                    &at(&format!("process[{i}].{what}")),
                    probe,
                    what == "liveness",
                )?;
            }
        }
    }
    if let Some(node) = &p.spec.node_name {
        check_name(&at("node"), node)?;
    }
    for (k, v) in &p.spec.node_selector {
        check_label(&at("node_selector"), k, v)?;
    }
    check_pod_refs(p)
}

/// Pod-side checks: volume names and mount paths, the names of the config maps and secrets that
/// volumes and `env_from` refer to, and `env_from` prefixes.
pub fn check_pod_refs(p: &Pod) -> Result<(), Invalid> {
    let at = |f: &str| format!("pod {:?}: {f}", p.meta.name);
    let mut seen = BTreeSet::new();
    for (i, v) in p.spec.volumes.iter().enumerate() {
        check_name(&at(&format!("volume[{i}].name")), &v.name)?;
        if !seen.insert(v.name.as_str()) {
            return Err(invalid(
                at(&format!("volume[{i}].name")),
                format!("{:?} is used twice; volume names must be unique", v.name),
            ));
        }
        let mp = &v.mount_path;
        if !mp.starts_with('/')
            || mp == "/"
            || mp.contains('\0')
            || mp.split('/').any(|c| c == "..")
        {
            return Err(invalid(
                at(&format!("volume[{i}].mount_path")),
                format!(
                    "{mp:?} must be an absolute path inside the pod other than \"/\", without \"..\""
                ),
            ));
        }
        match &v.source {
            VolumeSource::HostPath { path, .. } => {
                check_host_path(&at(&format!("volume[{i}].host_path")), path)?
            }
            VolumeSource::ConfigMap { name } => {
                check_name(&at(&format!("volume[{i}].configmap")), name)?
            }
            VolumeSource::Secret { name } => check_name(&at(&format!("volume[{i}].secret")), name)?,
            _ => {}
        }
    }
    for (i, proc) in p.spec.processes.iter().enumerate() {
        for (j, e) in proc.env_from.iter().enumerate() {
            let field = at(&format!("process[{i}].env_from[{j}]"));
            let (name, prefix) = match e {
                EnvFrom::ConfigMap { name, prefix } | EnvFrom::Secret { name, prefix } => {
                    (name, prefix)
                }
            };
            check_name(&field, name)?;
            if !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(invalid(
                    format!("{field}.prefix"),
                    format!("{prefix:?}: use letters, digits and '_' only"),
                ));
            }
        }
    }
    Ok(())
}

/// What a namespace's [`PodSecurity`] level refuses of a pod spec (Kubernetes' Pod Security
/// "baseline": no privileged pods, no host namespaces, no capabilities beyond the default set, no
/// unconfined seccomp).
/// `what` names the object, e.g. `deployment "web"`.
pub fn check_pod_security(
    what: &str,
    namespace: &str,
    level: PodSecurity,
    spec: &PodSpec,
) -> Result<(), Invalid> {
    if level == PodSecurity::Privileged {
        return Ok(());
    }
    let fix = format!(
        "namespace {namespace:?} has pod_security = \"baseline\": remove it from the pod, or run the pod in a namespace with pod_security = \"privileged\""
    );
    if let Some(&opt) = spec.opt_outs().first() {
        let field = if opt == "host_network" {
            "network"
        } else {
            opt
        };
        let shown = if opt == "host_network" {
            "network = \"host\"".to_string()
        } else {
            format!("{opt} = true")
        };
        return Err(invalid(
            format!("{what}: {field}"),
            format!("{shown} is refused: {fix}"),
        ));
    }
    for p in &spec.processes {
        if p.seccomp == bramble_wire::security::SeccompProfile::Unconfined {
            return Err(invalid(
                format!("{what}: process {:?}: seccomp", p.name),
                format!("seccomp = \"unconfined\" is refused: {fix}"),
            ));
        }
        let extra = p.capabilities.add.minus(CapSet::DEFAULT);
        if !extra.is_empty() {
            let names: Vec<_> = extra.names().collect();
            return Err(invalid(
                format!("{what}: process {:?}: capabilities.add", p.name),
                format!(
                    "{} beyond the default set is refused: {fix}",
                    names.join(", ")
                ),
            ));
        }
        // Kubernetes' baseline refuses host ports too: an isolated pod may claim one.
        if let Some(port) = p.ports.iter().find_map(|port| port.host_port) {
            return Err(invalid(
                format!("{what}: process {:?}: ports", p.name),
                format!("host_port = {port} is refused: {fix} (or put a [[service]] in front)"),
            ));
        }
    }
    Ok(())
}

/// A path on the node (`host_path`, a `rootfs` directory): absolute, without `.` or `..`
/// components or NUL bytes, so it names one place whatever the worker's working directory.
pub fn check_host_path(field: &str, path: &str) -> Result<(), Invalid> {
    if !path.starts_with('/')
        || path.contains('\0')
        || path.split('/').any(|c| c == ".." || c == ".")
    {
        return Err(invalid(
            field,
            format!(
                "{path:?} must be an absolute path on the node without \".\" or \"..\" components, e.g. \"/srv/data\""
            ),
        ));
    }
    Ok(())
}

/// Most supplementary groups a process may list.
pub const MAX_SUPPLEMENTARY_GROUPS: usize = 32;

/// A user or group name as `/etc/passwd` and `/etc/group` hold them (POSIX portable names).
fn check_id(field: &str, id: &IdRef) -> Result<(), Invalid> {
    match id {
        IdRef::Id(u32::MAX) => Err(invalid(
            field,
            "4294967295 is not an id (the kernel reserves it as \"no id\"): ids go from 0 to 4294967294",
        )),
        IdRef::Id(_) => Ok(()),
        IdRef::Name(n) => {
            let ok = !n.is_empty()
                && n.len() <= 32
                && !n.starts_with('-')
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if ok {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!(
                        "{n:?} is not a user or group name: use 1 to 32 letters, digits, '_', '-' or '.', or a number"
                    ),
                ))
            }
        }
    }
}

/// A process's user, groups and capabilities.
fn check_security(at: &str, proc: &bramble_wire::objects::ProcessSpec) -> Result<(), Invalid> {
    if let Some(u) = &proc.user {
        check_id(&format!("{at}.user"), u)?;
    }
    if let Some(g) = &proc.group {
        check_id(&format!("{at}.group"), g)?;
    }
    if proc.supplementary_groups.len() > MAX_SUPPLEMENTARY_GROUPS {
        return Err(invalid(
            format!("{at}.supplementary_groups"),
            format!("at most {MAX_SUPPLEMENTARY_GROUPS} groups"),
        ));
    }
    for g in &proc.supplementary_groups {
        check_id(&format!("{at}.supplementary_groups"), g)?;
    }
    if proc.run_as_non_root && proc.user == Some(IdRef::Id(0)) {
        return Err(invalid(
            format!("{at}.run_as_non_root"),
            "the process runs as user 0 (root) and asks to run as non-root: give another user or drop run_as_non_root",
        ));
    }
    for (what, set) in [
        ("add", proc.capabilities.add),
        ("drop", proc.capabilities.drop),
    ] {
        if !CapSet::ALL.contains(set) {
            return Err(invalid(
                format!("{at}.capabilities.{what}"),
                "names a capability number this build does not know",
            ));
        }
    }
    Ok(())
}

/// Shortest probe period: a tighter loop costs the board more than it tells.
pub const MIN_PROBE_PERIOD_MS: u32 = 100;

/// Checks a liveness or readiness probe; `field` is like `pod "web": process[0].readiness`.
fn check_probe(field: &str, p: &Probe, liveness: bool) -> Result<(), Invalid> {
    let at = |f: &str| format!("{field}.{f}");
    match &p.action {
        ProbeAction::Exec(cmd) => {
            if cmd.first().is_none_or(|c| c.is_empty()) {
                return Err(invalid(
                    at("exec"),
                    "give the program and its arguments, e.g. exec = [\"cat\", \"/tmp/healthy\"]",
                ));
            }
            if cmd.iter().any(|a| a.contains('\0')) {
                return Err(invalid(at("exec"), "must not contain NUL bytes"));
            }
        }
        ProbeAction::Tcp { port } => {
            if *port == 0 {
                return Err(invalid(
                    at("tcp"),
                    "port 0 is not a port: give the port the process listens on",
                ));
            }
        }
        ProbeAction::Http { port, path } => {
            if *port == 0 {
                return Err(invalid(
                    at("http.port"),
                    "port 0 is not a port: give the port the process listens on",
                ));
            }
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    at("http.path"),
                    format!(
                        "{path:?} is not a request path: start it with '/' and use no spaces or control characters, e.g. \"/healthz\""
                    ),
                ));
            }
        }
    }
    if p.period_ms < MIN_PROBE_PERIOD_MS {
        return Err(invalid(
            at("period"),
            format!(
                "{}ms is too short: probe at most every {MIN_PROBE_PERIOD_MS}ms",
                p.period_ms
            ),
        ));
    }
    if p.timeout_ms == 0 || p.timeout_ms > p.period_ms {
        return Err(invalid(
            at("timeout"),
            format!(
                "{}ms must be between 1ms and the period ({}ms): a check must end before the next one",
                p.timeout_ms, p.period_ms
            ),
        ));
    }
    if p.failure_threshold == 0 {
        return Err(invalid(at("failure_threshold"), "must be at least 1"));
    }
    if p.success_threshold == 0 {
        return Err(invalid(at("success_threshold"), "must be at least 1"));
    }
    if liveness && p.success_threshold != 1 {
        return Err(invalid(
            at("success_threshold"),
            "must be 1 for a liveness probe (a live process is not restarted, so there is nothing to wait for)",
        ));
    }
    Ok(())
}

/// Whether `kind` may be written by clients through apply.
pub fn client_may_apply(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::ReplicaSet | Kind::Event | Kind::Endpoints | Kind::Artifact | Kind::Image
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "web-1", "x".repeat(63).as_str()] {
            assert!(check_name("f", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            let e = check_name("pod.name", bad).unwrap_err();
            assert!(e.to_string().starts_with("pod.name: "), "{e}");
        }
    }

    #[test]
    fn sizes() {
        let check = |s: &str, want: Result<u64, ()>| {
            assert_eq!(parse_bytes(s).map_err(|_| ()), want, "{s}")
        };
        check("64Mi", Ok(64 << 20));
        check("1Gi", Ok(1 << 30));
        check("1000", Ok(1000));
        check("5k", Ok(5000));
        check("5KB", Err(()));
        check("Mi", Err(()));
        check("-1", Err(()));
        check("99999999999999Ti", Err(()));
        assert!(parse_bytes("5KB").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn cpus() {
        let check =
            |s: &str, want: Result<u32, ()>| assert_eq!(parse_cpu(s).map_err(|_| ()), want, "{s}");
        check("250m", Ok(250));
        check("1", Ok(1000));
        check("0.5", Ok(500));
        check("2.25", Ok(2250));
        check(".1", Ok(100));
        check("0", Err(()));
        check("1.2345", Err(()));
        check("abc", Err(()));
        check("m", Err(()));
    }

    #[test]
    fn format() {
        assert_eq!(format_bytes(32 << 20), "32Mi");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(1000), "1000");
    }

    #[test]
    fn cluster_domains() {
        assert_eq!(check_domain("bramble.local").unwrap(), "bramble.local");
        assert_eq!(
            check_domain("Cluster.Example.org.").unwrap(),
            "cluster.example.org"
        );
        for bad in [
            "",
            ".",
            "a..b",
            "-a.b",
            "a_b.c",
            "a b",
            &"x".repeat(64),
            &"ab.".repeat(70),
        ] {
            assert!(
                check_domain(bad).unwrap_err().contains("not a DNS domain"),
                "{bad:?}"
            );
        }
    }

    fn image_pod(image: Option<&str>, rootfs: Option<&str>, command: &[&str]) -> Object {
        use bramble_wire::objects::{PodSpec, ProcessSpec};
        Object::Pod(Pod {
            meta: Meta {
                name: "p".into(),
                namespace: "default".into(),
                ..Default::default()
            },
            spec: PodSpec {
                image: image.map(str::to_string),
                rootfs: rootfs.map(str::to_string),
                processes: vec![ProcessSpec {
                    name: "main".into(),
                    command: command.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn pod_images() {
        // An image supplies the command: it may be left out.
        check_object(&image_pod(Some("alpine:3.20"), None, &[])).unwrap();
        check_object(&image_pod(
            Some("registry.lan:5000/app:1.4"),
            None,
            &["/app"],
        ))
        .unwrap();
        // Without an image the command is required.
        let e = check_object(&image_pod(None, None, &[])).unwrap_err();
        assert!(e.field.contains("process[0].command"), "{e}");
        // image and rootfs are exclusive.
        let e = check_object(&image_pod(Some("alpine"), Some("artifact:x"), &[])).unwrap_err();
        assert!(e.message.contains("exclude each other"), "{e}");
        // An unparsable reference names the fix.
        let e = check_object(&image_pod(Some("Bad Ref"), None, &[])).unwrap_err();
        assert!(
            e.field.contains("image") && e.message.contains("expected"),
            "{e}"
        );
        // An empty program is refused even with an image.
        let e = check_object(&image_pod(Some("alpine"), None, &[""])).unwrap_err();
        assert!(e.message.contains("entrypoint"), "{e}");
        // A writable layer's medium and cap: only with an image, a cap in range.
        let with_storage = |image: Option<&str>, medium, limit_bytes| {
            let mut o = image_pod(image, None, &["/app"]);
            if let Object::Pod(p) = &mut o {
                p.spec.ephemeral_storage = bramble_wire::objects::EphemeralStorage {
                    medium,
                    limit_bytes,
                };
            }
            o
        };
        use bramble_wire::objects::StorageMedium::{Disk, Tmpfs};
        check_object(&with_storage(Some("alpine"), Tmpfs, Some(256 << 20))).unwrap();
        check_object(&with_storage(Some("alpine"), Disk, None)).unwrap();
        let e = check_object(&with_storage(Some("alpine"), Disk, Some(1 << 30))).unwrap_err();
        assert!(e.message.contains("tmpfs"), "{e}");
        let e = check_object(&with_storage(None, Tmpfs, None)).unwrap_err();
        assert!(e.message.contains("empty_dir"), "{e}");
        let e = check_object(&with_storage(Some("alpine"), Tmpfs, Some(4096))).unwrap_err();
        assert!(e.field.contains("ephemeral_storage_limit"), "{e}");
    }

    #[test]
    fn registries() {
        use bramble_wire::objects::{Registry, RegistrySpec};
        let reg = |spec: RegistrySpec| {
            Object::Registry(Registry {
                meta: Meta {
                    name: "lan".into(),
                    ..Default::default()
                },
                spec,
            })
        };
        let ok = |host: &str| RegistrySpec {
            host: host.into(),
            ..Default::default()
        };
        for h in [
            "docker.io",
            "registry.lan:5000",
            "localhost:5000",
            "10.0.0.1:443",
            "ghcr.io",
        ] {
            check_object(&reg(ok(h))).unwrap();
        }
        for h in ["", "http://x", "x/y", "x:0", "x:99999", "-a.b", "a b", "x:"] {
            let e = check_object(&reg(ok(h))).unwrap_err();
            assert!(e.message.contains("NAME[:PORT]"), "{h}: {e}");
        }
        let mut s = ok("registry.lan");
        s.mirror = Some("mirror.lan:5000".into());
        s.credentials = Some("infra/regcred".into());
        check_object(&reg(s.clone())).unwrap();
        s.credentials = Some("regcred".into());
        check_object(&reg(s.clone())).unwrap();
        for bad in ["a/b/c", "Reg", "ns/"] {
            s.credentials = Some(bad.into());
            let e = check_object(&reg(s.clone())).unwrap_err();
            assert!(e.field.contains("credentials"), "{bad}: {e}");
        }
        s.credentials = None;
        s.mirror = Some("https://m".into());
        assert!(
            check_object(&reg(s.clone()))
                .unwrap_err()
                .field
                .contains("mirror")
        );
        s.mirror = None;
        s.ca = Some("not a certificate".into());
        let e = check_object(&reg(s.clone())).unwrap_err();
        assert!(e.message.contains("no certificate"), "{e}");
        let cert = test_ca_pem();
        s.ca = Some(cert);
        check_object(&reg(s)).unwrap();
    }

    /// A self-signed certificate (PEM) made once with openssl for these tests.
    fn test_ca_pem() -> String {
        concat!(
            "-----BEGIN CERTIFICATE-----\n",
            "MIIBeDCCAR+gAwIBAgIUNFE3ECu1uwRFvotzjeKP0XEBz4EwCgYIKoZIzj0EAwIw\n",
            "EjEQMA4GA1UEAwwHdGVzdC1jYTAeFw0yNjEyMDcxNjI4MzhaFw0zNjEyMDQxNjI4\n",
            "MzhaMBIxEDAOBgNVBAMMB3Rlc3QtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC\n",
            "AAToUzxAaPsgQfmLVV9IDtdImtbrw6CaQvlWV/4Th0kiDPDHAjXX5PnLWm3SJa1C\n",
            "oBRDvZZTHIZZKjA6yVEQAT63o1MwUTAdBgNVHQ4EFgQUustxPlSL851GBg08tCIE\n",
            "grM++VowHwYDVR0jBBgwFoAUustxPlSL851GBg08tCIEgrM++VowDwYDVR0TAQH/\n",
            "BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiBRuM+mHBQLLu1GrtUxh9OWrN7OtFEF\n",
            "BcT+nbqB76TkoQIgImyykOBPr0ShEYt7MvMpvYDdvwuszJoYlpw5Fupnf4s=\n",
            "-----END CERTIFICATE-----\n",
        )
        .to_string()
    }
}
