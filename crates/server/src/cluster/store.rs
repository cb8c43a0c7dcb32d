//! The `nodes` table (heartbeats) and the presence edges decided in one transaction each, so that
//! with several nodes on one database every offline→online and online→offline edge of a user is
//! seen by exactly one node.
//!
//! Each transaction first locks the user's row (a no-op `UPDATE`, which both PostgreSQL and
//! SQLite accept): the connects, disconnects and reaps of one user run one at a time across the
//! cluster, and the count of the user's connections read afterwards is the truth.

use sqlx::Row;

use crate::db::{Db, StoreError};
use crate::presence::ConnectionRow;

/// Locks the row of user `$1` until the transaction ends.
const LOCK_USER: &str = "UPDATE users SET last_connected_at = last_connected_at WHERE name = $1";

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
        let rows = sqlx::query(
            "SELECT node_id AS node FROM nodes WHERE heartbeat_at < $2 AND node_id <> $1 \
             UNION \
             SELECT DISTINCT node FROM connections WHERE node <> $1 \
               AND node NOT IN (SELECT node_id FROM nodes)",
        )
        .bind(me)
        .bind(cutoff)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get("node").map_err(StoreError::from))
            .collect()
    }

    /// The nodes other than `me` whose heartbeat is at or after `cutoff`, sorted.
    pub async fn live_nodes(&self, me: &str, cutoff: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT node_id AS node FROM nodes WHERE heartbeat_at >= $2 AND node_id <> $1 \
             ORDER BY node_id",
        )
        .bind(me)
        .bind(cutoff)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get("node").map_err(StoreError::from))
            .collect()
    }

    /// The users with connections on `node`, sorted.
    pub async fn users_of_node(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT user_name FROM connections WHERE node = $1 ORDER BY user_name",
        )
        .bind(node)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get("user_name").map_err(StoreError::from))
            .collect()
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

    /// How many connections `user` has on nodes other than `node`.
    pub async fn remote_connection_count(&self, user: &str, node: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM connections WHERE user_name = $1 AND node <> $2",
        )
        .bind(user)
        .bind(node)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Records a live connection (idempotent) and, if it is the user's only one on any node, sets
    /// `last_connected_at`. Returns whether the user went online (the edge).
    pub async fn connect_edge(&self, row: &ConnectionRow) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(LOCK_USER)
            .bind(&row.user_name)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO connections (connection_id, user_name, node, connected_at, user_agent) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (connection_id) DO NOTHING",
        )
        .bind(&row.connection_id)
        .bind(&row.user_name)
        .bind(&row.node)
        .bind(row.connected_at)
        .bind(row.user_agent.as_deref())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM connections WHERE user_name = $1")
            .bind(&row.user_name)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let edge = inserted > 0 && count == 1;
        if edge {
            sqlx::query("UPDATE users SET last_connected_at = $2 WHERE name = $1")
                .bind(&row.user_name)
                .bind(row.connected_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(edge)
    }

    /// Removes connection rows of `user` (one connection, or every one on a node) and, if that
    /// left the user without connections, sets `last_disconnected_at`. Returns whether the user
    /// went offline (the edge): only the transaction that actually removed the last row sees it.
    pub async fn disconnect_edge(
        &self,
        user: &str,
        which: Disconnect<'_>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(LOCK_USER).bind(user).execute(&mut *tx).await?;
        let removed = match which {
            Disconnect::Connection(id) => {
                sqlx::query("DELETE FROM connections WHERE connection_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
            }
            Disconnect::Node(node) => {
                sqlx::query("DELETE FROM connections WHERE user_name = $1 AND node = $2")
                    .bind(user)
                    .bind(node)
                    .execute(&mut *tx)
                    .await?
            }
        }
        .rows_affected();
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM connections WHERE user_name = $1")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let edge = removed > 0 && count == 0;
        if edge {
            sqlx::query("UPDATE users SET last_disconnected_at = $2 WHERE name = $1")
                .bind(user)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(edge)
    }
}

/// Which rows [`Db::disconnect_edge`] removes.
#[derive(Debug, Clone, Copy)]
pub enum Disconnect<'a> {
    /// One connection.
    Connection(&'a str),
    /// Every connection of the user on a node.
    Node(&'a str),
}
