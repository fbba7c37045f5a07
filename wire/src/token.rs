//! The token format shared by the master, workers and the CLI (k3s's "secure token" shape):
//!
//! ```text
//! K10<sha256 of the master's certificate, 64 lowercase hex>::<id>.<secret>
//! ```
//!
//! The part before `::` pins the master's TLS certificate (the dialer accepts exactly that
//! certificate); `<id>.<secret>` is what goes in [`crate::Hello::credentials`]. A token without
//! the `K10…::` prefix is a bare credential (no pin).

/// The prefix of a pinned token.
pub const PIN_PREFIX: &str = "K10";

/// A token split into its pin (64 hex chars, if present) and its credential (`id.secret`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenParts<'a> {
    /// sha256 of the master's certificate (DER), lowercase hex, if the token pins one.
    pub pin: Option<&'a str>,
    /// What to send as credentials: `id.secret`.
    pub credential: &'a str,
}

/// Splits a token. A `K10` prefix must be followed by 64 hex characters and `::`.
pub fn split_token(s: &str) -> Result<TokenParts<'_>, &'static str> {
    let s = s.trim();
    match s.strip_prefix(PIN_PREFIX).and_then(|r| r.split_once("::")) {
        Some((pin, cred)) => {
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("the token's pin (between K10 and ::) must be 64 hex characters");
            }
            if cred.is_empty() {
                return Err("the token has nothing after ::");
            }
            Ok(TokenParts {
                pin: Some(pin),
                credential: cred,
            })
        }
        None => Ok(TokenParts {
            pin: None,
            credential: s,
        }),
    }
}

/// Splits a credential `id.secret` at its first dot.
pub fn split_credential(cred: &str) -> Option<(&str, &str)> {
    cred.split_once('.').filter(|(i, s)| !i.is_empty() && !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits() {
        let pin = "ab".repeat(32);
        let t = alloc_free_join(&pin);
        let p = split_token(&t).unwrap();
        assert_eq!(p.pin, Some(pin.as_str()));
        assert_eq!(p.credential, "j1.s3cret");
        assert_eq!(split_credential(p.credential), Some(("j1", "s3cret")));
        assert_eq!(split_token("bare.token").unwrap().pin, None);
        assert!(split_token("K10abc::x.y").is_err());
        assert_eq!(split_credential("nodot"), None);
    }

    fn alloc_free_join(pin: &str) -> std::string::String {
        std::format!("K10{pin}::j1.s3cret\n")
    }
}
