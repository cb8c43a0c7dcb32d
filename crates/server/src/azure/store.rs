//! Users' group memberships in serverless hubs (table `azure_user_groups`), as the data-plane REST
//! API defines them: `PUT /api/hubs/{hub}/users/{user}/groups/{group}?ttl=SECONDS`.
//!
//! * Without a ttl the membership lasts [`DEFAULT_TTL`] (a year) at most, and only the user's
//!   [`MAX_PERMANENT_GROUPS`] most recently updated memberships without a ttl are kept.
//! * With `ttl = 0` nothing is stored: only the user's current connections join the group.
//! * Expired memberships are ignored when read and deleted when the user's memberships change.
//!
//! The user's current connections are handled by the [`Directory`](super::directory::Directory);
//! this store makes the membership apply to the connections the user opens later.

use std::time::Duration;

use sqlx::Row;

use crate::clock::{duration_ms, now_ms};
use crate::db::{Db, StoreError};

/// How long a membership added without a ttl lasts.
pub const DEFAULT_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How many memberships without a ttl a user keeps per hub (the most recently updated ones).
pub const MAX_PERMANENT_GROUPS: i64 = 100;

const LOG: &str = "signalbox::azure";

/// The stored group memberships of users. Cheap to clone.
#[derive(Clone)]
pub struct AzureStore {
    db: Db,
}

impl std::fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureStore").finish_non_exhaustive()
    }
}

impl AzureStore {
    /// The store in `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Adds (or renews) the membership of `user` in `group` of hub `hub` (internal name).
    /// `ttl` of zero stores nothing; `None` means [`DEFAULT_TTL`], within the
    /// [`MAX_PERMANENT_GROUPS`] limit.
    pub async fn add(
        &self,
        hub: &str,
        user: &str,
        group: &str,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        if ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Ok(());
        }
        let now = now_ms();
        let expires_at = now.saturating_add(duration_ms(ttl.unwrap_or(DEFAULT_TTL)));
        let ttl_seconds = ttl.map(|ttl| i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let pool = self.db.pool();
        sqlx::query(
            "INSERT INTO azure_user_groups \
             (hub, user_id, group_name, ttl_seconds, expires_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (hub, user_id, group_name) DO UPDATE SET \
             ttl_seconds = excluded.ttl_seconds, expires_at = excluded.expires_at, \
             updated_at = excluded.updated_at",
        )
        .bind(hub)
        .bind(user)
        .bind(group)
        .bind(ttl_seconds)
        .bind(expires_at)
        .bind(now)
        .execute(pool)
        .await?;
        self.delete_expired(hub, user, now).await?;
        if ttl.is_none() {
            sqlx::query(
                "DELETE FROM azure_user_groups \
                 WHERE hub = $1 AND user_id = $2 AND ttl_seconds IS NULL \
                 AND group_name NOT IN (\
                   SELECT group_name FROM azure_user_groups \
                   WHERE hub = $1 AND user_id = $2 AND ttl_seconds IS NULL \
                   ORDER BY updated_at DESC, group_name LIMIT $3)",
            )
            .bind(hub)
            .bind(user)
            .bind(MAX_PERMANENT_GROUPS)
            .execute(pool)
            .await?;
        }
        Ok(())
    }

    /// Removes the membership of `user` in `group`; `Ok(false)` if there was none.
    pub async fn remove(&self, hub: &str, user: &str, group: &str) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "DELETE FROM azure_user_groups WHERE hub = $1 AND user_id = $2 AND group_name = $3",
        )
        .bind(hub)
        .bind(user)
        .bind(group)
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Removes every membership of `user` in hub `hub`; returns how many there were.
    pub async fn remove_all(&self, hub: &str, user: &str) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM azure_user_groups WHERE hub = $1 AND user_id = $2")
            .bind(hub)
            .bind(user)
            .execute(self.db.pool())
            .await?;
        Ok(result.rows_affected())
    }

    /// Whether `user` has an unexpired membership in `group`.
    pub async fn is_member(&self, hub: &str, user: &str, group: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 FROM azure_user_groups \
             WHERE hub = $1 AND user_id = $2 AND group_name = $3 AND expires_at > $4",
        )
        .bind(hub)
        .bind(user)
        .bind(group)
        .bind(now_ms())
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.is_some())
    }

    /// The groups `user` has an unexpired membership in, sorted.
    pub async fn try_groups_of(&self, hub: &str, user: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT group_name FROM azure_user_groups \
             WHERE hub = $1 AND user_id = $2 AND expires_at > $3 ORDER BY group_name",
        )
        .bind(hub)
        .bind(user)
        .bind(now_ms())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get("group_name").map_err(StoreError::from))
            .collect()
    }

    /// The groups `user` has an unexpired membership in, sorted; none when the database fails
    /// (the failure is logged).
    pub async fn groups_of(&self, hub: &str, user: &str) -> Vec<String> {
        match self.try_groups_of(hub, user).await {
            Ok(groups) => groups,
            Err(error) => {
                tracing::error!(target: LOG, %error, hub, "cannot read a user's groups");
                Vec::new()
            }
        }
    }

    /// Deletes expired memberships every `interval`, until aborted.
    pub fn spawn_purge(&self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                match store.purge_expired().await {
                    Ok(0) => {}
                    Ok(purged) => tracing::debug!(purged, "expired group memberships removed"),
                    Err(error) => tracing::warn!(%error, "cannot remove expired group memberships"),
                }
            }
        })
    }

    /// Deletes every expired membership; returns how many were deleted.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM azure_user_groups WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(self.db.pool())
            .await?;
        Ok(result.rows_affected())
    }

    async fn delete_expired(&self, hub: &str, user: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM azure_user_groups WHERE hub = $1 AND user_id = $2 AND expires_at <= $3",
        )
        .bind(hub)
        .bind(user)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    async fn store() -> AzureStore {
        AzureStore::new(Db::open("sqlite::memory:").await.unwrap())
    }

    /// Returns once the store's millisecond clock reads later than `after`.
    async fn clock_passes(after: i64) {
        while now_ms() <= after {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn memberships_with_and_without_ttl() {
        let store = store().await;
        store.add("chat", "alice", "b", None).await.unwrap();
        store
            .add("chat", "alice", "a", Some(Duration::from_secs(60)))
            .await
            .unwrap();
        store
            .add("chat", "alice", "now-only", Some(Duration::ZERO))
            .await
            .unwrap();
        store.add("other", "alice", "c", None).await.unwrap();
        assert_eq!(store.groups_of("chat", "alice").await, ["a", "b"]);
        assert!(store.is_member("chat", "alice", "a").await.unwrap());
        assert!(!store.is_member("chat", "Alice", "a").await.unwrap());
        assert!(!store.is_member("chat", "alice", "now-only").await.unwrap());
        assert!(store.remove("chat", "alice", "a").await.unwrap());
        assert!(!store.remove("chat", "alice", "a").await.unwrap());
        assert_eq!(store.groups_of("chat", "alice").await, ["b"]);
        assert_eq!(store.remove_all("chat", "alice").await.unwrap(), 1);
        assert!(store.groups_of("chat", "alice").await.is_empty());
        assert_eq!(store.groups_of("other", "alice").await, ["c"]);
    }

    #[tokio::test]
    async fn expired_memberships_are_ignored_and_purged() {
        let store = store().await;
        // Whole seconds only reach the store through the REST API; a millisecond ttl expires
        // at once for this test.
        store
            .add("chat", "bob", "soon", Some(Duration::from_millis(1)))
            .await
            .unwrap();
        clock_passes(now_ms() + 1).await;
        assert!(store.groups_of("chat", "bob").await.is_empty());
        assert!(!store.is_member("chat", "bob", "soon").await.unwrap());
        assert_eq!(store.purge_expired().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_user_keeps_the_latest_hundred_groups_without_ttl() {
        let store = store().await;
        store
            .add("chat", "carol", "timed", Some(Duration::from_secs(600)))
            .await
            .unwrap();
        for i in 0..=MAX_PERMANENT_GROUPS {
            store
                .add("chat", "carol", &format!("g{i:03}"), None)
                .await
                .unwrap();
            // Distinct update times, so that "latest" is well defined.
            clock_passes(now_ms()).await;
        }
        let groups = store.groups_of("chat", "carol").await;
        assert_eq!(groups.len(), 101);
        assert!(!groups.contains(&"g000".to_owned()));
        assert!(groups.contains(&"g100".to_owned()));
        assert!(groups.contains(&"timed".to_owned()));
        // Renewing an old membership makes it the latest again.
        store.add("chat", "carol", "g001", None).await.unwrap();
        clock_passes(now_ms()).await;
        store.add("chat", "carol", "g101", None).await.unwrap();
        let groups = store.groups_of("chat", "carol").await;
        assert!(groups.contains(&"g001".to_owned()));
        assert!(!groups.contains(&"g002".to_owned()));
    }
}
