//! Fuzzes the master's handling of a connection's first frame: the version check, the Hello
//! decoding, the credential parsing and the credential check against a token table (admin, join,
//! a node credential, an expired and a revoked token). Besides "no panic": only the exact secrets
//! authenticate; the kind of an accepted token matches the role it was presented for (a client
//! gets in with an admin or a node credential, a worker or device with a join token or its own
//! node credential, never otherwise), and the principal names that token; a node credential is
//! only ever accepted for its own node name.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use bramble_server::api::auth::{self, Principal};
use bramble_server::store::TokenRow;
use bramble_wire::Role;
use libfuzzer_sys::fuzz_target;

fn row(id: &str, kind: &str, node: Option<&str>, secret: &str) -> TokenRow {
    TokenRow {
        id: id.into(),
        kind: kind.into(),
        node: node.map(Into::into),
        description: String::new(),
        created_ms: 0,
        expires_ms: if id == "join-old" { Some(10) } else { None },
        revoked: id == "node-gone",
        secret_hash: auth::hash_secret(secret),
        uses_left: None,
    }
}

fn table() -> &'static HashMap<String, TokenRow> {
    static T: OnceLock<HashMap<String, TokenRow>> = OnceLock::new();
    T.get_or_init(|| {
        [
            row("admin-1", "admin", None, "adminsecret"),
            row("join-1", "join", None, "joinsecret"),
            row("join-old", "join", None, "oldsecret"),
            row("node-1", "node", Some("pi1"), "nodesecret"),
            row("node-gone", "node", Some("pi2"), "gonesecret"),
        ]
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = auth::parse_credential(&String::from_utf8_lossy(data));
    let Ok(hello) = auth::parse_hello(data) else {
        return;
    };
    let cred = hello.credentials.as_str();
    match auth::check(table(), hello.role, hello.identity.as_str(), cred, 1000) {
        Ok(p) => {
            let (id, secret) = auth::parse_credential(cred).expect("accepted an unparsable credential");
            let want = match id.as_str() {
                "admin-1" => "adminsecret",
                "join-1" => "joinsecret",
                "node-1" => "nodesecret",
                other => panic!("accepted token {other}"),
            };
            assert_eq!(secret, want, "accepted a wrong secret");
            assert_eq!(p.token_id(), id, "the principal names another token");
            let kind = table()[&id].kind.as_str();
            let role = hello.role;
            match (&p, role) {
                (Principal::Admin { .. }, Role::Client) => assert_eq!(kind, "admin", "{p:?}"),
                (Principal::Node { node, .. }, _) => {
                    assert_eq!(kind, "node", "{role:?} got {p:?}");
                    assert_eq!(table()[&id].node.as_deref(), Some(node.as_str()));
                }
                (Principal::Joining { .. }, Role::Worker | Role::Device) => {
                    assert_eq!(kind, "join", "{role:?} got {p:?}")
                }
                _ => panic!("a {kind} token presented by a {role:?} became {p:?}"),
            }
            if let Principal::Node { node, .. } = &p
                && hello.role != Role::Client
            {
                assert_eq!(node, hello.identity.as_str(), "a node credential for another name");
            }
        }
        Err(d) => {
            // Refusals name token ids, never what was sent as a secret.
            if let Some((_, secret)) = auth::parse_credential(cred)
                && secret.len() >= 8
                && !hello.identity.as_str().contains(secret.as_str())
                && !table().keys().any(|id| id.contains(secret.as_str()))
            {
                assert!(!d.message.contains(secret.as_str()), "{}", d.message);
            }
        }
    }
});
