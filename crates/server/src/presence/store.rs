//! The `connections` table (one row per live connection) and the presence timestamps of `users`.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Db, StoreError};

/// One live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRow {
    /// The public SignalR connection id.
    pub connection_id: String,
    /// Its user.
    pub user_name: String,
    /// The server process (node) holding it.
    pub node: String,
    /// When it connected (ms).
    pub connected_at: i64,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
}

/// A user's presence as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRow {
    /// The user.
    pub user_name: String,
    /// Live connections, on every node.
    pub connections: Vec<ConnectionRow>,
    /// When the user last went online (ms).
    pub last_connected_at: Option<i64>,
    /// When the user last went offline (ms).
    pub last_disconnected_at: Option<i64>,
}

fn connection_from_row(row: &AnyRow) -> Result<ConnectionRow, StoreError> {
    Ok(ConnectionRow {
        connection_id: row.try_get("connection_id")?,
        user_name: row.try_get("user_name")?,
        node: row.try_get("node")?,
        connected_at: row.try_get("connected_at")?,
        user_agent: row.try_get("user_agent")?,
    })
}

impl Db {
    /// How many live connections presence records, on every node.
    pub async fn connection_total(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM connections")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// The user of a live connection (any node); `None` if presence does not know it.
    pub async fn connection_user(&self, connection_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT user_name FROM connections WHERE connection_id = $1")
            .bind(connection_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|row| row.try_get("user_name")).transpose()?)
    }

    /// Records a live connection.
    pub async fn insert_connection(&self, row: &ConnectionRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO connections (connection_id, user_name, node, connected_at, user_agent) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&row.connection_id)
        .bind(&row.user_name)
        .bind(&row.node)
        .bind(row.connected_at)
        .bind(row.user_agent.as_deref())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes a connection row.
    pub async fn delete_connection(&self, connection_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM connections WHERE connection_id = $1")
            .bind(connection_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// How many live connections a user has, on every node.
    pub async fn connection_count(&self, user_name: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM connections WHERE user_name = $1")
            .bind(user_name)
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Sets `last_connected_at`.
    pub async fn mark_user_connected(&self, user_name: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET last_connected_at = $2 WHERE name = $1")
            .bind(user_name)
            .bind(at)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Sets `last_disconnected_at`.
    pub async fn mark_user_disconnected(&self, user_name: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET last_disconnected_at = $2 WHERE name = $1")
            .bind(user_name)
            .bind(at)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// A user's presence; `None` when the user does not exist.
    pub async fn presence(&self, user_name: &str) -> Result<Option<PresenceRow>, StoreError> {
        let Some(user) = sqlx::query(
            "SELECT last_connected_at, last_disconnected_at FROM users WHERE name = $1",
        )
        .bind(user_name)
        .fetch_optional(self.pool())
        .await?
        else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT connection_id, user_name, node, connected_at, user_agent FROM connections \
             WHERE user_name = $1 ORDER BY connected_at, connection_id",
        )
        .bind(user_name)
        .fetch_all(self.pool())
        .await?;
        Ok(Some(PresenceRow {
            user_name: user_name.to_owned(),
            connections: rows
                .iter()
                .map(connection_from_row)
                .collect::<Result<_, _>>()?,
            last_connected_at: user.try_get("last_connected_at")?,
            last_disconnected_at: user.try_get("last_disconnected_at")?,
        }))
    }

    /// Users with at least one live connection, on any node, sorted.
    pub async fn online_users(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT user_name FROM connections ORDER BY user_name")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| r.try_get("user_name").map_err(StoreError::from))
            .collect()
    }

    /// Removes the rows of `node` (left by a process that stopped without cleaning up) and marks
    /// the users that had no other connection as disconnected at `now`. Returns the users now
    /// offline.
    pub async fn clear_node_connections(
        &self,
        node: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT user_name FROM connections WHERE node = $1")
            .bind(node)
            .fetch_all(self.pool())
            .await?;
        let users: Vec<String> = rows
            .iter()
            .map(|r| r.try_get("user_name"))
            .collect::<Result<_, _>>()?;
        sqlx::query("DELETE FROM connections WHERE node = $1")
            .bind(node)
            .execute(self.pool())
            .await?;
        let mut offline = Vec::new();
        for user in users {
            if self.connection_count(&user).await? == 0 {
                self.mark_user_disconnected(&user, now).await?;
                offline.push(user);
            }
        }
        Ok(offline)
    }
}
