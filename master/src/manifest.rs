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
    Arch, Labels, Meta, Namespace, NetworkMode, Node, NodeSpec, Object, Pod, PodSpec, Port,
    ProcessSpec, Resources, RestartPolicy, Taint, TaintEffect, Toleration, Volume, VolumeSource,
};
use serde::{Deserialize, Deserializer};

use crate::validate;

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceM {
    #[serde(deserialize_with = "de_name")]
    name: String,
    #[serde(default)]
    labels: Labels,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeM {
    #[serde(deserialize_with = "de_name")]
    name: String,
    #[serde(default)]
    labels: Labels,
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
    restart_policy: RestartPolicy,
    #[serde(default)]
    node_selector: Labels,
    #[serde(default)]
    tolerations: Vec<TolerationM>,
    #[serde(default, deserialize_with = "de_arch")]
    arch: Option<Arch>,
    rootfs: Option<String>,
    #[serde(default, deserialize_with = "de_network")]
    network: NetworkMode,
    #[serde(default, deserialize_with = "de_opt_duration_ms")]
    termination_grace: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_name")]
    node: Option<String>,
    #[serde(default)]
    process: Vec<ProcessM>,
    #[serde(default)]
    volume: Vec<VolumeM>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessM {
    #[serde(deserialize_with = "de_name")]
    name: String,
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    user: Option<u32>,
    group: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_bytes")]
    memory: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_cpu")]
    cpu: Option<u32>,
    pids: Option<u32>,
    #[serde(default)]
    ports: Vec<PortM>,
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

fn de_network<'de, D: Deserializer<'de>>(d: D) -> Result<NetworkMode, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "host" => Ok(NetworkMode::Host),
        "none" => Ok(NetworkMode::None),
        "isolated" => Ok(NetworkMode::Isolated),
        _ => Err(serde::de::Error::custom(format!(
            "unknown network {s:?}: use \"host\", \"none\" or \"isolated\""
        ))),
    }
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
                meta: meta(n.name, String::new(), n.labels),
                ..Default::default()
            }));
        }
        for n in self.node {
            out.push(Object::Node(Node {
                meta: meta(n.name, String::new(), n.labels),
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
                },
                status: Default::default(),
            }));
        }
        for p in self.pod {
            let ns = p.namespace.unwrap_or_else(|| default_ns.to_string());
            let processes = p
                .process
                .into_iter()
                .map(|pr| ProcessSpec {
                    name: pr.name,
                    command: pr.command,
                    env: pr.env.into_iter().collect(),
                    workdir: pr.workdir,
                    user: pr.user,
                    group: pr.group,
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
                })
                .collect();
            let mut volumes = Vec::new();
            for v in p.volume {
                let source = match (v.host_path, v.empty_dir) {
                    (Some(path), false) => VolumeSource::HostPath {
                        path,
                        read_only: v.read_only,
                    },
                    (None, true) => VolumeSource::EmptyDir,
                    _ => {
                        return Err(format!(
                            "pod {:?}: volume {:?}: give exactly one of host_path = \"/dir\" or empty_dir = true",
                            p.name, v.name
                        ));
                    }
                };
                volumes.push(Volume {
                    name: v.name,
                    mount_path: v.mount_path,
                    source,
                });
            }
            out.push(Object::Pod(Pod {
                meta: meta(p.name, ns, p.labels),
                spec: PodSpec {
                    processes,
                    restart_policy: p.restart_policy,
                    node_selector: p.node_selector,
                    tolerations: p
                        .tolerations
                        .into_iter()
                        .map(|t| Toleration {
                            key: t.key,
                            value: t.value,
                            effect: t.effect,
                        })
                        .collect(),
                    arch: p.arch,
                    rootfs: p.rootfs,
                    network: p.network,
                    volumes,
                    termination_grace_ms: p.termination_grace.unwrap_or(DEFAULT_GRACE_MS),
                    node_name: p.node,
                },
                status: Default::default(),
            }));
        }
        for o in &out {
            validate::check_object(o).map_err(|e| e.to_string())?;
        }
        Ok(out)
    }
}

fn meta(name: String, namespace: String, labels: Labels) -> Meta {
    Meta {
        name,
        namespace,
        labels,
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
            "{origin}: no objects: write [[pod]], [[namespace]] or [[node]] tables"
        ));
    }
    Ok(objs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"
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
        let e = err("[[pod]]\nname = \"a\"\n");
        assert!(e.contains("at least one"), "{e}");
        let e = err("");
        assert!(e.contains("no objects"), "{e}");
        let e = err("[[deployment]]\nname = \"a\"\n");
        assert!(e.contains("deployment"), "{e}");
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
}
