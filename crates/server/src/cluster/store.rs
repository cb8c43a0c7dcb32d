//! The `nodes` table: the heartbeat of every node of the cluster, and the users a dead node
//! left behind.

use crate::db::{Db, StoreError};

impl Db {
    /// Records this node (or refreshes its heartbeat) at `now`.
    pub async fn register_node(&self, node: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (node_id, started_at, heartbeat_at) VALUES ($1, $2, $2) \
             ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(node)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records the URL at which the other nodes reach `node`.
    pub async fn set_node_address(&self, node: &str, address: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET address = $2 WHERE node_id = $1")
            .bind(node)
            .bind(address)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The recorded URL of `node`, if its heartbeat is at or after `cutoff` (ms).
    pub async fn node_address(
        &self,
        node: &str,
        cutoff: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar::<_, Option<String>>(
            "SELECT address FROM nodes WHERE node_id = $1 AND heartbeat_at >= $2",
        )
        .bind(node)
        .bind(cutoff)
        .fetch_optional(self.pool())
        .await?
        .flatten())
    }

    /// Refreshes this node's heartbeat; `false` if its row is gone (another node declared it
    /// dead and removed its connections).
    pub async fn heartbeat(&self, node: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE nodes SET heartbeat_at = $2 WHERE node_id = $1")
            .bind(node)
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes this node's row (graceful shutdown).
    pub async fn remove_node(&self, node: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM nodes WHERE node_id = $1")
            .bind(node)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The nodes other than `me` that are dead: their heartbeat is older than `cutoff`, or they
    /// hold connections without having a row at all (left over from an older version).
    pub async fn dead_nodes(&self, me: &str, cutoff: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT node_id AS node FROM nodes WHERE heartbeat_at < $2 AND node_id <> $1 \
             UNION \
             SELECT DISTINCT node FROM connections WHERE node <> $1 \
               AND node NOT IN (SELECT node_id FROM nodes)",
        )
        .bind(me)
        .bind(cutoff)
        .fetch_all(self.pool())
        .await?)
    }

    /// The nodes other than `me` whose heartbeat is at or after `cutoff`, sorted.
    pub async fn live_nodes(&self, me: &str, cutoff: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT node_id AS node FROM nodes WHERE heartbeat_at >= $2 AND node_id <> $1 \
             ORDER BY node_id",
        )
        .bind(me)
        .bind(cutoff)
        .fetch_all(self.pool())
        .await?)
    }

    /// The users with connections on `node`, sorted.
    pub async fn users_of_node(&self, node: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT user_name FROM connections WHERE node = $1 ORDER BY user_name",
        )
        .bind(node)
        .fetch_all(self.pool())
        .await?)
    }

    /// Removes a dead node's row if its heartbeat is still older than `cutoff`.
    pub async fn remove_dead_node(&self, node: &str, cutoff: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM nodes WHERE node_id = $1 AND heartbeat_at < $2")
            .bind(node)
            .bind(cutoff)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
