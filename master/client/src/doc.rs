//! Objects as Kubernetes-shaped documents (`-o json`, `-o yaml`, `apply -f x.yaml`, `edit`).
//!
//! One object is `{"apiVersion": "bramble.io/v1", "kind": "Pod", "metadata": {...}, "spec":
//! {...}, "status": {...}}`; kinds without a spec keep their own top-level fields (a config map's
//! `data`, a namespace's `phase`). The fields under them are the wire object's own, named as in
//! the wire types (snake_case), so nothing is translated by hand and nothing is lost. A list is
//! always `{"apiVersion": "v1", "kind": "List", "items": [...]}`, also for one element or none.
//!
//! Reading back ([`from_doc`], [`parse`]): fields the document leaves out take the TOML manifest's
//! defaults (a deployment's `replicas = 1`, a pod's `network = "isolated"`...), an unknown field
//! is an error naming its path, and a secret whose values were hidden (`-o yaml` without
//! `--reveal`) is refused rather than applied with the placeholders. `metadata.revision`, when
//! non-zero, is the apply's precondition (as in a TOML manifest): `get -o yaml | apply -f -` is
//! a no-op, and an object changed since it was read is a conflict, not a silent overwrite.

use std::collections::BTreeMap;

use bramble_wire::objects::{Kind, Object};
use serde_json::{Map, Value};

use crate::config_data::{base64_decode, base64_encode};

/// `apiVersion` of every object.
pub const API_VERSION: &str = "bramble.io/v1";
/// `apiVersion` of a `List`, as in Kubernetes.
pub const LIST_API_VERSION: &str = "v1";

const HIDDEN_PREFIX: &str = "(hidden: ";

/// The `kind` value of a kind: `Pod`, `ReplicaSet`, `ConfigMap`...
pub fn kind_name(kind: Kind) -> String {
    match serde_json::to_value(kind) {
        Ok(Value::String(s)) => s,
        _ => kind.as_str().to_string(),
    }
}

/// Parses a document's `kind` (`Pod`, and for hand-written documents also `pod`, `pods`).
pub fn parse_kind_name(s: &str) -> Option<Kind> {
    Kind::ALL
        .into_iter()
        .find(|k| kind_name(*k) == s)
        .or_else(|| Kind::parse(&s.to_ascii_lowercase()))
}

/// `o` as a document. A secret's values are replaced by their sizes unless `reveal`; revealed,
/// UTF-8 values are text in `data`, others base64 in `data_base64` (the manifest's two fields).
pub fn to_doc(o: &Object, reveal: bool) -> Value {
    let tagged = serde_json::to_value(o).unwrap_or(Value::Null);
    let mut inner = match tagged {
        Value::Object(m) => m.into_iter().next().map(|(_, v)| v),
        _ => None,
    }
    .and_then(|v| match v {
        Value::Object(m) => Some(m),
        _ => None,
    })
    .unwrap_or_default();
    let mut doc = Map::new();
    doc.insert("apiVersion".into(), API_VERSION.into());
    doc.insert("kind".into(), kind_name(o.kind()).into());
    if let Some(meta) = inner.remove("meta") {
        doc.insert("metadata".into(), meta);
    }
    if let Object::Secret(s) = o {
        inner.remove("data");
        let mut data = Map::new();
        let mut b64 = Map::new();
        for (k, bytes) in &s.data {
            if !reveal {
                data.insert(
                    k.clone(),
                    format!("{HIDDEN_PREFIX}{} bytes; --reveal shows it)", bytes.len()).into(),
                );
            } else if let Ok(text) = std::str::from_utf8(bytes) {
                data.insert(k.clone(), text.into());
            } else {
                b64.insert(k.clone(), base64_encode(bytes).into());
            }
        }
        doc.insert("data".into(), data.into());
        if !b64.is_empty() {
            doc.insert("data_base64".into(), b64.into());
        }
    }
    doc.extend(inner);
    Value::Object(doc)
}

/// What `apply` takes from the user in `o` (metadata name, namespace and labels, and everything
/// but the status): two reads with the same user part differ only by what the system wrote.
pub fn user_part(o: &Object) -> Value {
    let mut d = to_doc(o, true);
    if let Value::Object(m) = &mut d {
        m.remove("status");
        m.remove("phase");
        if let Some(Value::Object(meta)) = m.get_mut("metadata") {
            meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "labels"));
        }
    }
    d
}

/// `items` as a `List` document (always a list, whatever the number of items).
pub fn list_doc(items: &[Object], reveal: bool) -> Value {
    let mut doc = Map::new();
    doc.insert("apiVersion".into(), LIST_API_VERSION.into());
    doc.insert("kind".into(), "List".into());
    doc.insert(
        "items".into(),
        items.iter().map(|o| to_doc(o, reveal)).collect(),
    );
    Value::Object(doc)
}

/// `v` as YAML text.
pub fn to_yaml(v: &Value) -> String {
    serde_norway::to_string(v).unwrap_or_default()
}

/// `v` as indented JSON text, with a final newline.
pub fn to_json_text(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The format of a file given to `apply -f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A TOML manifest (`[[pod]]` tables).
    Toml,
    /// JSON documents.
    Json,
    /// YAML documents (`---` separated).
    Yaml,
}

impl Format {
    /// By the file's extension, else by its content (for stdin): `{` starts JSON, a line
    /// `apiVersion:`/`kind:` or a leading `---` makes YAML, anything else is TOML.
    pub fn detect(path: &str, text: &str) -> Format {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".json") {
            return Format::Json;
        }
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            return Format::Yaml;
        }
        if lower.ends_with(".toml") {
            return Format::Toml;
        }
        let body = text
            .lines()
            .map(str::trim_start)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect::<Vec<_>>();
        match body.first() {
            Some(l) if l.starts_with('{') => Format::Json,
            Some(l) if l.starts_with("---") => Format::Yaml,
            _ if body
                .iter()
                .any(|l| l.starts_with("apiVersion:") || l.starts_with("kind:")) =>
            {
                Format::Yaml
            }
            _ => Format::Toml,
        }
    }
}

/// Parses the text of `apply -f` in any of the three formats into objects, checked as a TOML
/// manifest's are. `origin` (a file name) prefixes errors.
pub fn parse(text: &str, origin: &str, default_ns: &str) -> Result<Vec<Object>, String> {
    let docs: Vec<Value> = match Format::detect(origin, text) {
        Format::Toml => return crate::manifest::parse(text, origin, default_ns),
        Format::Json => {
            let mut out = Vec::new();
            for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
                out.push(v.map_err(|e| format!("{origin}: {e}"))?);
            }
            out
        }
        Format::Yaml => {
            let mut out = Vec::new();
            for d in serde_norway::Deserializer::from_str(text) {
                let v: Value =
                    serde::Deserialize::deserialize(d).map_err(|e| format!("{origin}: {e}"))?;
                if !v.is_null() {
                    out.push(v);
                }
            }
            out
        }
    };
    let mut objs = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        let at = |e: String| format!("{origin}: document {}: {e}", i + 1);
        if d.get("kind").and_then(Value::as_str) == Some("List") {
            let items = match d.get("items") {
                Some(Value::Array(a)) => a.clone(),
                Some(Value::Null) | None => Vec::new(),
                Some(_) => return Err(at("`items` of a List must be a list".into())),
            };
            for (j, item) in items.into_iter().enumerate() {
                objs.push(from_doc(item, default_ns).map_err(|e| at(format!("items[{j}]: {e}")))?);
            }
        } else {
            objs.push(from_doc(d, default_ns).map_err(at)?);
        }
    }
    if objs.is_empty() {
        return Err(format!("{origin}: no objects"));
    }
    Ok(objs)
}

/// One document back to an object: defaults filled in, unknown fields refused, checked.
pub fn from_doc(doc: Value, default_ns: &str) -> Result<Object, String> {
    let Value::Object(mut doc) = doc else {
        return Err("not an object: expected {\"apiVersion\": ..., \"kind\": ..., ...}".into());
    };
    match doc.remove("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(v) => {
            return Err(format!(
                "apiVersion {v}: bramble reads {API_VERSION:?} (objects printed by `bramble get -o yaml`)"
            ));
        }
        None => return Err(format!("no apiVersion: add `apiVersion: {API_VERSION}`")),
    }
    let kind = match doc.remove("kind") {
        Some(Value::String(k)) => parse_kind_name(&k).ok_or_else(|| {
            let names: Vec<String> = Kind::ALL.into_iter().map(kind_name).collect();
            format!("unknown kind {k:?}: one of {}", names.join(", "))
        })?,
        _ => return Err("no kind: add e.g. `kind: Deployment`".into()),
    };
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let what = format!("{} {name:?}", kind.as_str());
    if let Some(meta) = doc.remove("metadata") {
        doc.insert("meta".into(), meta);
    }
    if kind == Kind::Secret {
        secret_data(&mut doc).map_err(|e| format!("{what}: {e}"))?;
    }
    let mut given = Value::Object(doc);
    let base = base_of(kind);
    if let Some(b) = &base {
        merge(&mut given, b, &process_base());
    }
    let mut tagged = Map::new();
    tagged.insert(kind_name(kind), given.clone());
    let mut obj: Object =
        serde_json::from_value(Value::Object(tagged)).map_err(|e| format!("{what}: {e}"))?;
    // Unknown fields: whatever the object does not print back was not one of its fields.
    let back = match serde_json::to_value(&obj) {
        Ok(Value::Object(m)) => m.into_iter().next().map(|(_, v)| v).unwrap_or_default(),
        _ => Value::Null,
    };
    if kind == Kind::Secret
        && let Value::Object(m) = &mut given
    {
        // Checked above, by key.
        m.remove("data");
    }
    if let Some(path) = unknown_field(&given, &back, "") {
        let path = path.replacen(".meta", ".metadata", 1);
        return Err(format!(
            "{what}: unknown field {}",
            path.trim_start_matches('.')
        ));
    }
    // The manifest's rules: a namespace for namespaced kinds, the selector defaults to the
    // template's labels.
    if kind.namespaced() && obj.meta().namespace.is_empty() {
        obj.meta_mut().namespace = default_ns.to_string();
    }
    match &mut obj {
        Object::Deployment(d) if d.spec.selector.is_empty() => {
            d.spec.selector = d.spec.template.labels.clone()
        }
        Object::DaemonSet(d) if d.spec.selector.is_empty() => {
            d.spec.selector = d.spec.template.labels.clone()
        }
        _ => {}
    }
    crate::validate::check_object(&obj).map_err(|e| e.to_string())?;
    Ok(obj)
}

/// An object printed by the master (`get -o json`), read back as it is: no defaults, no checks
/// (for scripts and tests; `apply` goes through [`from_doc`]).
pub fn object_of(doc: &Value) -> Result<Object, String> {
    let Value::Object(m) = doc else {
        return Err("not an object".into());
    };
    let mut m = m.clone();
    m.remove("apiVersion");
    let kind = match m.remove("kind") {
        Some(Value::String(k)) => {
            parse_kind_name(&k).ok_or_else(|| format!("unknown kind {k:?}"))?
        }
        _ => return Err("no kind".into()),
    };
    if let Some(meta) = m.remove("metadata") {
        m.insert("meta".into(), meta);
    }
    if kind == Kind::Secret {
        secret_data(&mut m)?;
    }
    let mut tagged = Map::new();
    tagged.insert(kind_name(kind), Value::Object(m));
    serde_json::from_value(Value::Object(tagged)).map_err(|e| e.to_string())
}

/// `get -o json` output (one object, or a `List`) as objects, read with [`object_of`].
pub fn objects_of_json(text: &str) -> Result<Vec<Object>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if v.get("kind").and_then(Value::as_str) == Some("List") {
        v["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(object_of)
            .collect()
    } else {
        object_of(&v).map(|o| vec![o])
    }
}

/// A secret document's `data` (text) and `data_base64` back to the wire's bytes.
fn secret_data(doc: &mut Map<String, Value>) -> Result<(), String> {
    let mut bytes: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let text = doc.remove("data").unwrap_or(Value::Null);
    let b64 = doc.remove("data_base64").unwrap_or(Value::Null);
    let as_map = |v: Value, field: &str| -> Result<Map<String, Value>, String> {
        match v {
            Value::Null => Ok(Map::new()),
            Value::Object(m) => Ok(m),
            _ => Err(format!("{field} must be a map of key to text")),
        }
    };
    for (k, v) in as_map(text, "data")? {
        let Value::String(s) = v else {
            return Err(format!(
                "data.{k}: must be text (binary values go in data_base64)"
            ));
        };
        if s.starts_with(HIDDEN_PREFIX) && s.ends_with("--reveal shows it)") {
            return Err(format!(
                "data.{k} is hidden (printed without --reveal), applying it would replace the value: get it again with --reveal, or leave the secret out"
            ));
        }
        bytes.insert(k, s.into_bytes());
    }
    for (k, v) in as_map(b64, "data_base64")? {
        let Value::String(s) = v else {
            return Err(format!("data_base64.{k}: must be base64 text"));
        };
        let b = base64_decode(&s).map_err(|e| format!("data_base64.{k}: {e}"))?;
        if bytes.insert(k.clone(), b).is_some() {
            return Err(format!(
                "key {k:?} is in both data and data_base64: keep one"
            ));
        }
    }
    let data = serde_json::to_value(bytes).map_err(|e| e.to_string())?;
    doc.insert("data".into(), data);
    Ok(())
}

/// What a TOML manifest gives a field left out, as a document body (`meta`, `spec`...), with
/// the required fields taken out again (so that leaving them out stays an error).
fn base_of(kind: Kind) -> Option<Value> {
    let proc = "[[X.process]]\nname = \"m\"\ncommand = [\"x\"]\n";
    let toml = match kind {
        Kind::Namespace => "[[namespace]]\nname = \"x\"\n".to_string(),
        Kind::Node => "[[node]]\nname = \"x\"\n".to_string(),
        Kind::Pod => format!("[[pod]]\nname = \"x\"\n{}", proc.replace('X', "pod")),
        Kind::Deployment | Kind::DaemonSet | Kind::Job => {
            let k = kind.as_str();
            format!(
                "[[{k}]]\nname = \"x\"\n[{k}.template]\nlabels = {{ a = \"b\" }}\n{}",
                proc.replace('X', &format!("{k}.template"))
            )
        }
        Kind::ConfigMap => "[[configmap]]\nname = \"x\"\n".to_string(),
        Kind::Secret => "[[secret]]\nname = \"x\"\n".to_string(),
        Kind::Service => {
            "[[service]]\nname = \"x\"\nport = 8080\ntarget_port = 8080\nselector = { a = \"b\" }\n"
                .to_string()
        }
        Kind::Registry => "[[registry]]\nname = \"x\"\nhost = \"reg.lan\"\n".to_string(),
        _ => return None,
    };
    let obj = crate::manifest::parse(&toml, "base", "x").ok()?.pop()?;
    let mut v = serde_json::to_value(&obj).ok()?;
    let mut body = v.as_object_mut()?.remove(&kind_name(kind))?;
    let b = body.as_object_mut()?;
    if let Some(Value::Object(m)) = b.get_mut("meta") {
        m.remove("name");
        m.insert("namespace".into(), "".into());
    }
    if let Some(Value::Object(spec)) = b.get_mut("spec") {
        spec.remove("port");
        spec.remove("target_port");
        spec.remove("host");
        spec.insert("selector".into(), Value::Object(Map::new()));
        let pod_spec = match spec.get_mut("template") {
            Some(Value::Object(t)) => {
                t.insert("labels".into(), Value::Object(Map::new()));
                t.get_mut("spec")
            }
            _ => None,
        };
        if let Some(Value::Object(ps)) = pod_spec {
            ps.insert("processes".into(), Value::Array(Vec::new()));
        }
        if spec.contains_key("processes") {
            spec.insert("processes".into(), Value::Array(Vec::new()));
        }
    }
    Some(body)
}

/// A process's defaults (from the manifest's), without its required `name`.
fn process_base() -> Value {
    let toml = "[[pod]]\nname = \"x\"\n[[pod.process]]\nname = \"m\"\ncommand = [\"x\"]\n";
    let Some(Object::Pod(p)) = crate::manifest::parse(toml, "base", "x")
        .ok()
        .and_then(|mut v| v.pop())
    else {
        return Value::Null;
    };
    let mut v = serde_json::to_value(&p.spec.processes[0]).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("name");
        m.insert("command".into(), Value::Array(Vec::new()));
    }
    v
}

/// Fills what `given` leaves out from `base`, recursively; each element of a `processes` list
/// from `process`.
fn merge(given: &mut Value, base: &Value, process: &Value) {
    let (Value::Object(g), Value::Object(b)) = (given, base) else {
        return;
    };
    for (k, bv) in b {
        match g.get_mut(k) {
            None => {
                g.insert(k.clone(), bv.clone());
            }
            Some(gv @ Value::Object(_)) => merge(gv, bv, process),
            Some(Value::Array(items)) if k == "processes" => {
                for it in items {
                    merge(it, process, process);
                }
            }
            Some(_) => {}
        }
    }
}

/// The first path of `given` that `back` (the parsed object printed again) does not have.
fn unknown_field(given: &Value, back: &Value, path: &str) -> Option<String> {
    match (given, back) {
        (Value::Object(g), Value::Object(b)) => {
            for (k, gv) in g {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    None => return Some(p),
                    Some(bv) => {
                        if let Some(u) = unknown_field(gv, bv, &p) {
                            return Some(u);
                        }
                    }
                }
            }
            None
        }
        (Value::Array(g), Value::Array(b)) => g
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (gv, bv))| unknown_field(gv, bv, &format!("{path}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = r#"
[[deployment]]
name = "web"
replicas = 2
[deployment.template]
labels = { app = "web" }
[[deployment.template.process]]
name = "main"
command = ["/bin/sleep", "1000"]
memory = "32Mi"
env = { A = "1" }

[[secret]]
name = "s"
data = { user = "me" }
data_base64 = { bin = "AAEC" }
"#;

    fn objs() -> Vec<Object> {
        let mut v = crate::manifest::parse(WEB, "web.toml", "default").unwrap();
        // As the store gives them back.
        for o in &mut v {
            o.meta_mut().revision = 7;
            o.meta_mut().uid = "u-1".into();
        }
        v
    }

    #[test]
    fn shape() {
        let o = &objs()[0];
        let d = to_doc(o, false);
        assert_eq!(d["apiVersion"], "bramble.io/v1");
        assert_eq!(d["kind"], "Deployment");
        assert_eq!(d["metadata"]["name"], "web");
        assert_eq!(d["metadata"]["revision"], 7);
        assert_eq!(d["spec"]["replicas"], 2);
        assert!(d["status"].is_object());
        assert!(d.get("meta").is_none());
        let l = list_doc(std::slice::from_ref(o), false);
        assert_eq!(l["kind"], "List");
        assert_eq!(l["items"].as_array().unwrap().len(), 1);
        assert_eq!(list_doc(&[], false)["items"], Value::Array(vec![]));
        assert_eq!(kind_name(Kind::ReplicaSet), "ReplicaSet");
        assert_eq!(parse_kind_name("ConfigMap"), Some(Kind::ConfigMap));
    }

    #[test]
    fn json_and_yaml_round_trip() {
        let all = objs();
        for o in &all {
            let d = to_doc(o, true);
            let json = to_json_text(&d);
            assert_eq!(
                parse(&json, "-", "default").unwrap(),
                vec![o.clone()],
                "{json}"
            );
            let yaml = to_yaml(&d);
            assert_eq!(
                parse(&yaml, "-", "default").unwrap(),
                vec![o.clone()],
                "{yaml}"
            );
        }
        let list = to_yaml(&list_doc(&all, true));
        assert_eq!(parse(&list, "x.yaml", "default").unwrap(), all);
        let list = to_json_text(&list_doc(&all, true));
        assert_eq!(parse(&list, "x.json", "default").unwrap(), all);
        assert_eq!(objects_of_json(&list).unwrap(), all);
        // Several YAML documents.
        let two = format!(
            "{}---\n{}",
            to_yaml(&to_doc(&all[0], true)),
            to_yaml(&to_doc(&all[1], true))
        );
        assert_eq!(parse(&two, "-", "default").unwrap(), all);
    }

    #[test]
    fn hand_written_yaml_takes_manifest_defaults() {
        let y = r#"
apiVersion: bramble.io/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    labels: { app: web }
    spec:
      processes:
        - name: main
          command: ["/bin/sleep", "100"]
"#;
        let got = parse(y, "-", "apps").unwrap();
        let Object::Deployment(d) = &got[0] else {
            panic!()
        };
        let toml = crate::manifest::parse(
            "[[deployment]]\nname = \"web\"\n[deployment.template]\nlabels = { app = \"web\" }\n\
             [[deployment.template.process]]\nname = \"main\"\ncommand = [\"/bin/sleep\", \"100\"]\n",
            "t",
            "apps",
        )
        .unwrap();
        assert_eq!(got, toml);
        assert_eq!(d.spec.replicas, 1);
        assert_eq!(d.meta.namespace, "apps");
        assert_eq!(d.spec.selector.get("app").map(String::as_str), Some("web"));
    }

    #[test]
    fn bad_documents_are_refused_with_the_path() {
        let e = parse(
            "apiVersion: bramble.io/v1\nkind: Pod\nmetadata: { name: a, lables: {} }\n",
            "-",
            "default",
        )
        .unwrap_err();
        assert!(e.contains("unknown field metadata.lables"), "{e}");
        let e = parse(
            "apiVersion: bramble.io/v1\nkind: Service\nmetadata: { name: a }\nspec: { target_port: 80 }\n",
            "-",
            "default",
        )
        .unwrap_err();
        assert!(e.contains("missing field `port`"), "{e}");
        let e = parse("apiVersion: apps/v1\nkind: Pod\n", "-", "default").unwrap_err();
        assert!(e.contains("bramble.io/v1"), "{e}");
        let e = parse(
            "apiVersion: bramble.io/v1\nkind: Gadget\nmetadata: { name: a }\n",
            "-",
            "default",
        )
        .unwrap_err();
        assert!(e.contains("unknown kind \"Gadget\""), "{e}");
        let e = parse(
            "apiVersion: bramble.io/v1\nkind: Pod\nmetadata: { name: a }\nspec: { processes: [ { name: m, command: [x], cmd: [] } ] }\n",
            "-",
            "default",
        )
        .unwrap_err();
        assert!(e.contains("spec.processes[0].cmd"), "{e}");
    }

    #[test]
    fn the_user_part_leaves_out_what_the_system_writes() {
        let Object::Deployment(mut d) = objs().remove(0) else {
            panic!()
        };
        let a = user_part(&Object::Deployment(d.clone()));
        d.meta.revision = 9;
        d.status.updated = 2;
        assert_eq!(user_part(&Object::Deployment(d.clone())), a);
        d.spec.replicas = 5;
        assert_ne!(user_part(&Object::Deployment(d)), a);
    }

    #[test]
    fn hidden_secret_values_are_not_applied() {
        let s = &objs()[1];
        let hidden = to_yaml(&to_doc(s, false));
        assert!(hidden.contains("hidden: 2 bytes"), "{hidden}");
        let e = parse(&hidden, "-", "default").unwrap_err();
        assert!(e.contains("--reveal"), "{e}");
    }

    #[test]
    fn every_applicable_kind_has_defaults() {
        for k in Kind::ALL {
            if crate::validate::client_may_apply(k) {
                assert!(base_of(k).is_some(), "{k:?}");
            }
        }
        assert!(process_base().is_object());
    }

    #[test]
    fn formats_are_detected() {
        assert_eq!(Format::detect("a.yml", ""), Format::Yaml);
        assert_eq!(Format::detect("a.JSON", ""), Format::Json);
        assert_eq!(Format::detect("-", "[[pod]]\nname = \"a\""), Format::Toml);
        assert_eq!(Format::detect("-", "# c\n{\"kind\": 1}"), Format::Json);
        assert_eq!(Format::detect("-", "kind: Pod\n"), Format::Yaml);
        assert_eq!(Format::detect("-", "---\n"), Format::Yaml);
    }
}
