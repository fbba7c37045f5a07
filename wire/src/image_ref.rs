//! Image references (`alpine`, `registry.lan:5000/home/app:1.4`, `host/app@sha256:…`) with
//! Docker's normalization rules, shared by the master, the CLI and the worker so that everyone
//! matches a pod's `image` to a stored [`Image`](crate::objects::Image) the same way:
//! `normalize(pod.spec.image) == image.reference`.
//!
//! Rules (as `docker pull`):
//! - no registry part (the first component has no `.` or `:` and is not `localhost`) → `docker.io`;
//!   `index.docker.io` is `docker.io` too;
//! - on `docker.io`, a single-component repository gets `library/` (`alpine` →
//!   `docker.io/library/alpine`);
//! - the tag defaults to `latest` unless a digest is given;
//! - the repository is lowercase (`[a-z0-9]` runs separated by `.`, `_`, `__` or `-`s), at most
//!   255 characters with its registry; a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; a digest is
//!   `sha256:` + 64 lowercase hex characters.

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

/// The registry of references without one.
pub const DOCKER_HUB: &str = "docker.io";
/// The tag of references without a tag or digest.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host and optional port (`docker.io`, `registry.lan:5000`, `localhost:5000`),
    /// lowercase.
    pub registry: String,
    /// Repository path (`library/alpine`, `home/app`).
    pub repository: String,
    /// Tag (`latest` by default unless a digest is given).
    pub tag: Option<String>,
    /// Digest (`sha256:` + 64 lowercase hex), if pinned.
    pub digest: Option<String>,
}

/// Why a string is not an image reference. Its `Display` says what is wrong and the expected form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRefError {
    /// The reference as given (shortened if very long).
    pub reference: String,
    /// What is wrong.
    pub reason: String,
}

const FORM: &str = "expected [HOST[:PORT]/]NAME[:TAG][@sha256:DIGEST], e.g. \
                    \"alpine:3.20\" or \"registry.lan:5000/home/app:1.4\"";

impl fmt::Display for ImageRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid image reference {:?}: {}; {FORM}",
            self.reference, self.reason
        )
    }
}

impl core::error::Error for ImageRefError {}

/// Longest accepted reference name (registry + `/` + repository), as Docker.
pub const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

fn err(s: &str, reason: impl Into<String>) -> ImageRefError {
    let reference = if s.len() > 80 {
        let mut end = 77;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s.to_string()
    };
    ImageRefError {
        reference,
        reason: reason.into(),
    }
}

/// `sha256:` + 64 lowercase hex.
fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A registry host: DNS labels (`[A-Za-z0-9]` at both ends, `-` inside) separated by `.`, and an
/// optional `:PORT` (1-65535).
fn valid_host(h: &str) -> Result<(), &'static str> {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    if let Some(p) = port
        && (p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u32>().map_or(true, |n| n == 0 || n > 65535))
    {
        return Err("the registry's port must be a number from 1 to 65535");
    }
    if name.is_empty() {
        return Err("the registry host is empty");
    }
    for label in name.split('.') {
        let b = label.as_bytes();
        if b.is_empty()
            || !b[0].is_ascii_alphanumeric()
            || !b[b.len() - 1].is_ascii_alphanumeric()
            || !b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        {
            return Err("the registry host must be DNS labels ([a-z0-9-]) separated by '.'");
        }
    }
    Ok(())
}

/// One path component: `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-"+, followed by an alphanumeric (the last byte is).
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum_lower(b[i]) {
            return false;
        }
    }
    true
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl ImageRef {
    /// Parses and normalizes `s` (see the module's rules).
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        if s.is_empty() {
            return Err(err(s, "it is empty"));
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(s, format!("it contains {c:?}")));
        }
        // Digest.
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !valid_digest(d) {
                    return Err(err(
                        s,
                        format!(
                            "digest {d:?} is not \"sha256:\" followed by 64 lowercase hex characters"
                        ),
                    ));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // Tag: after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if t.is_empty() {
                    return Err(err(s, "the tag after ':' is empty"));
                }
                if !valid_tag(t) {
                    return Err(err(
                        s,
                        format!(
                            "tag {t:?} must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
                        ),
                    ));
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(err(s, "the name is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(err(
                s,
                format!("the name is {} characters, over {MAX_NAME_LEN}", name.len()),
            ));
        }
        // Registry.
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                valid_host(first).map_err(|r| err(s, r))?;
                let host = first.to_ascii_lowercase();
                let host = if host == "index.docker.io" || host == "registry-1.docker.io" {
                    DOCKER_HUB.to_string()
                } else {
                    host
                };
                (host, path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if repository.is_empty() {
            return Err(err(s, "the repository name is empty"));
        }
        for c in repository.split('/') {
            if c.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(err(
                    s,
                    format!("repository name {repository:?} must be lowercase"),
                ));
            }
            if !valid_component(c) {
                return Err(err(
                    s,
                    format!(
                        "repository component {c:?} must be [a-z0-9] runs joined by '.', '_', '__' or '-'"
                    ),
                ));
            }
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(err(
                s,
                format!("the normalized name is over {MAX_NAME_LEN} characters"),
            ));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (t, _) => t,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `REGISTRY/REPOSITORY[:TAG][@DIGEST]`, e.g. `docker.io/library/alpine:3.20`.
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

    /// What to ask the registry for: the digest if any, else the tag (`latest` by default).
    pub fn api_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// A valid object name derived from [`normalized`](Self::normalized): a readable prefix
    /// (repository without `library/`, and the tag) + `-` + the first 10 hex digits of the
    /// FNV-1a-64 hash of the normalized reference; 1-63 of `[a-z0-9-]`.
    pub fn object_name(&self) -> String {
        let n = self.normalized();
        let repo = self
            .repository
            .strip_prefix("library/")
            .filter(|_| self.registry == DOCKER_HUB)
            .unwrap_or(&self.repository);
        let mut readable = String::new();
        let mut dash = false;
        let source = match &self.tag {
            Some(t) => format!("{repo}-{t}"),
            None => repo.to_string(),
        };
        for c in source.chars() {
            if c.is_ascii_alphanumeric() {
                if dash && !readable.is_empty() {
                    readable.push('-');
                }
                dash = false;
                readable.push(c.to_ascii_lowercase());
            } else {
                dash = true;
            }
        }
        // Keep the end (the image's own name and tag) when long: 63 - '-' - 10 hex = 52.
        const MAX_PREFIX: usize = 52;
        if readable.len() > MAX_PREFIX {
            readable = readable[readable.len() - MAX_PREFIX..]
                .trim_start_matches('-')
                .to_string();
        }
        let h = fnv1a64(n.as_bytes());
        let hex = format!("{h:016x}");
        if readable.is_empty() {
            format!("image-{}", &hex[..10])
        } else {
            format!("{readable}-{}", &hex[..10])
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized())
    }
}

/// FNV-1a, 64 bits.
fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `ImageRef::parse(s).ok().map(|r| r.normalized())`.
pub fn normalize(s: &str) -> Option<String> {
    ImageRef::parse(s).ok().map(|r| r.normalized())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn n(s: &str) -> String {
        ImageRef::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .normalized()
    }

    #[test]
    fn docker_hub_defaults() {
        assert_eq!(n("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(n("alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(n("library/alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(n("docker.io/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(
            n("index.docker.io/alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            n("homeassistant/home-assistant:2024.6"),
            "docker.io/homeassistant/home-assistant:2024.6"
        );
        assert_eq!(n("grafana/grafana"), "docker.io/grafana/grafana:latest");
        let r = ImageRef::parse("nodered/node-red:4.0").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "nodered/node-red");
        assert_eq!(r.tag.as_deref(), Some("4.0"));
        assert_eq!(r.digest, None);
        assert_eq!(r.api_reference(), "4.0");
    }

    #[test]
    fn own_registries() {
        assert_eq!(
            n("registry.lan:5000/home/app:1.4"),
            "registry.lan:5000/home/app:1.4"
        );
        assert_eq!(n("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(n("localhost/app"), "localhost/app:latest");
        assert_eq!(n("127.0.0.1:5000/a/b/c:v1"), "127.0.0.1:5000/a/b/c:v1");
        assert_eq!(n("ghcr.io/owner/app:1"), "ghcr.io/owner/app:1");
        // A single component on another registry gets no library/.
        assert_eq!(n("quay.io/app"), "quay.io/app:latest");
        // Hosts are case-insensitive.
        assert_eq!(n("Registry.LAN:5000/app"), "registry.lan:5000/app:latest");
        let r = ImageRef::parse("localhost:5000/app").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "app");
        // Without '.' or ':' and not localhost, the first component is a path component.
        assert_eq!(n("myhost/app"), "docker.io/myhost/app:latest");
    }

    #[test]
    fn digests() {
        let r = ImageRef::parse(&format!("host.lan/app@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.api_reference(), D);
        assert_eq!(r.normalized(), format!("host.lan/app@{D}"));
        let r = ImageRef::parse(&format!("host.lan/app:1.4@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.4"));
        assert_eq!(r.api_reference(), D);
        assert_eq!(r.normalized(), format!("host.lan/app:1.4@{D}"));
        assert_eq!(
            n(&format!("alpine@{D}")),
            format!("docker.io/library/alpine@{D}")
        );
        assert_eq!(
            n(&format!("localhost:5000/app@{D}")),
            format!("localhost:5000/app@{D}")
        );
    }

    #[test]
    fn refusals() {
        let long = "a".repeat(256);
        let cases: Vec<(String, &str)> = alloc::vec![
            (String::new(), "empty"),
            ("alpine 3".into(), "' '"),
            (" alpine".into(), "' '"),
            ("alpine\n".into(), "'\\n'"),
            ("Alpine".into(), "lowercase"),
            ("host.lan/Home/app".into(), "lowercase"),
            ("alpine:".into(), "tag after ':' is empty"),
            ("host.lan:5000/app:".into(), "tag after ':' is empty"),
            ("host.lan/../etc".into(), "component \"..\""),
            ("a/../b".into(), "component \"..\""),
            ("a//b".into(), "component \"\""),
            ("/a".into(), "component \"\""),
            ("a/".into(), "component \"\""),
            ("app@sha256:abc".into(), "digest"),
            (format!("app@{}", D.to_uppercase()), "digest"),
            (format!("app@sha512:{}", &D[7..]), "digest"),
            ("app@".into(), "digest"),
            (long.clone(), "over 255"),
            (format!("host.lan/{long}"), "over 255"),
            ("app:-x".into(), "tag \"-x\""),
            (format!("app:{}", "t".repeat(129)), "tag"),
            ("host.lan:0/app".into(), "port"),
            ("host.lan:99999/app".into(), "port"),
            ("host.lan:x/app".into(), "port"),
            ("-host.lan/app".into(), "DNS labels"),
            ("host..lan/app".into(), "DNS labels"),
            ("host.lan".into(), "over 255"), // placeholder, replaced below
            ("app_-x".into(), "component"),
            ("a___b".into(), "component"),
            ("a-".into(), "component"),
            (".a".into(), "component"),
        ];
        for (s, want) in cases {
            if s == "host.lan" {
                // A bare host-looking name is a repository on docker.io: valid.
                assert_eq!(n(&s), "docker.io/library/host.lan:latest");
                continue;
            }
            let e = ImageRef::parse(&s).expect_err(&s);
            let msg = e.to_string();
            assert!(msg.contains(want), "{s:?}: {msg}");
            assert!(msg.contains("expected [HOST[:PORT]/]NAME"), "{msg}");
            assert_eq!(normalize(&s), None);
        }
    }

    #[test]
    fn separators() {
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "a1/b2/c3", "x.y_z-w"] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok}");
        }
        assert!(ImageRef::parse("_tag:_x").is_err());
        assert!(ImageRef::parse("app:_x").is_ok());
        assert!(ImageRef::parse("app:X.1-rc").is_ok());
    }

    #[test]
    fn normalize_is_idempotent() {
        for s in [
            "alpine",
            "alpine:3.20",
            "registry.lan:5000/home/app:1.4",
            &format!("host/app:1@{D}")[..],
            &format!("x.io/app@{D}")[..],
        ] {
            let once = n(s);
            assert_eq!(n(&once), once);
            assert_eq!(normalize(s), Some(once));
        }
    }

    fn valid_object_name(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && !s.starts_with('-')
            && !s.ends_with('-')
            && s.bytes().all(|b| is_alnum_lower(b) || b == b'-')
    }

    #[test]
    fn object_names() {
        let a = ImageRef::parse("alpine:3.20").unwrap().object_name();
        assert!(a.starts_with("alpine-3-20-"), "{a}");
        assert_eq!(a.len(), "alpine-3-20-".len() + 10);
        let b = ImageRef::parse("registry.lan:5000/home/app:1.4")
            .unwrap()
            .object_name();
        assert!(b.starts_with("home-app-1-4-"), "{b}");
        // Same readable part, different registries: different names.
        let c = ImageRef::parse("other.lan/home/app:1.4")
            .unwrap()
            .object_name();
        assert_ne!(b, c);
        // Stable: the same reference written two ways gives one name.
        assert_eq!(
            ImageRef::parse("docker.io/library/alpine:3.20")
                .unwrap()
                .object_name(),
            a
        );
        let d = ImageRef::parse(&format!("host.lan/app@{D}"))
            .unwrap()
            .object_name();
        assert!(d.starts_with("app-"), "{d}");
        let long = format!(
            "host.lan/{}/{}:{}",
            "a".repeat(100),
            "b".repeat(100),
            "T".repeat(40)
        );
        let l = ImageRef::parse(&long).unwrap().object_name();
        for s in [&a, &b, &c, &d, &l] {
            assert!(valid_object_name(s), "{s}");
        }
        assert!(l.len() <= 63);
        assert!(l.contains("-t"), "{l}");
        // Known value of FNV-1a-64 (test vector: "a" → af63dc4c8601ec8c).
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    }
}
