//! The `refresh_tokens` table: hashed opaque tokens grouped in families (one family per login).

use sqlx::Row;

use crate::db::{Db, StoreError};

/// A refresh token to store.
#[derive(Debug, Clone)]
pub struct RefreshTokenRow {
    /// Row id.
    pub id: String,
    /// The login this token descends from; reuse of a spent token revokes the whole family.
    pub family: String,
    /// The owner.
    pub user_name: String,
    /// SHA-256 of the token, base64url.
    pub token_hash: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// Expiry (ms).
    pub expires_at: i64,
}

/// What is known of a token that could not be spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshTokenState {
    /// No such token.
    Unknown,
    /// Already used or revoked: its family is compromised.
    Spent {
        /// The token's family.
        family: String,
        /// The owner.
        user_name: String,
    },
    /// Expired unused.
    Expired,
}

impl Db {
    /// Stores a new refresh token.
    pub async fn insert_refresh_token(&self, token: &RefreshTokenRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, family, user_name, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.id)
        .bind(&token.family)
        .bind(&token.user_name)
        .bind(&token.token_hash)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks a live token as used, atomically: `Some((family, user))` for the one caller that
    /// spends it, `None` if it is unknown, spent, revoked or expired.
    pub async fn spend_refresh_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $2 \
             WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
             RETURNING family, user_name",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => Ok(Some((row.try_get("family")?, row.try_get("user_name")?))),
            None => Ok(None),
        }
    }

    /// Why a token could not be spent.
    pub async fn refresh_token_state(
        &self,
        token_hash: &str,
    ) -> Result<RefreshTokenState, StoreError> {
        let row = sqlx::query(
            "SELECT family, user_name, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(RefreshTokenState::Unknown);
        };
        let used: Option<i64> = row.try_get("used_at")?;
        let revoked: Option<i64> = row.try_get("revoked_at")?;
        if used.is_some() || revoked.is_some() {
            Ok(RefreshTokenState::Spent {
                family: row.try_get("family")?,
                user_name: row.try_get("user_name")?,
            })
        } else {
            Ok(RefreshTokenState::Expired)
        }
    }

    /// The family of a token (spent or not), if it exists.
    pub async fn refresh_token_family(
        &self,
        token_hash: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT family FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| r.try_get("family").map_err(StoreError::from))
            .transpose()
    }

    /// Revokes every live token of a family; returns how many.
    pub async fn revoke_refresh_family(&self, family: &str, now: i64) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE family = $1 AND revoked_at IS NULL",
        )
        .bind(family)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }

    /// Deletes tokens that expired before `before` (ms).
    pub async fn purge_refresh_tokens(&self, before: i64) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }
}
