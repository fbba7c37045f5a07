//! Config maps and secrets on the master side, pure: their manifest tables, which of them a set
//! of pods references, and base64 (the JSON form the CLI prints is [`crate::doc`]).
//! The pod-side checks (volumes and `env_from` that name them) are in
//! [`crate::validate`].

use std::collections::{BTreeMap, BTreeSet};

use bramble_wire::objects::{
    ConfigMap, EnvFrom, Labels, Meta, Object, Pod, PodSpec, Secret, VolumeSource,
};
use serde::Deserialize;

/// `[[configmap]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigMapM {
    name: String,
    namespace: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// `[[secret]]`: `data` for text, `data_base64` for binary values.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretM {
    name: String,
    namespace: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default)]
    data_base64: BTreeMap<String, String>,
}

/// One `env_from` entry of a process: `{ configmap = "web", prefix = "WEB_" }` or
/// `{ secret = "db" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvFromM {
    configmap: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    prefix: String,
}

impl ConfigMapM {
    pub(crate) fn into_object(self, default_ns: &str) -> Object {
        Object::ConfigMap(ConfigMap {
            meta: meta(
                self.name,
                self.namespace,
                default_ns,
                self.labels,
                self.annotations,
            ),
            data: self.data,
        })
    }
}

impl SecretM {
    pub(crate) fn into_object(self, default_ns: &str) -> Result<Object, String> {
        let what = format!("secret {:?}", self.name);
        let mut data: BTreeMap<String, Vec<u8>> = self
            .data
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        for (k, v) in self.data_base64 {
            let bytes = base64_decode(&v).map_err(|e| format!("{what}: data_base64.{k:?}: {e}"))?;
            if data.insert(k.clone(), bytes).is_some() {
                return Err(format!(
                    "{what}: key {k:?} is in both data and data_base64: keep one"
                ));
            }
        }
        Ok(Object::Secret(Secret {
            meta: meta(
                self.name,
                self.namespace,
                default_ns,
                self.labels,
                self.annotations,
            ),
            data,
        }))
    }
}

impl EnvFromM {
    pub(crate) fn into_wire(self, what: &str) -> Result<EnvFrom, String> {
        match (self.configmap, self.secret) {
            (Some(name), None) => Ok(EnvFrom::ConfigMap {
                name,
                prefix: self.prefix,
            }),
            (None, Some(name)) => Ok(EnvFrom::Secret {
                name,
                prefix: self.prefix,
            }),
            _ => Err(format!(
                "{what}: env_from: give exactly one of configmap = \"NAME\" or secret = \"NAME\" in each entry"
            )),
        }
    }
}

fn meta(
    name: String,
    ns: Option<String>,
    default_ns: &str,
    labels: Labels,
    annotations: Labels,
) -> Meta {
    Meta {
        name,
        namespace: ns.unwrap_or_else(|| default_ns.to_string()),
        labels,
        annotations,
        ..Default::default()
    }
}

/// The source of a `[[pod.volume]]` that names a config map or a secret, if it does.
pub(crate) fn volume_source(
    what: &str,
    volume: &str,
    configmap: Option<String>,
    secret: Option<String>,
) -> Result<Option<VolumeSource>, String> {
    match (configmap, secret) {
        (None, None) => Ok(None),
        (Some(name), None) => Ok(Some(VolumeSource::ConfigMap { name })),
        (None, Some(name)) => Ok(Some(VolumeSource::Secret { name })),
        (Some(_), Some(_)) => Err(format!(
            "{what}: volume {volume:?}: give only one of configmap = \"NAME\" or secret = \"NAME\""
        )),
    }
}

/// The config maps and secrets (namespace, name) that pods use.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refs {
    /// Config maps.
    pub config_maps: BTreeSet<(String, String)>,
    /// Secrets.
    pub secrets: BTreeSet<(String, String)>,
}

impl Refs {
    /// Adds what `spec` (of a pod in `ns`) refers to.
    pub fn add(&mut self, ns: &str, spec: &PodSpec) {
        for v in &spec.volumes {
            match &v.source {
                VolumeSource::ConfigMap { name } => {
                    self.config_maps.insert((ns.to_string(), name.clone()));
                }
                VolumeSource::Secret { name } => {
                    self.secrets.insert((ns.to_string(), name.clone()));
                }
                _ => {}
            }
        }
        for p in &spec.processes {
            for e in &p.env_from {
                match e {
                    EnvFrom::ConfigMap { name, .. } => {
                        self.config_maps.insert((ns.to_string(), name.clone()));
                    }
                    EnvFrom::Secret { name, .. } => {
                        self.secrets.insert((ns.to_string(), name.clone()));
                    }
                }
            }
        }
    }

    /// What `pods` refer to.
    pub fn of(pods: &[Pod]) -> Refs {
        let mut r = Refs::default();
        for p in pods {
            r.add(&p.meta.namespace, &p.spec);
        }
        r
    }

    /// Whether nothing is referenced.
    pub fn is_empty(&self) -> bool {
        self.config_maps.is_empty() && self.secrets.is_empty()
    }
}

/// The objects of `all` (config maps and secrets of any namespace) that `refs` names, sorted.
pub fn select(refs: &Refs, all: Vec<Object>) -> (Vec<ConfigMap>, Vec<Secret>) {
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for o in all {
        match o {
            Object::ConfigMap(c)
                if refs
                    .config_maps
                    .contains(&(c.meta.namespace.clone(), c.meta.name.clone())) =>
            {
                cms.push(c)
            }
            Object::Secret(s)
                if refs
                    .secrets
                    .contains(&(s.meta.namespace.clone(), s.meta.name.clone())) =>
            {
                secrets.push(s)
            }
            _ => {}
        }
    }
    let key = |m: &Meta| (m.namespace.clone(), m.name.clone());
    cms.sort_by_key(|c| key(&c.meta));
    secrets.sort_by_key(|s| key(&s.meta));
    (cms, secrets)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional, whitespace ignored).
pub fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    let mut pad = false;
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            pad = true;
            continue;
        }
        let v = match B64.iter().position(|&x| x == c) {
            Some(v) if !pad => v as u32,
            _ => {
                return Err(format!(
                    "not base64 (character {:?}): encode binary values with `base64 -w0 FILE`",
                    c as char
                ));
            }
        };
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return Err("not base64: its length is wrong (truncated?)".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0, 255, 7],
        ] {
            let e = base64_encode(data);
            assert_eq!(base64_decode(&e).unwrap(), data, "{e}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert!(base64_decode("Zm9v!").is_err());
        assert!(base64_decode("Z").is_err());
    }

    #[test]
    fn secret_json_hides_values_unless_revealed() {
        let mut s = Secret::default();
        s.meta.name = "db".into();
        s.data.insert("password".into(), b"hunter2".to_vec());
        s.data.insert("key".into(), vec![0, 159, 146, 150]);
        let o = Object::Secret(s);
        let hidden = crate::doc::to_doc(&o, false).to_string();
        assert!(!hidden.contains("hunter2"), "{hidden}");
        assert!(hidden.contains("7 bytes"), "{hidden}");
        let shown = crate::doc::to_doc(&o, true);
        assert_eq!(shown["data"]["password"], "hunter2");
        assert_eq!(shown["data_base64"]["key"], "AJ+Slg==");
    }
}

#[cfg(test)]
mod manifest_tests {
    use bramble_wire::objects::{EnvFrom, Object, VolumeSource};

    const M: &str = r#"
[[configmap]]
name = "web-config"
labels = { app = "web" }
data = { "index.html" = "<h1>hi</h1>", mode = "fast" }

[[secret]]
name = "db"
namespace = "prod"
data = { password = "hunter2" }
data_base64 = { "key.bin" = "AJ+Slg==" }

[[pod]]
name = "web"
[[pod.process]]
name = "main"
command = ["/bin/sh"]
env_from = [{ configmap = "web-config", prefix = "WEB_" }, { secret = "db" }]
[[pod.volume]]
name = "site"
mount_path = "/srv/site"
configmap = "web-config"
[[pod.volume]]
name = "creds"
mount_path = "/run/creds"
secret = "db"
"#;

    fn err(text: &str) -> String {
        crate::manifest::parse(text, "m.toml", "default").unwrap_err()
    }

    #[test]
    fn configmaps_secrets_volumes_and_env_from_parse() {
        let objs = crate::manifest::parse(M, "m.toml", "default").unwrap();
        let cm = objs
            .iter()
            .find_map(|o| match o {
                Object::ConfigMap(c) => Some(c),
                _ => None,
            })
            .unwrap();
        assert_eq!(cm.meta.namespace, "default");
        assert_eq!(cm.data["index.html"], "<h1>hi</h1>");
        let s = objs
            .iter()
            .find_map(|o| match o {
                Object::Secret(s) => Some(s),
                _ => None,
            })
            .unwrap();
        assert_eq!(s.meta.namespace, "prod");
        assert_eq!(s.data["password"], b"hunter2");
        assert_eq!(s.data["key.bin"], [0, 0x9f, 0x92, 0x96]);
        let p = objs
            .iter()
            .find_map(|o| match o {
                Object::Pod(p) => Some(p),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            p.spec.volumes[0].source,
            VolumeSource::ConfigMap {
                name: "web-config".into()
            }
        );
        assert_eq!(
            p.spec.volumes[1].source,
            VolumeSource::Secret { name: "db".into() }
        );
        assert_eq!(
            p.spec.processes[0].env_from,
            vec![
                EnvFrom::ConfigMap {
                    name: "web-config".into(),
                    prefix: "WEB_".into()
                },
                EnvFrom::Secret {
                    name: "db".into(),
                    prefix: String::new()
                }
            ]
        );
        let refs = super::Refs::of(std::slice::from_ref(p));
        assert!(
            refs.config_maps
                .contains(&("default".into(), "web-config".into()))
        );
        assert!(refs.secrets.contains(&("default".into(), "db".into())));
    }

    #[test]
    fn bad_config_input_is_refused_with_the_fix() {
        let pod = |extra: &str| {
            format!(
                "[[pod]]\nname = \"p\"\n[[pod.process]]\nname = \"m\"\ncommand = [\"/bin/true\"]\n{extra}"
            )
        };
        let e = err(&pod(
            "[[pod.volume]]\nname = \"v\"\nmount_path = \"/x\"\nconfigmap = \"a\"\nsecret = \"b\"\n",
        ));
        assert!(e.contains("only one of configmap"), "{e}");
        let e = err(&pod(
            "[[pod.volume]]\nname = \"v\"\nmount_path = \"/x\"\nconfigmap = \"Bad_Name\"\n",
        ));
        assert!(e.contains("line"), "names are checked while parsing: {e}");
        let e = err(&pod(
            "[[pod.volume]]\nname = \"v\"\nmount_path = \"x/../y\"\nempty_dir = true\n",
        ));
        assert!(e.contains("absolute path"), "{e}");
        let e = err(&pod("env_from = [{ prefix = \"A\" }]\n"));
        assert!(e.contains("exactly one of configmap"), "{e}");
        let e = err(&pod("env_from = [{ secret = \"db\", prefix = \"A-\" }]\n"));
        assert!(e.contains("prefix"), "{e}");
        let e = err("[[secret]]\nname = \"s\"\ndata_base64 = { k = \"@@\" }\n");
        assert!(e.contains("not base64"), "{e}");
        let e =
            err("[[secret]]\nname = \"s\"\ndata = { k = \"a\" }\ndata_base64 = { k = \"YQ==\" }\n");
        assert!(e.contains("both data and data_base64"), "{e}");
        let e = err("[[configmap]]\nname = \"c\"\ndata = { \"..data\" = \"x\" }\n");
        assert!(e.contains("file names"), "{e}");
        let big = "x".repeat(49 * 1024);
        let e = err(&format!(
            "[[configmap]]\nname = \"c\"\ndata = {{ k = \"{big}\" }}\n"
        ));
        assert!(e.contains("limit"), "{e}");
    }
}
