//! The `sign_in_flows` table: pending server-side OpenID Connect sign-ins and the one-time
//! tickets that hand a finished sign-in to the page. Rows are keyed by the SHA-256 hash of a
//! random value the browser holds (never the value itself), taken (deleted) atomically so that
//! each is used at most once even across nodes sharing the database, and purged once expired.

use sqlx::Row;

use crate::db::{Db, StoreError};

/// What a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInFlowKind {
    /// An authorization request sent to the provider, keyed by its `state`.
    State,
    /// A finished sign-in waiting for the page to collect its session.
    Ticket,
}

impl SignInFlowKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Ticket => "ticket",
        }
    }
}

/// A row to store.
#[derive(Debug, Clone)]
pub struct SignInFlowRow {
    /// SHA-256 (base64url) of the value that names the row (`state`, or the ticket).
    pub key_hash: String,
    /// What the row is.
    pub kind: SignInFlowKind,
    /// SHA-256 (base64url) of the value the browser's cookie must carry to take the row.
    pub binding_hash: String,
    /// What the row remembers (not secret: e.g. the redirect URI, or the user name).
    pub data: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// Expiry (ms).
    pub expires_at: i64,
}

/// A row that was just taken (and so is gone from the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenSignInFlow {
    /// What the row remembered.
    pub data: String,
    /// Its expiry (ms): the caller refuses a row taken after it.
    pub expires_at: i64,
}

impl Db {
    /// Stores a pending sign-in or ticket.
    pub async fn insert_sign_in_flow(&self, row: &SignInFlowRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sign_in_flows (key_hash, kind, binding_hash, data, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.key_hash)
        .bind(row.kind.as_str())
        .bind(&row.binding_hash)
        .bind(&row.data)
        .bind(row.created_at)
        .bind(row.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Deletes and returns the row of this kind, key and binding, atomically: exactly one
    /// caller gets it. `None` when there is no such row (unknown, tampered, already taken, or
    /// bound to another browser — then the row stays for its own browser). Expired rows are
    /// returned too, so that the caller can say so; it must check `expires_at`.
    pub async fn take_sign_in_flow(
        &self,
        kind: SignInFlowKind,
        key_hash: &str,
        binding_hash: &str,
    ) -> Result<Option<TakenSignInFlow>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM sign_in_flows WHERE key_hash = $1 AND kind = $2 AND binding_hash = $3 \
             RETURNING data, expires_at",
        )
        .bind(key_hash)
        .bind(kind.as_str())
        .bind(binding_hash)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => Ok(Some(TakenSignInFlow {
                data: row.try_get("data")?,
                expires_at: row.try_get("expires_at")?,
            })),
            None => Ok(None),
        }
    }

    /// Deletes the rows that expired before `now` (ms); returns how many.
    pub async fn purge_sign_in_flows(&self, now: i64) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM sign_in_flows WHERE expires_at < $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }
}
