//! The `tokens` table: join tokens, node credentials and admin tokens, each with a hash of its
//! secret (never the secret). Written only on create, revoke and join — rare events — through a
//! pooled connection (SQLite serialises it with the object writer; `busy_timeout` waits).

use sqlx::Row;

use super::{Store, StoreError};

/// One row of the `tokens` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Public id (the part before the dot).
    pub id: String,
    /// `join`, `node` or `admin`.
    pub kind: String,
    /// The node a `node` credential belongs to.
    pub node: Option<String>,
    /// Free text.
    pub description: String,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Expiry, ms since the epoch.
    pub expires_ms: Option<u64>,
    /// Revoked.
    pub revoked: bool,
    /// sha256 of the secret, lowercase hex.
    pub secret_hash: String,
    /// Joins left for a join token with a use limit; `None` = no limit.
    pub uses_left: Option<u32>,
}

fn row(r: &sqlx::sqlite::SqliteRow) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        node: r.try_get("node")?,
        description: r.try_get("description")?,
        created_ms: r.try_get::<i64, _>("created_ms")? as u64,
        expires_ms: r.try_get::<Option<i64>, _>("expires_ms")?.map(|v| v as u64),
        revoked: r.try_get::<i64, _>("revoked")? != 0,
        secret_hash: r.try_get("secret_hash")?,
        uses_left: r
            .try_get::<Option<i64>, _>("uses_left")?
            .map(|v| v.clamp(0, i64::from(u32::MAX)) as u32),
    })
}

impl Store {
    /// Every token, by id.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY created_ms, id")
            .fetch_all(&self.shared.pool)
            .await?;
        rows.iter().map(row).collect()
    }

    /// Inserts a token. Returns `Ok(false)` if it would be a second live credential of its node
    /// (the unique index refused it) or its id exists.
    pub async fn token_insert(&self, t: &TokenRow) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "INSERT INTO tokens (id, kind, node, description, created_ms, expires_ms, revoked, secret_hash, uses_left)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(&t.id)
        .bind(&t.kind)
        .bind(&t.node)
        .bind(&t.description)
        .bind(t.created_ms as i64)
        .bind(t.expires_ms.map(|v| v as i64))
        .bind(i64::from(t.revoked))
        .bind(&t.secret_hash)
        .bind(t.uses_left.map(i64::from))
        .execute(&self.shared.pool)
        .await;
        match res {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces a token's secret hash (an operator rewrote a token file). Returns whether a row
    /// changed.
    pub async fn token_set_hash(&self, id: &str, secret_hash: &str) -> Result<bool, StoreError> {
        let r =
            sqlx::query("UPDATE tokens SET secret_hash = ?2 WHERE id = ?1 AND secret_hash != ?2")
                .bind(id)
                .bind(secret_hash)
                .execute(&self.shared.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Marks a token revoked. Returns `Ok(false)` if there is no such id.
    pub async fn token_revoke(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE tokens SET revoked = 1 WHERE id = ?1")
            .bind(id)
            .execute(&self.shared.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Takes one use of a join token: `Ok(true)` if it had one left (or has no limit), `Ok(false)`
    /// if it is used up. Atomic: two joins never share the last use.
    pub async fn token_use(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE tokens SET uses_left = uses_left - 1 WHERE id = ?1 AND uses_left > 0",
        )
        .bind(id)
        .execute(&self.shared.pool)
        .await?;
        if r.rows_affected() > 0 {
            return Ok(true);
        }
        let unlimited = sqlx::query("SELECT 1 FROM tokens WHERE id = ?1 AND uses_left IS NULL")
            .bind(id)
            .fetch_optional(&self.shared.pool)
            .await?;
        Ok(unlimited.is_some())
    }

    /// Deletes every credential of node `node` (live or revoked): `bramble delete node` frees the
    /// name for a new join. Returns the ids deleted.
    pub async fn token_delete_node(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("DELETE FROM tokens WHERE kind = 'node' AND node = ?1 RETURNING id")
            .bind(node)
            .fetch_all(&self.shared.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(StoreError::from))
            .collect()
    }
}
