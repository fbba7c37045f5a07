-- Credentials: join tokens, node credentials and admin tokens. Only a hash of each secret is kept
-- (sha256, lowercase hex); the secret itself is shown once when it is created. Rows are written
-- on create, revoke and join only, never at idle.
CREATE TABLE tokens (
    id          TEXT    PRIMARY KEY,  -- public part of `id.secret`
    kind        TEXT    NOT NULL,     -- 'join', 'node' or 'admin'
    node        TEXT,                 -- the node a 'node' credential belongs to
    description TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER,              -- NULL = until revoked
    revoked     INTEGER NOT NULL DEFAULT 0,
    secret_hash TEXT    NOT NULL      -- sha256(secret), lowercase hex
) WITHOUT ROWID;

-- A node name has at most one live credential: a second join of the same name fails here,
-- atomically, until the first credential is revoked.
CREATE UNIQUE INDEX tokens_one_live_credential_per_node ON tokens (node)
    WHERE kind = 'node' AND revoked = 0;
