//! Whether a sign-in still stands: disabled accounts, revoked sessions (refresh-token families),
//! and the `auth_events` log through which every node learns that a session or an account ended.

use sqlx::Row;

use crate::db::{Db, StoreError};

/// What ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthEvent {
    /// A session (refresh-token family) was revoked: sign-out, or reuse of a spent token.
    SessionEnded(String),
    /// An account was removed or disabled.
    UserEnded(String),
}

impl AuthEvent {
    fn kind(&self) -> &'static str {
        match self {
            AuthEvent::SessionEnded(_) => "session",
            AuthEvent::UserEnded(_) => "user",
        }
    }

    fn subject(&self) -> &str {
        match self {
            AuthEvent::SessionEnded(subject) | AuthEvent::UserEnded(subject) => subject,
        }
    }
}

/// Whether an account may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    /// No such account.
    Missing,
    /// The account exists but is disabled.
    Disabled,
    /// The account may sign in.
    Active,
}

impl Db {
    /// Writes an event to the log the nodes read.
    pub async fn record_auth_event(&self, event: &AuthEvent, now: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO auth_events (id, kind, subject, at) VALUES ($1, $2, $3, $4)")
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(event.kind())
            .bind(event.subject())
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The events written at or after `since` (ms), oldest first.
    pub async fn auth_events_since(&self, since: i64) -> Result<Vec<AuthEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, subject FROM auth_events WHERE at >= $1 ORDER BY at, id LIMIT 10000",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let kind: String = row.try_get("kind")?;
            let subject: String = row.try_get("subject")?;
            events.push(match kind.as_str() {
                "session" => AuthEvent::SessionEnded(subject),
                "user" => AuthEvent::UserEnded(subject),
                _ => return Err(StoreError::Corrupt("auth_events.kind")),
            });
        }
        Ok(events)
    }

    /// Deletes events older than `before` (ms).
    pub async fn purge_auth_events(&self, before: i64) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM auth_events WHERE at < $1")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }

    /// The status of each of `names` that exists (a missing one is left out).
    pub async fn account_statuses(
        &self,
        names: &[String],
    ) -> Result<std::collections::HashMap<String, AccountStatus>, StoreError> {
        if names.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let sql = format!(
            "SELECT name, disabled_at FROM users WHERE name IN ({})",
            crate::db::in_json(self.backend(), 1)
        );
        let query = sqlx::query(&sql).bind(crate::db::json_array(names));
        let mut statuses = std::collections::HashMap::with_capacity(names.len());
        for row in query.fetch_all(self.pool()).await? {
            let disabled: Option<i64> = row.try_get("disabled_at")?;
            let status = if disabled.is_some() {
                AccountStatus::Disabled
            } else {
                AccountStatus::Active
            };
            statuses.insert(row.try_get("name")?, status);
        }
        Ok(statuses)
    }

    /// Whether an account exists and is enabled.
    pub async fn account_status(&self, name: &str) -> Result<AccountStatus, StoreError> {
        let row = sqlx::query("SELECT disabled_at FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            None => AccountStatus::Missing,
            Some(row) => {
                let disabled: Option<i64> = row.try_get("disabled_at")?;
                if disabled.is_some() {
                    AccountStatus::Disabled
                } else {
                    AccountStatus::Active
                }
            }
        })
    }

    /// Disables or enables an account; `Ok(false)` when it does not exist. Disabling also revokes
    /// its sessions and writes the event that closes its connections.
    pub async fn set_user_disabled(
        &self,
        name: &str,
        disabled: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE users SET disabled_at = $2 WHERE name = $1")
            .bind(name)
            .bind(disabled.then_some(now))
            .execute(self.pool())
            .await?;
        if result.rows_affected() == 0 {
            return Ok(false);
        }
        if disabled {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $2 \
                 WHERE user_name = $1 AND revoked_at IS NULL",
            )
            .bind(name)
            .bind(now)
            .execute(self.pool())
            .await?;
            self.record_auth_event(&AuthEvent::UserEnded(name.to_owned()), now)
                .await?;
        }
        Ok(true)
    }

    /// Whether a session (refresh-token family) was revoked. A family whose rows were all
    /// purged, or that never existed, counts as revoked: its access tokens outlive nothing.
    pub async fn session_revoked(&self, family: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS total, \
                    COUNT(revoked_at) AS revoked \
             FROM refresh_tokens WHERE family = $1",
        )
        .bind(family)
        .fetch_one(self.pool())
        .await?;
        let total: i64 = row.try_get("total")?;
        let revoked: i64 = row.try_get("revoked")?;
        Ok(total == 0 || revoked > 0)
    }
}
