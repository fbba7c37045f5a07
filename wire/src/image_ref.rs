//! PLACEHOLDER (MASTER helper's worktree only): a minimal image reference parser with the
//! contract's API (/work/notes/image-contract.md), so the master compiles and tests before the
//! REGISTRY helper's `image_ref.rs` is merged. The integrator replaces this file with theirs.

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (`docker.io`, `registry.lan:5000`).
    pub registry: String,
    /// Repository (`library/alpine`).
    pub repository: String,
    /// Tag, if any (default `latest` unless a digest is given).
    pub tag: Option<String>,
    /// Digest (`sha256:<hex>`), if any.
    pub digest: Option<String>,
}

/// Why a reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRefError(String);

impl fmt::Display for ImageRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; write [HOST[:PORT]/]REPOSITORY[:TAG][@sha256:HEX], e.g. \"registry.lan:5000/app:1.4\" or \"alpine:3.20\"",
            self.0
        )
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl ImageRef {
    /// Parses `s` with Docker's defaults.
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        let bad = |m: String| Err(ImageRefError(m));
        if s.is_empty() || s.len() > 255 || s.chars().any(|c| c.is_whitespace()) {
            return bad(format!("{s:?} is not an image reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let Some(hex) = d.strip_prefix("sha256:").filter(|h| is_hex64(h)) else {
                    return bad(format!(
                        "{d:?} is not a sha256 digest (sha256: and 64 lowercase hex)"
                    ));
                };
                (r, Some(format!("sha256:{hex}")))
            }
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, p))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), p)
            }
            _ => ("docker.io".to_string(), rest),
        };
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match path[last_slash..].rfind(':') {
            Some(i) => (
                &path[..last_slash + i],
                Some(path[last_slash + i + 1..].to_string()),
            ),
            None => (path, None),
        };
        if repo.is_empty()
            || !repo.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            })
        {
            return bad(format!("{s:?}: bad repository {repo:?}"));
        }
        if let Some(t) = &tag
            && (t.is_empty()
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
        {
            return bad(format!("{s:?}: bad tag {t:?}"));
        }
        let mut repository = repo.to_ascii_lowercase();
        if registry == "docker.io" && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository[:tag][@digest]`.
    pub fn normalized(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The digest if any, else the tag.
    pub fn api_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// A valid object name derived from [`ImageRef::normalized`].
    pub fn object_name(&self) -> String {
        let n = self.normalized();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in n.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut prefix = String::new();
        let readable = n.rsplit('/').next().unwrap_or("");
        let readable = readable.split('@').next().unwrap_or("");
        for c in readable.chars() {
            let c = c.to_ascii_lowercase();
            if prefix.len() >= 40 {
                break;
            }
            if c.is_ascii_alphanumeric() {
                prefix.push(c);
            } else if !prefix.ends_with('-') && !prefix.is_empty() {
                prefix.push('-');
            }
        }
        let prefix = prefix.trim_end_matches('-');
        let hex = format!("{h:016x}");
        if prefix.is_empty() {
            format!("img-{}", &hex[..10])
        } else {
            format!("{prefix}-{}", &hex[..10])
        }
    }
}

/// `ImageRef::parse(s).ok().map(|r| r.normalized())`.
pub fn normalize(s: &str) -> Option<String> {
    ImageRef::parse(s).ok().map(|r| r.normalized())
}
