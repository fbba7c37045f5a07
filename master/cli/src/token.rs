//! `bramble token create|list|revoke|rotate-join`: join tokens and node credentials (admin
//! only).

use std::io::Write;
use std::time::Duration;

use bramble_wire::msg::{RequestBody, ResponseBody, TokenInfo, TokenKind};
use clap::Subcommand;

use super::{Client, ClientError, table, usage};

/// `bramble token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a join token; prints it once (give it to `bramble-worker --token-file`).
    Create {
        /// Lifetime, e.g. `2h`; `0` = until revoked (as kubeadm's `--ttl 0`).
        #[arg(long, default_value = "24h", value_parser = super::parse_duration)]
        ttl: Duration,
        /// How many nodes may join with it (default: any number until it expires).
        #[arg(long)]
        uses: Option<u32>,
        /// The one node name it admits (default uses 1); also lets a node whose credential was
        /// revoked join again.
        #[arg(long)]
        node: Option<String>,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Replace the bootstrap join token in the master's DATA_DIR/join.token (the old one is
    /// revoked; joined nodes keep working with their own credentials). Prints the new one once.
    RotateJoin,
    /// List join tokens, node credentials and admin tokens (never their secrets).
    List,
    /// Revoke a token or a node credential; a node using it is cut off at its next message.
    Revoke {
        /// Token id (see `bramble token list`).
        id: String,
    },
}

fn kind(k: TokenKind) -> &'static str {
    match k {
        TokenKind::Join => "join",
        TokenKind::Node => "node",
        TokenKind::Admin => "admin",
    }
}

/// Rows of `bramble token list`.
pub fn render(tokens: &[TokenInfo], now_ms: u64) -> String {
    let mut rows = vec![
        [
            "ID",
            "KIND",
            "NODE",
            "AGE",
            "EXPIRES",
            "USES",
            "REVOKED",
            "DESCRIPTION",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for t in tokens {
        let expires = match t.expires_ms {
            None => "never".to_string(),
            Some(e) if e <= now_ms => "expired".to_string(),
            Some(e) => format!("in {}", table::age(e, now_ms).trim_start_matches('-')),
        };
        rows.push(vec![
            t.id.clone(),
            kind(t.kind).into(),
            t.node.clone().unwrap_or_else(|| "-".into()),
            table::age(now_ms, t.created_ms),
            expires,
            t.uses_left
                .map_or_else(|| "-".to_string(), |n| format!("{n} left")),
            if t.revoked { "yes" } else { "no" }.into(),
            t.description.clone(),
        ]);
    }
    table::columns(&rows)
}

/// Runs a token subcommand.
pub async fn run(c: &mut Client, cmd: TokenCmd, out: &mut impl Write) -> Result<(), ClientError> {
    match cmd {
        TokenCmd::Create {
            ttl,
            uses,
            node,
            description,
        } => {
            let ttl_s = (!ttl.is_zero()).then(|| ttl.as_secs().max(1));
            match c
                .call(RequestBody::TokenCreate {
                    ttl_s,
                    description,
                    uses,
                    node: node.clone(),
                })
                .await?
            {
                ResponseBody::TokenCreated { info, token } => {
                    // The token on stdout alone (for `> join.token`); the rest on stderr.
                    let _ = writeln!(out, "{token}");
                    eprintln!(
                        "created join token {} ({}{}{}); it is shown only once: put it in the worker's --token-file (mode 0600)",
                        info.id,
                        match info.expires_ms {
                            Some(_) => format!("expires in {}", humantime(ttl)),
                            None => "valid until revoked".into(),
                        },
                        match info.uses_left {
                            Some(n) => format!(", {n} join{}", if n == 1 { "" } else { "s" }),
                            None => String::new(),
                        },
                        match &node {
                            Some(n) => format!(", for node {n} only"),
                            None => String::new(),
                        }
                    );
                }
                _ => return Err(usage("unexpected answer to token create".into())),
            }
        }
        TokenCmd::RotateJoin => match c.call(RequestBody::TokenRotateJoin).await? {
            ResponseBody::TokenCreated { info, token } => {
                let _ = writeln!(out, "{token}");
                eprintln!(
                    "join token rotated: the master's join token file now holds {} (shown only once); the previous one is revoked, joined nodes are not affected",
                    info.id
                );
            }
            _ => return Err(usage("unexpected answer to token rotate-join".into())),
        },
        TokenCmd::List => match c.call(RequestBody::TokenList).await? {
            ResponseBody::Tokens(t) => {
                let _ = write!(out, "{}", render(&t, bramble_server::api::now_ms()));
            }
            _ => return Err(usage("unexpected answer to token list".into())),
        },
        TokenCmd::Revoke { id } => match c.call(RequestBody::TokenRevoke { id }).await? {
            ResponseBody::Tokens(t) => {
                for t in t {
                    match &t.node {
                        Some(n) => {
                            let _ = writeln!(
                                out,
                                "token/{} revoked: node {n} is cut off and may not join again until you delete it (`bramble delete node {n}`) or create a token for it (`bramble token create --node {n}`)",
                                t.id
                            );
                        }
                        None => {
                            let _ = writeln!(out, "token/{} revoked", t.id);
                        }
                    }
                }
            }
            _ => return Err(usage("unexpected answer to token revoke".into())),
        },
    }
    Ok(())
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_without_secrets() {
        let t = TokenInfo {
            id: "node-abc".into(),
            kind: TokenKind::Node,
            node: Some("pi1".into()),
            description: "node pi1".into(),
            created_ms: 1_000,
            expires_ms: None,
            revoked: true,
            uses_left: None,
        };
        let s = render(&[t], 61_000);
        assert!(s.contains("node-abc") && s.contains("pi1") && s.contains("yes"));
        assert!(s.contains("never") && s.contains("60s"));
    }
}
