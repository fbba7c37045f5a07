//! `bramble create configmap|secret NAME --from-file PATH[=KEY]... --from-literal KEY=VALUE...`.
//!
//! Kubernetes' semantics: creating an object that exists fails (exit 4) with a hint;
//! `--replace` overwrites it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bramble_wire::msg::{ApiError, ErrorCode, RequestBody, ResponseBody};
use bramble_wire::objects::{ConfigMap, Kind, Meta, Object, Secret};

use super::{Client, ClientError, usage};

/// What to create.
#[derive(Debug, clap::Subcommand)]
pub enum CreateCmd {
    /// A config map: files and literals as text.
    #[command(alias = "cm")]
    Configmap(CreateArgs),
    /// A secret: files (binary allowed) and literals; values are never printed unless revealed.
    Secret(CreateArgs),
}

/// Flags of `bramble create configmap|secret`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Name.
    pub name: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// A file (key = its name; `PATH=KEY` to choose the key) or a directory (each regular
    /// file in it). Repeatable.
    #[arg(long = "from-file", value_name = "PATH[=KEY]")]
    pub from_file: Vec<String>,
    /// A literal value, `KEY=VALUE`. Repeatable.
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    pub from_literal: Vec<String>,
    /// Overwrite the object if it exists (otherwise creating an existing object fails).
    #[arg(long)]
    pub replace: bool,
}

/// Reads the data the flags name: key → bytes, in key order. Errors name the flag and the fix.
pub fn collect_data(
    from_file: &[String],
    from_literal: &[String],
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut data = BTreeMap::new();
    let mut put = |k: String, v: Vec<u8>, from: &str| -> Result<(), String> {
        if data.insert(k.clone(), v).is_some() {
            return Err(format!(
                "key {k:?} is given twice ({from}): give each key once"
            ));
        }
        Ok(())
    };
    for spec in from_file {
        let (path, key) = split_file_spec(spec)?;
        if path.is_dir() {
            let rd = std::fs::read_dir(&path)
                .map_err(|e| format!("--from-file {}: {e}", path.display()))?;
            let mut files: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for f in files {
                let k = file_key(&f)?;
                let v = read(&f)?;
                put(k, v, &format!("--from-file {}", f.display()))?;
            }
            continue;
        }
        let k = match key {
            Some(k) => k,
            None => file_key(&path)?,
        };
        let v = read(&path)?;
        put(k, v, &format!("--from-file {spec}"))?;
    }
    for lit in from_literal {
        let (k, v) = lit
            .split_once('=')
            .ok_or_else(|| format!("--from-literal {lit:?}: write it as KEY=VALUE"))?;
        put(k.to_string(), v.as_bytes().to_vec(), "--from-literal")?;
    }
    if data.is_empty() {
        return Err("no data: give --from-file PATH[=KEY] or --from-literal KEY=VALUE".into());
    }
    Ok(data)
}

/// `PATH`, `PATH=KEY`, or kubectl's `KEY=PATH` (whichever side is an existing file).
fn split_file_spec(spec: &str) -> Result<(PathBuf, Option<String>), String> {
    if Path::new(spec).exists() {
        return Ok((spec.into(), None));
    }
    if let Some((a, b)) = spec.split_once('=') {
        if Path::new(a).exists() {
            return Ok((a.into(), Some(b.to_string())));
        }
        if Path::new(b).exists() {
            return Ok((b.into(), Some(a.to_string())));
        }
    }
    Err(format!(
        "--from-file {spec:?}: no such file or directory (write PATH or PATH=KEY)"
    ))
}

fn file_key(p: &Path) -> Result<String, String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "--from-file {}: cannot use its name as a key: write PATH=KEY",
                p.display()
            )
        })
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("--from-file {}: {e}", p.display()))
}

/// Builds the object (validated like an applied one).
pub fn build(kind: Kind, a: &CreateArgs) -> Result<Object, String> {
    let data = collect_data(&a.from_file, &a.from_literal)?;
    let meta = Meta {
        name: a.name.clone(),
        namespace: a.namespace.clone(),
        ..Default::default()
    };
    let o = if kind == Kind::ConfigMap {
        let mut text = BTreeMap::new();
        for (k, v) in data {
            let s = String::from_utf8(v).map_err(|_| {
                format!(
                    "configmap {:?}: {k:?} is not UTF-8 text; config maps hold text: put binary files in a secret",
                    a.name
                )
            })?;
            text.insert(k, s);
        }
        Object::ConfigMap(ConfigMap { meta, data: text })
    } else {
        Object::Secret(Secret { meta, data })
    };
    bramble_client::validate::check_object(&o).map_err(|e| e.to_string())?;
    Ok(o)
}

/// Runs `bramble create`.
pub async fn run(c: &mut Client, cmd: CreateCmd, out: &mut impl Write) -> Result<(), ClientError> {
    let (kind, a) = match cmd {
        CreateCmd::Configmap(a) => (Kind::ConfigMap, a),
        CreateCmd::Secret(a) => (Kind::Secret, a),
    };
    let mut o = build(kind, &a).map_err(usage)?;
    let existing = match c
        .call(RequestBody::Get {
            kind,
            namespace: a.namespace.clone(),
            name: a.name.clone(),
        })
        .await
    {
        Ok(ResponseBody::Object(cur)) => Some(cur.meta().revision),
        Ok(_) => None,
        Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => None,
        Err(e) => return Err(e),
    };
    let k = kind.as_str();
    if let Some(rev) = existing {
        if !a.replace {
            return Err(ClientError::Api(ApiError {
                code: ErrorCode::Conflict,
                message: format!(
                    "{k} {:?} already exists in namespace {:?}: add --replace to overwrite it, or `bramble delete {k} {} -n {}` first",
                    a.name, a.namespace, a.name, a.namespace
                ),
            }));
        }
        // Replace exactly what we looked at: a concurrent change is a conflict, not lost.
        o.meta_mut().revision = rev;
    }
    c.call(RequestBody::Apply(vec![o])).await?;
    let what = if existing.is_some() {
        "replaced"
    } else {
        "created"
    };
    let _ = writeln!(out, "{k}/{} {what}", a.name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_directories_and_literals() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("index.html");
        std::fs::write(&f, "<h1>hi</h1>").unwrap();
        let sub = d.path().join("conf");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("a.conf"), "a").unwrap();
        std::fs::write(sub.join("b.conf"), "b").unwrap();
        let fs = f.display().to_string();
        let data = collect_data(
            &[
                fs.clone(),
                format!("{fs}=page"),
                format!("kube={fs}"),
                sub.display().to_string(),
            ],
            &["mode=fast".into(), "empty=".into()],
        )
        .unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "a.conf",
                "b.conf",
                "empty",
                "index.html",
                "kube",
                "mode",
                "page"
            ]
        );
        assert_eq!(data["page"], b"<h1>hi</h1>");
        assert_eq!(data["mode"], b"fast");
        let e = collect_data(&[fs.clone(), fs.clone()], &[]).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        let e = collect_data(&["/nonexistent/x".into()], &[]).unwrap_err();
        assert!(e.contains("no such file"), "{e}");
        let e = collect_data(&[], &["novalue".into()]).unwrap_err();
        assert!(e.contains("KEY=VALUE"), "{e}");
        assert!(collect_data(&[], &[]).is_err());
    }

    #[test]
    fn binary_needs_a_secret_and_keys_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("key.bin");
        std::fs::write(&f, [0u8, 0xff, 0xfe]).unwrap();
        let args = |lit: &[&str]| CreateArgs {
            name: "x".into(),
            namespace: "default".into(),
            from_file: vec![f.display().to_string()],
            from_literal: lit.iter().map(|s| s.to_string()).collect(),
            replace: false,
        };
        let e = build(Kind::ConfigMap, &args(&[])).unwrap_err();
        assert!(e.contains("not UTF-8") && e.contains("secret"), "{e}");
        assert!(build(Kind::Secret, &args(&[])).is_ok());
        let e = build(Kind::Secret, &args(&["a/b=1"])).unwrap_err();
        assert!(e.contains("file names"), "{e}");
    }
}
