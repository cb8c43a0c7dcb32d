//! The `setup_tokens` table and the first administrator: the one-time links of the first-run
//! setup (see [`crate::setup`]). Only SHA-256 hashes of the tokens are stored. Creating the first
//! administrator spends the token and creates the account in one transaction, so that of two
//! submits of the same link (or of two links) exactly one creates an administrator.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::auth::UserRow;
use crate::db::{Db, StoreError, json_column};

/// The `settings` row written when the first administrator is created: a second, concurrent
/// setup (another link, another node) conflicts on it and gives up.
const SETUP_MARKER: &str = "setup.completed";

/// What a setup token is worth now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupTokenState {
    /// Stored and not expired.
    Valid,
    /// Stored but expired.
    Expired,
    /// Not stored: never issued, mistyped, or already spent.
    Unknown,
}

/// The result of [`Db::complete_setup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupOutcome {
    /// The administrator was created and every setup token deleted.
    Created,
    /// An administrator exists already (setup was completed, here or elsewhere).
    AlreadyDone,
    /// The token is not stored (never issued, or spent).
    UnknownToken,
    /// The token had expired (it is now deleted).
    Expired,
    /// The user name is taken by an existing account (the token stays valid).
    NameTaken,
}

/// Whether a `roles` column (a JSON array) holds `role`.
fn has_role(row: &AnyRow, role: &str) -> Result<bool, StoreError> {
    let roles: String = row.try_get("roles")?;
    let roles: Vec<String> = json_column(&roles, "users.roles")?;
    Ok(roles.iter().any(|r| r == role))
}

/// `LIKE` pattern that preselects accounts whose roles may contain `role` (exactness is checked
/// on the decoded JSON: `%` and `_` in a role only widen the preselection).
fn role_pattern(role: &str) -> String {
    format!(
        "%{}%",
        serde_json::to_string(role).unwrap_or_else(|_| role.to_owned())
    )
}

/// Whether an enabled account with `role` exists, within `tx`.
async fn admin_exists_in(
    tx: &mut Transaction<'static, Any>,
    role: &str,
) -> Result<bool, StoreError> {
    let rows = sqlx::query("SELECT roles FROM users WHERE roles LIKE $1 AND disabled_at IS NULL")
        .bind(role_pattern(role))
        .fetch_all(&mut **tx)
        .await?;
    for row in &rows {
        if has_role(row, role)? {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Db {
    /// Whether an enabled account has `role` (the admin role): while none does, `serve` offers the
    /// first-run setup.
    pub async fn admin_exists(&self, role: &str) -> Result<bool, StoreError> {
        let rows =
            sqlx::query("SELECT roles FROM users WHERE roles LIKE $1 AND disabled_at IS NULL")
                .bind(role_pattern(role))
                .fetch_all(self.pool())
                .await?;
        for row in &rows {
            if has_role(row, role)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores a new setup token (its hash), valid until `expires_at` (ms). Also forgets an
    /// earlier completed setup, since the caller found no administrator (the last one was removed
    /// or disabled): the new link may create one again.
    pub async fn insert_setup_token(
        &self,
        token_hash: &str,
        created_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM setup_tokens WHERE expires_at < $1")
            .bind(created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM settings WHERE name = $1")
            .bind(SETUP_MARKER)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO setup_tokens (token_hash, created_at, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(created_at)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// What the token with this hash is worth at `now` (ms), without spending it.
    pub async fn setup_token_state(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<SetupTokenState, StoreError> {
        let row = sqlx::query("SELECT expires_at FROM setup_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            None => SetupTokenState::Unknown,
            Some(row) => {
                let expires_at: i64 = row.try_get("expires_at")?;
                if expires_at <= now {
                    SetupTokenState::Expired
                } else {
                    SetupTokenState::Valid
                }
            }
        })
    }

    /// Spends the setup token with this hash and creates `admin` (who must carry the admin role),
    /// in one transaction: exactly one of several concurrent calls creates an administrator. On
    /// [`SetupOutcome::NameTaken`] nothing changes (the link can be used again with another name).
    pub async fn complete_setup(
        &self,
        token_hash: &str,
        now: i64,
        admin: &UserRow,
        role: &str,
    ) -> Result<SetupOutcome, StoreError> {
        let roles =
            serde_json::to_string(&admin.roles).map_err(|_| StoreError::Corrupt("roles"))?;
        let claims =
            serde_json::to_string(&admin.claims).map_err(|_| StoreError::Corrupt("claims"))?;
        let mut tx = self.pool().begin().await?;
        // The marker first: it is the one row every submit writes, so it orders them. On SQLite
        // the transaction holds the write lock from here on; on PostgreSQL a concurrent submit
        // (of this link or another) waits here for this one and then finds the marker. Taking
        // the token rows before it would let two submits of two links lock each other's rows.
        let marked = sqlx::query(
            "INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(SETUP_MARKER)
        .bind(now.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(SetupOutcome::AlreadyDone);
        }
        let spent =
            sqlx::query("DELETE FROM setup_tokens WHERE token_hash = $1 RETURNING expires_at")
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(spent) = spent else {
            tx.rollback().await?;
            return Ok(SetupOutcome::UnknownToken);
        };
        let expires_at: i64 = spent.try_get("expires_at")?;
        if expires_at <= now {
            // Nothing is kept (the marker least of all); the expired row goes at the next issue.
            tx.rollback().await?;
            return Ok(SetupOutcome::Expired);
        }
        if admin_exists_in(&mut tx, role).await? {
            tx.rollback().await?;
            return Ok(SetupOutcome::AlreadyDone);
        }
        let inserted = sqlx::query(
            "INSERT INTO users (name, password_hash, roles, claims, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&admin.name)
        .bind(admin.password_hash.as_deref())
        .bind(roles)
        .bind(claims)
        .bind(admin.created_at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(SetupOutcome::NameTaken);
        }
        sqlx::query("DELETE FROM setup_tokens")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(SetupOutcome::Created)
    }
}
