//! Credentials: join tokens, node credentials and admin tokens (`id.secret`), their storage as
//! hashed rows, the check of a Hello's credential, and the limit on failed authentications.
//!
//! Checking is transport-independent: [`check`] is a pure function of the token table, the
//! Hello's role, identity and credential, and the time. The TLS layer (if any) adds or strips the
//! `K10<pin>::` prefix of token files; a credential that still carries it is accepted too.
//!
//! Secrets are never stored (only `sha256(secret)`) and never logged: log lines name token ids.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bramble_wire::msg::{TokenInfo, TokenKind};
use bramble_wire::{RejectReason, Role};
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError, TokenRow};

/// Reads `path`, or creates it with a fresh `id.secret` credential of `kind` (mode 0600) if it
/// does not exist, written as `K10<pin>::id.secret`; returns the credential without the pin.
pub fn load_or_create(path: &Path, kind: TokenKind, pin: &str) -> anyhow::Result<String> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let t = credential_of(&s, path)?;
            anyhow::ensure!(
                (16..=256).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic()),
                "{}: a token must be 16-256 printable ASCII characters; delete the file to have a new one generated",
                path.display()
            );
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (id, secret) = new_credential(kind)?;
            let t = format!("{id}.{secret}");
            write_secret_file(path, &super::tls::pinned_token(pin, &t))?;
            Ok(t)
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot read token file {}: {e}",
            path.display()
        )),
    }
}

/// Writes a file holding a secret: mode 0600 from its creation, fsynced, complete before it
/// appears (written aside, then linked into place, which fails rather than replace a file).
fn write_secret_file(path: &Path, content: &str) -> anyhow::Result<()> {
    put_secret_file(path, content, false)
}

/// Replaces a file holding a secret (`bramble token rotate-join`): written aside with mode
/// 0600, fsynced, renamed over the old one, the directory fsynced: a crash leaves the old file
/// or the new one, never a partial one.
fn replace_secret_file(path: &Path, content: &str) -> anyhow::Result<()> {
    put_secret_file(path, content, true)
}

/// The two above: the content in a 0600 file aside, fsynced, then linked into place (never
/// over a file) or renamed over the old one (`replace`), and the directory fsynced.
fn put_secret_file(path: &Path, content: &str, replace: bool) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot create token file {}: {e}", tmp.display()))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    writeln!(f, "{content}")?;
    f.sync_all()?;
    if replace {
        fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            anyhow::anyhow!("cannot replace token file {}: {e}", path.display())
        })?;
    } else {
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        linked.map_err(|e| anyhow::anyhow!("cannot create token file {}: {e}", path.display()))?;
    }
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Reads a token file given on the command line.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let t = fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!("cannot read token file {}: {e}; pass --token-file with the master's DATA_DIR/admin.token", path.display())
    })?;
    credential_of(&t, path)
}

/// The credential of a token file's text (without its `K10<pin>::` prefix).
fn credential_of(text: &str, path: &Path) -> anyhow::Result<String> {
    bramble_wire::token::split_token(text)
        .map(|p| p.credential.to_string())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `n` random bytes as hex, from the kernel's CSPRNG.
pub fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .map_err(|e| anyhow::anyhow!("cannot read /dev/urandom: {e}"))?;
    Ok(hex(&buf))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares tokens in time independent of where they differ.
pub fn token_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Default token paths under the data dir.
pub fn default_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join("admin.token"), data_dir.join("join.token"))
}

/// sha256 of a secret, lowercase hex: what the store keeps.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// The store's name of a kind.
pub fn kind_str(k: TokenKind) -> &'static str {
    match k {
        TokenKind::Join => "join",
        TokenKind::Node => "node",
        TokenKind::Admin => "admin",
    }
}

fn kind_parse(s: &str) -> Option<TokenKind> {
    match s {
        "join" => Some(TokenKind::Join),
        "node" => Some(TokenKind::Node),
        "admin" => Some(TokenKind::Admin),
        _ => None,
    }
}

/// A fresh `(id, secret)`: `KIND-<12 hex>` and 48 hex characters (192 bits).
pub fn new_credential(kind: TokenKind) -> anyhow::Result<(String, String)> {
    Ok((
        format!("{}-{}", kind_str(kind), random_hex(6)?),
        random_hex(24)?,
    ))
}

/// Splits what a peer sent (or a token file holds) into `(id, secret)`. Strips a `K10<pin>::`
/// prefix. A bare token without a dot (token files written before credentials had ids) is its
/// own secret, with an id derived from its hash, so pre-existing files keep working.
pub fn parse_credential(sent: &str) -> Option<(String, String)> {
    let cred = bramble_wire::token::split_token(sent).ok()?.credential;
    if cred.is_empty() || !cred.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    match bramble_wire::token::split_credential(cred) {
        Some((id, secret)) => Some((id.to_string(), secret.to_string())),
        None => Some((
            format!("legacy-{}", &hash_secret(cred)[..12]),
            cred.to_string(),
        )),
    }
}

/// The first frame of a connection as a Hello: its version checked before anything else is
/// decoded, then the rest. Pure (the fuzz target `handshake` drives it with arbitrary bytes).
pub fn parse_hello(body: &[u8]) -> Result<bramble_wire::Hello, Denied> {
    use bramble_wire::{Handshake, WireError};
    if let Err(e) = Handshake::check_hello_version(body) {
        let (reason, msg) = match e {
            WireError::UnsupportedVersion { min, max, got } => (
                RejectReason::UnsupportedVersion { min, max },
                format!(
                    "protocol version {got} is not supported; this master speaks {min}..={max}: upgrade the older side"
                ),
            ),
            other => (RejectReason::Malformed, format!("bad hello: {other}")),
        };
        return Err(denied(reason, false, msg));
    }
    match bramble_wire::frame::decode::<Handshake>(body) {
        Ok(Handshake::Hello(h)) => Ok(h),
        Ok(_) | Err(_) => Err(denied(
            RejectReason::Malformed,
            false,
            "expected a Hello".into(),
        )),
    }
}

/// Who a connection authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An admin token: everything.
    Admin {
        /// Token id.
        token: String,
    },
    /// A node's own credential (as a worker session or as a client).
    Node {
        /// Token id.
        token: String,
        /// The node it is bound to.
        node: String,
    },
    /// A worker presenting a join token for a node name that has no credential yet.
    Joining {
        /// The join token's id.
        token: String,
    },
}

impl Principal {
    /// The id of the token this principal authenticated with.
    pub fn token_id(&self) -> &str {
        match self {
            Principal::Admin { token }
            | Principal::Node { token, .. }
            | Principal::Joining { token } => token,
        }
    }
}

/// A refused Hello: what the peer is told, and whether it counts as a failed authentication
/// (for the per-address limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Reject reason.
    pub reason: RejectReason,
    /// Message for the peer (and the master's log): names the token id, never the secret.
    pub message: String,
    /// A wrong secret or unknown id (counted by the rate limit), not a valid token misused.
    pub bad_secret: bool,
}

fn denied(reason: RejectReason, bad_secret: bool, message: String) -> Denied {
    Denied {
        reason,
        message,
        bad_secret,
    }
}

/// Checks a Hello's credential against the token table. Pure: no I/O, time is an argument.
pub fn check(
    rows: &HashMap<String, TokenRow>,
    role: Role,
    identity: &str,
    sent: &str,
    now_ms: u64,
) -> Result<Principal, Denied> {
    let wrong = || {
        let msg = match role {
            Role::Client => {
                "wrong admin token: use the master's DATA_DIR/admin.token (--token-file or BRAMBLE_TOKEN_FILE), or a node's credential"
            }
            Role::Worker | Role::Device => {
                "wrong join token: use the master's DATA_DIR/join.token or one from `bramble token create`"
            }
        };
        denied(RejectReason::BadCredentials, true, msg.into())
    };
    let Some((id, secret)) = parse_credential(sent) else {
        return Err(wrong());
    };
    let Some(row) = rows.get(&id) else {
        return Err(wrong());
    };
    // Compare hashes in constant time (the hash hides the secret's length too).
    if !token_eq(&hash_secret(&secret), &row.secret_hash) {
        return Err(wrong());
    }
    let kind = kind_parse(&row.kind).ok_or_else(wrong)?;
    if row.revoked {
        return Err(denied(
            RejectReason::BadCredentials,
            false,
            format!(
                "token {id} was revoked; ask an admin for a new one (`bramble token create`){}",
                match &row.node {
                    Some(n) => format!(" and re-join node {n}"),
                    None => String::new(),
                }
            ),
        ));
    }
    if let Some(exp) = row.expires_ms
        && now_ms >= exp
    {
        return Err(denied(
            RejectReason::BadCredentials,
            false,
            format!(
                "token {id} expired {} s ago; create a new one with `bramble token create --ttl 24h`",
                (now_ms - exp) / 1000
            ),
        ));
    }
    match (role, kind) {
        (Role::Client, TokenKind::Admin) => Ok(Principal::Admin { token: id }),
        (Role::Client, TokenKind::Node) => Ok(Principal::Node {
            token: id,
            node: row.node.clone().unwrap_or_default(),
        }),
        (Role::Client, TokenKind::Join) => Err(denied(
            RejectReason::BadCredentials,
            false,
            format!(
                "token {id} is a join token: it only registers workers; use the admin token (DATA_DIR/admin.token) for the CLI"
            ),
        )),
        (Role::Worker | Role::Device, TokenKind::Node) => {
            let owner = row.node.as_deref().unwrap_or_default();
            if owner == identity {
                Ok(Principal::Node {
                    token: id,
                    node: owner.to_string(),
                })
            } else {
                Err(denied(
                    RejectReason::BadIdentity,
                    false,
                    format!(
                        "credential {id} belongs to node {owner:?}, not {identity:?}: a node credential is only valid for its own node name"
                    ),
                ))
            }
        }
        (Role::Worker | Role::Device, TokenKind::Join) => {
            if let Some(bound) = row.node.as_deref()
                && bound != identity
            {
                return Err(denied(
                    RejectReason::BadIdentity,
                    false,
                    format!(
                        "join token {id} was created for node {bound:?}, not {identity:?}: use a token for this name (`bramble token create --node {identity}`)"
                    ),
                ));
            }
            if row.uses_left == Some(0) {
                return Err(denied(
                    RejectReason::BadCredentials,
                    false,
                    format!(
                        "join token {id} is used up (all its --uses joined); create a new one with `bramble token create`"
                    ),
                ));
            }
            if let Some(c) = rows
                .values()
                .find(|r| r.kind == "node" && !r.revoked && r.node.as_deref() == Some(identity))
            {
                return Err(denied(
                    RejectReason::BadIdentity,
                    false,
                    format!(
                        "node {identity} already joined (credential {}); it must use the credential in its state dir; to re-join, delete the node (`bramble delete node {identity}`, which deletes its credential)",
                        c.id
                    ),
                ));
            }
            // A revoked node stays out until an admin deletes it or makes a token for it.
            if row.node.as_deref() != Some(identity)
                && let Some(r) = rows
                    .values()
                    .find(|r| r.kind == "node" && r.revoked && r.node.as_deref() == Some(identity))
            {
                return Err(denied(
                    RejectReason::BadIdentity,
                    false,
                    format!(
                        "node {identity}'s credential {} was revoked: the name may not join again until an admin deletes the node (`bramble delete node {identity}`) or creates a token for it (`bramble token create --node {identity}`)",
                        r.id
                    ),
                ));
            }
            Ok(Principal::Joining { token: id })
        }
        (Role::Worker | Role::Device, TokenKind::Admin) => Err(denied(
            RejectReason::BadCredentials,
            false,
            format!(
                "token {id} is an admin token: workers join with a join token (DATA_DIR/join.token or `bramble token create`)"
            ),
        )),
    }
}

/// A row as listed: never the secret or its hash.
pub fn info(r: &TokenRow) -> TokenInfo {
    TokenInfo {
        id: r.id.clone(),
        kind: kind_parse(&r.kind).unwrap_or(TokenKind::Join),
        node: r.node.clone(),
        description: r.description.clone(),
        created_ms: r.created_ms,
        expires_ms: r.expires_ms,
        revoked: r.revoked,
        uses_left: r.uses_left,
    }
}

/// The token table in memory (loaded at start, updated on every write), and a generation counter
/// bumped by each revocation so sessions can check "still valid?" per frame without a lock.
#[derive(Debug, Default)]
pub struct Tokens {
    rows: Mutex<HashMap<String, TokenRow>>,
    generation: AtomicU64,
}

impl Tokens {
    /// Loads the table and makes sure the admin and join token files have rows (a file from an
    /// older master, or one an operator wrote, becomes a row; a revoked row stays revoked).
    pub async fn load(
        store: &Store,
        admin: &str,
        join: &str,
        now_ms: u64,
    ) -> anyhow::Result<Tokens> {
        for (cred, kind, what) in [
            (admin, TokenKind::Admin, "admin token file"),
            (join, TokenKind::Join, "join token file"),
        ] {
            let (id, secret) = parse_credential(cred).ok_or_else(|| {
                anyhow::anyhow!("the {what} does not hold a token; delete it to have one generated")
            })?;
            let hash = hash_secret(&secret);
            let row = TokenRow {
                id: id.clone(),
                kind: kind_str(kind).into(),
                node: None,
                description: format!("{what} (created at first start)"),
                created_ms: now_ms,
                expires_ms: None,
                revoked: false,
                secret_hash: hash.clone(),
                uses_left: None,
            };
            if !store.token_insert(&row).await? && store.token_set_hash(&id, &hash).await? {
                tracing::info!(token = %id, "{what} changed on disk: its row now holds the new secret's hash");
            }
        }
        let rows = store.tokens().await?;
        Ok(Tokens {
            rows: Mutex::new(rows.into_iter().map(|r| (r.id.clone(), r)).collect()),
            generation: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TokenRow>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`check`] against the current table.
    pub fn authenticate(
        &self,
        role: Role,
        identity: &str,
        sent: &str,
        now_ms: u64,
    ) -> Result<Principal, Denied> {
        check(&self.lock(), role, identity, sent, now_ms)
    }

    /// Whether `token` is still usable. Cheap when nothing was revoked since `seen` (one atomic
    /// load); otherwise one map lookup. Err carries the message for the log and the peer.
    pub fn still_valid(&self, token: &str, seen: &mut u64, now_ms: u64) -> Result<(), String> {
        let g = self.generation.load(Ordering::Acquire);
        if g == *seen {
            return Ok(());
        }
        *seen = g;
        match self.lock().get(token) {
            Some(r) if r.revoked => Err(format!("token {token} was revoked")),
            Some(r) if r.expires_ms.is_some_and(|e| now_ms >= e) => {
                Err(format!("token {token} expired"))
            }
            Some(_) => Ok(()),
            None => Err(format!("token {token} no longer exists")),
        }
    }

    /// The generation to start a session's [`Tokens::still_valid`] checks from.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Creates a token. Returns its row and its `id.secret`. For a node credential, `Ok(None)`
    /// means the node already has a live one.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        store: &Store,
        kind: TokenKind,
        node: Option<&str>,
        description: &str,
        ttl_ms: Option<u64>,
        uses: Option<u32>,
        now_ms: u64,
    ) -> Result<Option<(TokenRow, String)>, CreateError> {
        let (id, secret) = new_credential(kind).map_err(CreateError::Random)?;
        let row = TokenRow {
            id: id.clone(),
            kind: kind_str(kind).into(),
            node: node.map(str::to_string),
            description: description.to_string(),
            created_ms: now_ms,
            expires_ms: ttl_ms.map(|t| now_ms.saturating_add(t)),
            revoked: false,
            secret_hash: hash_secret(&secret),
            uses_left: uses,
        };
        if !store.token_insert(&row).await? {
            return Ok(None);
        }
        self.lock().insert(id.clone(), row.clone());
        Ok(Some((row, format!("{id}.{secret}"))))
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Vec<TokenRow> {
        let mut v: Vec<TokenRow> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        v
    }

    /// Takes one use of join token `id` (durably first): `Ok(false)` when it has none left.
    pub async fn take_use(&self, store: &Store, id: &str) -> Result<bool, StoreError> {
        if !store.token_use(id).await? {
            return Ok(false);
        }
        if let Some(r) = self.lock().get_mut(id)
            && let Some(n) = &mut r.uses_left
        {
            *n = n.saturating_sub(1);
        }
        Ok(true)
    }

    /// Deletes node `node`'s credentials, live or revoked (`bramble delete node`): a session
    /// using one is cut off at its next frame, and the name may join again. Returns their ids.
    pub async fn forget_node(&self, store: &Store, node: &str) -> Result<Vec<String>, StoreError> {
        let ids = store.token_delete_node(node).await?;
        {
            let mut rows = self.lock();
            rows.retain(|_, r| !(r.kind == "node" && r.node.as_deref() == Some(node)));
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(ids)
    }

    /// Revokes a token (durably first). `Ok(None)` if there is no such id.
    pub async fn revoke(&self, store: &Store, id: &str) -> Result<Option<TokenRow>, StoreError> {
        if !store.token_revoke(id).await? {
            return Ok(None);
        }
        let row = {
            let mut rows = self.lock();
            rows.get_mut(id).map(|r| {
                r.revoked = true;
                r.clone()
            })
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(row)
    }
}

/// Why [`Tokens::create`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// No randomness.
    #[error("{0}")]
    Random(anyhow::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Limits failed authentications per source address: a token bucket of `burst` failures that
/// refills at `per_s` a second. An address with an empty bucket has its wrong secrets answered
/// `Busy` (never its right ones). Each address is logged once per blocked window. Pure: time is
/// an argument.
#[derive(Debug)]
pub struct FailLimiter {
    burst: f64,
    per_s: f64,
    max_addrs: usize,
    addrs: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
    logged: bool,
}

/// What [`FailLimiter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead.
    Yes,
    /// Refuse; first refusal of this window (log it).
    NoLog {
        /// Seconds until the next attempt is allowed.
        retry_s: u64,
    },
    /// Refuse quietly (already logged).
    No {
        /// Seconds until the next attempt is allowed.
        retry_s: u64,
    },
}

impl FailLimiter {
    /// `burst` failures at once, refilled at `per_s` a second; at most `max_addrs` addresses
    /// tracked (memory stays bounded under a spray from many addresses).
    pub fn new(burst: u32, per_s: f64, max_addrs: usize) -> FailLimiter {
        FailLimiter {
            burst: f64::from(burst.max(1)),
            per_s: per_s.max(0.001),
            max_addrs: max_addrs.max(1),
            addrs: HashMap::new(),
        }
    }

    fn refill(&self, b: &mut Bucket, now_ms: u64) {
        let dt = now_ms.saturating_sub(b.last_ms) as f64 / 1000.0;
        b.tokens = (b.tokens + dt * self.per_s).min(self.burst);
        b.last_ms = now_ms;
    }

    /// Whether a new connection from `ip` may try to authenticate.
    pub fn admit(&mut self, ip: IpAddr, now_ms: u64) -> Admit {
        let Some(mut b) = self.addrs.get(&ip).copied() else {
            return Admit::Yes;
        };
        self.refill(&mut b, now_ms);
        let out = if b.tokens >= 1.0 {
            b.logged = false;
            Admit::Yes
        } else {
            let retry_s = ((1.0 - b.tokens) / self.per_s).ceil() as u64;
            if b.logged {
                Admit::No { retry_s }
            } else {
                b.logged = true;
                Admit::NoLog { retry_s }
            }
        };
        self.addrs.insert(ip, b);
        out
    }

    /// Records a failed authentication from `ip`.
    pub fn failed(&mut self, ip: IpAddr, now_ms: u64) {
        if !self.addrs.contains_key(&ip) && self.addrs.len() >= self.max_addrs {
            // Forget addresses whose buckets are full again; if none, forget everything (memory
            // stays bounded; the limit is best effort under a spray from many addresses).
            let (burst, per_s) = (self.burst, self.per_s);
            self.addrs.retain(|_, b| {
                let dt = now_ms.saturating_sub(b.last_ms) as f64 / 1000.0;
                b.tokens + dt * per_s < burst
            });
            if self.addrs.len() >= self.max_addrs {
                self.addrs.clear();
            }
        }
        let burst = self.burst;
        let mut b = self.addrs.get(&ip).copied().unwrap_or(Bucket {
            tokens: burst,
            last_ms: now_ms,
            logged: false,
        });
        self.refill(&mut b, now_ms);
        b.tokens = (b.tokens - 1.0).max(0.0);
        self.addrs.insert(ip, b);
    }
}

impl super::Master {
    /// Checks a Hello's credential. A wrong secret counts against the peer's address; once the
    /// address is over its budget ([`FailLimiter`]), its wrong secrets are answered `Busy` and no
    /// longer logged one by one. A right credential is never throttled: secrets are 192 random
    /// bits, so the budget is there to quiet a misconfigured or hostile client, and one bad
    /// client must not lock out the valid credentials of others behind the same address (a NAT,
    /// the admin's laptop next to a board with a stale token).
    pub(crate) fn authenticate(
        &self,
        hello: &bramble_wire::Hello,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Principal, Denied> {
        let now = super::now_ms();
        let identity = hello.identity.as_str();
        let r = self
            .tokens
            .authenticate(hello.role, identity, hello.credentials.as_str(), now);
        let Err(d) = r else { return r };
        let budget = match peer {
            Some(p) if d.bad_secret => {
                let mut l = self.auth_limit.lock().unwrap_or_else(|e| e.into_inner());
                let admit = l.admit(p.ip(), now);
                l.failed(p.ip(), now);
                Some((p.ip(), admit))
            }
            _ => None,
        };
        let retry_s = match budget {
            None | Some((_, Admit::Yes)) => {
                // The message names token ids, never secrets.
                tracing::warn!(peer = ?peer, role = ?hello.role, %identity, "authentication refused: {}", d.message);
                return Err(d);
            }
            Some((ip, Admit::NoLog { retry_s })) => {
                tracing::warn!(%ip, "too many failed authentications: answering this address's wrong tokens Busy for about {retry_s} s (valid tokens still get in; logged once per window)");
                retry_s
            }
            Some((_, Admit::No { retry_s })) => retry_s,
        };
        let ip = budget.map(|(ip, _)| ip.to_string()).unwrap_or_default();
        Err(denied(
            RejectReason::Busy,
            true,
            format!(
                "too many failed authentications from {ip}: retry in {retry_s} s with the right token"
            ),
        ))
    }

    /// After a worker authenticated: a join issues the node its own credential (returned once,
    /// to send it as `NodeDown::Credential`). Returns the session's token id.
    pub(crate) async fn join(
        &self,
        p: &Principal,
        node: &str,
    ) -> Result<(String, Option<String>), Denied> {
        match p {
            Principal::Node { token, .. } => Ok((token.clone(), None)),
            Principal::Admin { token } => Err(denied(
                RejectReason::BadCredentials,
                false,
                format!("token {token} is an admin token: workers join with a join token"),
            )),
            Principal::Joining { token } => {
                match self.tokens.take_use(&self.store, token).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(denied(
                            RejectReason::BadCredentials,
                            false,
                            format!(
                                "join token {token} is used up (all its --uses joined); create a new one with `bramble token create`"
                            ),
                        ));
                    }
                    Err(e) => {
                        tracing::error!(%node, "cannot count a use of join token {token}: {e}");
                        return Err(denied(
                            RejectReason::Busy,
                            false,
                            "the master cannot record the join right now: retry later".into(),
                        ));
                    }
                }
                let desc = format!("node {node}, joined with {token}");
                let now = super::now_ms();
                match self
                    .tokens
                    .create(
                        &self.store,
                        TokenKind::Node,
                        Some(node),
                        &desc,
                        None,
                        None,
                        now,
                    )
                    .await
                {
                    Ok(Some((row, cred))) => {
                        tracing::info!(%node, join_token = %token, credential = %row.id, "node joined: issued its credential");
                        Ok((row.id, Some(cred)))
                    }
                    Ok(None) => Err(denied(
                        RejectReason::BadIdentity,
                        false,
                        format!(
                            "node {node} already joined; to re-join, delete the node (`bramble delete node {node}`, which deletes its credential)"
                        ),
                    )),
                    Err(e) => {
                        tracing::error!(%node, "cannot store the node's credential: {e}");
                        Err(denied(
                            RejectReason::Busy,
                            false,
                            format!(
                                "the master cannot store node {node}'s credential right now: retry later"
                            ),
                        ))
                    }
                }
            }
        }
    }

    /// What to hand a person for a new credential: `id.secret`, prefixed with the master
    /// certificate's pin (`K10<sha256>::`) when the master serves TLS.
    pub(crate) fn token_text(&self, credential: &str) -> String {
        super::tls::pinned_token(&self.pin, credential)
    }
}

impl super::Master {
    /// `TokenCreate`, `TokenList`, `TokenRevoke` (authorization already checked: admins only).
    pub(crate) async fn token_call(
        &self,
        body: bramble_wire::msg::RequestBody,
    ) -> Result<bramble_wire::msg::ResponseBody, bramble_wire::msg::ApiError> {
        use bramble_wire::msg::{ApiError, ErrorCode, RequestBody, ResponseBody};
        let err = |code, message: String| ApiError { code, message };
        match body {
            RequestBody::TokenCreate {
                ttl_s,
                description,
                uses,
                node,
            } => {
                if uses == Some(0) {
                    return Err(err(
                        ErrorCode::Invalid,
                        "token --uses must be at least 1 (omit it for any number of joins)".into(),
                    ));
                }
                if let Some(n) = &node {
                    crate::validate::check_name("token --node", n)
                        .map_err(|e| err(ErrorCode::Invalid, e.to_string()))?;
                }
                if description.len() > 200 || description.chars().any(char::is_control) {
                    return Err(err(
                        ErrorCode::Invalid,
                        "token description: at most 200 characters, no control characters".into(),
                    ));
                }
                if ttl_s == Some(0) {
                    return Err(err(
                        ErrorCode::Invalid,
                        "token --ttl must be more than 0 s (omit it for a token valid until revoked)".into(),
                    ));
                }
                let ttl_ms = ttl_s.map(|s| s.saturating_mul(1000));
                let now = super::now_ms();
                match self
                    .tokens
                    .create(
                        &self.store,
                        TokenKind::Join,
                        node.as_deref(),
                        &description,
                        ttl_ms,
                        // A token for one node name admits it once unless told otherwise.
                        uses.or(node.as_ref().map(|_| 1)),
                        now,
                    )
                    .await
                {
                    Ok(Some((row, cred))) => {
                        tracing::info!(token = %row.id, expires_ms = ?row.expires_ms, "join token created");
                        Ok(ResponseBody::TokenCreated {
                            info: info(&row),
                            token: self.token_text(&cred),
                        })
                    }
                    Ok(None) => Err(err(
                        ErrorCode::Conflict,
                        "a token with the same id exists (random collision): retry".into(),
                    )),
                    Err(e) => Err(err(
                        ErrorCode::Internal,
                        format!("cannot create a token: {e}"),
                    )),
                }
            }
            RequestBody::TokenRotateJoin => self.rotate_join().await,
            RequestBody::TokenList => Ok(ResponseBody::Tokens(
                self.tokens.list().iter().map(info).collect(),
            )),
            RequestBody::TokenRevoke { id } => match self.tokens.revoke(&self.store, &id).await {
                Ok(Some(row)) => {
                    tracing::info!(token = %id, node = ?row.node, "token revoked");
                    Ok(ResponseBody::Tokens(vec![info(&row)]))
                }
                Ok(None) => Err(err(
                    ErrorCode::NotFound,
                    format!("token {id:?} not found; list them with `bramble token list`"),
                )),
                Err(e) => Err(e.into()),
            },
            _ => Err(err(ErrorCode::Internal, "not a token call".into())),
        }
    }
}

impl super::Master {
    /// `bramble token rotate-join`: a new bootstrap join token in the join token file, the old
    /// one revoked. Nodes that joined keep their own credentials; only new joins need the new
    /// token.
    async fn rotate_join(
        &self,
    ) -> Result<bramble_wire::msg::ResponseBody, bramble_wire::msg::ApiError> {
        use bramble_wire::msg::{ApiError, ErrorCode, ResponseBody};
        let internal = |message: String| ApiError {
            code: ErrorCode::Internal,
            message,
        };
        let path = self
            .cfg
            .join_token_file
            .clone()
            .unwrap_or_else(|| default_paths(&self.cfg.data_dir).1);
        let old = fs::read_to_string(&path)
            .ok()
            .and_then(|t| parse_credential(&t))
            .map(|(id, _)| id);
        let now = super::now_ms();
        let desc = "join token file (rotated with `bramble token rotate-join`)";
        let (row, cred) = match self
            .tokens
            .create(&self.store, TokenKind::Join, None, desc, None, None, now)
            .await
        {
            Ok(Some(x)) => x,
            Ok(None) => return Err(internal("a token id collided: retry".into())),
            Err(e) => return Err(internal(format!("cannot create the join token: {e}"))),
        };
        let text = self.token_text(&cred);
        if let Err(e) = replace_secret_file(&path, &text) {
            // The file still holds the old token, which stays valid: nothing half-done.
            let _ = self.tokens.revoke(&self.store, &row.id).await;
            return Err(internal(format!("{e:#}; the old join token stays valid")));
        }
        if let Some(old) = old
            && old != row.id
        {
            match self.tokens.revoke(&self.store, &old).await {
                Ok(_) => {}
                Err(e) => {
                    return Err(internal(format!(
                        "the new join token is in {} but the old one ({old}) could not be revoked: {e}; revoke it with `bramble token revoke {old}`",
                        path.display()
                    )));
                }
            }
            tracing::info!(old = %old, new = %row.id, path = %path.display(), "join token rotated");
        }
        Ok(ResponseBody::TokenCreated {
            info: info(&row),
            token: text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, kind: &str, node: Option<&str>, secret: &str) -> TokenRow {
        TokenRow {
            id: id.into(),
            kind: kind.into(),
            node: node.map(Into::into),
            description: String::new(),
            created_ms: 0,
            expires_ms: None,
            revoked: false,
            secret_hash: hash_secret(secret),
            uses_left: None,
        }
    }

    fn table(rows: Vec<TokenRow>) -> HashMap<String, TokenRow> {
        rows.into_iter().map(|r| (r.id.clone(), r)).collect()
    }

    #[test]
    fn credentials_parse_with_pins_and_legacy_tokens() {
        assert_eq!(
            parse_credential("join-1.abc"),
            Some(("join-1".into(), "abc".into()))
        );
        let pinned = format!("K10{}::join-1.abc", "ab".repeat(32));
        assert_eq!(
            parse_credential(&pinned),
            Some(("join-1".into(), "abc".into()))
        );
        let (id, secret) = parse_credential("00112233445566778899").unwrap();
        assert!(id.starts_with("legacy-"));
        assert_eq!(secret, "00112233445566778899");
        assert_eq!(parse_credential(""), None);
        assert_eq!(parse_credential("a b.c"), None);
    }

    #[test]
    fn checks_kind_role_node_expiry_and_revocation() {
        let mut expired = row("join-old", "join", None, "s");
        expired.expires_ms = Some(1000);
        let mut revoked = row("node-r", "node", Some("pi2"), "s");
        revoked.revoked = true;
        let t = table(vec![
            row("admin-1", "admin", None, "a"),
            row("join-1", "join", None, "j"),
            row("node-1", "node", Some("pi1"), "n"),
            expired,
            revoked,
        ]);
        let now = 5000;
        assert_eq!(
            check(&t, Role::Client, "x", "admin-1.a", now),
            Ok(Principal::Admin {
                token: "admin-1".into()
            })
        );
        let e = check(&t, Role::Client, "x", "admin-1.wrong", now).unwrap_err();
        assert!(e.bad_secret && e.message.contains("wrong admin token"));
        assert!(
            check(&t, Role::Client, "x", "nope.a", now)
                .unwrap_err()
                .bad_secret
        );
        // Join tokens register workers, once per name.
        assert_eq!(
            check(&t, Role::Worker, "pi9", "join-1.j", now),
            Ok(Principal::Joining {
                token: "join-1".into()
            })
        );
        let e = check(&t, Role::Worker, "pi1", "join-1.j", now).unwrap_err();
        assert_eq!(e.reason, RejectReason::BadIdentity);
        assert!(e.message.contains("pi1 already joined") && e.message.contains("node-1"));
        // A revoked credential blocks the name (not the original join token: a token for it).
        let e = check(&t, Role::Worker, "pi2", "join-1.j", now).unwrap_err();
        assert_eq!(e.reason, RejectReason::BadIdentity);
        assert!(
            e.message.contains("node-r was revoked")
                && e.message.contains("bramble delete node pi2")
                && e.message.contains("--node pi2"),
            "{}",
            e.message
        );
        let mut for_pi2 = row("join-pi2", "join", Some("pi2"), "p");
        for_pi2.uses_left = Some(1);
        let mut used = row("join-used", "join", None, "u");
        used.uses_left = Some(0);
        let mut t = t;
        t.insert(for_pi2.id.clone(), for_pi2);
        t.insert(used.id.clone(), used);
        assert!(check(&t, Role::Worker, "pi2", "join-pi2.p", now).is_ok());
        // A token for one name admits no other.
        let e = check(&t, Role::Worker, "pi5", "join-pi2.p", now).unwrap_err();
        assert!(
            e.message.contains("created for node \"pi2\""),
            "{}",
            e.message
        );
        let e = check(&t, Role::Worker, "pi5", "join-used.u", now).unwrap_err();
        assert!(e.message.contains("used up"), "{}", e.message);
        assert!(check(&t, Role::Client, "x", "join-1.j", now).is_err());
        // Node credentials: own name only.
        assert!(matches!(
            check(&t, Role::Worker, "pi1", "node-1.n", now),
            Ok(Principal::Node { node, .. }) if node == "pi1"
        ));
        let e = check(&t, Role::Worker, "pi3", "node-1.n", now).unwrap_err();
        assert!(e.message.contains("belongs to node \"pi1\""));
        assert!(matches!(
            check(&t, Role::Client, "x", "node-1.n", now),
            Ok(Principal::Node { .. })
        ));
        let e = check(&t, Role::Worker, "pi2", "node-r.s", now).unwrap_err();
        assert!(e.message.contains("revoked") && !e.bad_secret);
        let e = check(&t, Role::Worker, "pi4", "join-old.s", now).unwrap_err();
        assert!(e.message.contains("expired 4 s ago"));
        assert!(check(&t, Role::Worker, "pi4", "admin-1.a", now).is_err());
    }

    #[test]
    fn limiter_blocks_after_burst_logs_once_and_refills() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let mut l = FailLimiter::new(3, 1.0, 100);
        for _ in 0..3 {
            assert_eq!(l.admit(ip, 0), Admit::Yes);
            l.failed(ip, 0);
        }
        assert_eq!(l.admit(ip, 0), Admit::NoLog { retry_s: 1 });
        assert_eq!(l.admit(ip, 100), Admit::No { retry_s: 1 });
        assert_eq!(l.admit(other, 100), Admit::Yes);
        assert_eq!(l.admit(ip, 1000), Admit::Yes);
        // Bounded memory.
        let mut l = FailLimiter::new(1, 1.0, 2);
        for i in 0..10u8 {
            l.failed(IpAddr::from([192, 0, 2, i]), 0);
        }
        assert!(l.addrs.len() <= 2);
    }
}
