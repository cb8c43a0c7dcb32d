//! The `connections` table (one row per live connection) and the presence timestamps of `users`,
//! with the presence edges decided in one transaction each, so that with several nodes on one
//! database every offline→online and online→offline edge of a user is seen by exactly one node.
//!
//! Each edge transaction first locks the user's row (a no-op `UPDATE`, which both PostgreSQL and
//! SQLite accept): the connects, disconnects and reaps of one user run one at a time across the
//! cluster, and the count of the user's connections read afterwards is the truth.
//!
//! Connects and disconnects arriving together are applied in one transaction
//! ([`Db::apply_presence_changes`], fed by [`super::writer`]): it locks the rows of all their
//! users in name order (so two nodes' batches cannot deadlock), reads their connection counts,
//! and plays the changes in the order they were queued, so each one still sees its own edge.

use std::collections::{BTreeSet, HashMap, HashSet};

use sqlx::Row;

use crate::db::{Backend, Db, StoreError, in_json, json_array, placeholders};

/// Locks the row of user `$1` until the transaction ends.
const LOCK_USER: &str = "UPDATE users SET last_connected_at = last_connected_at WHERE name = $1";

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

    /// A user's presence; `None` when the user does not exist. One statement, so the
    /// connections and the timestamps come from the same snapshot (an edge commits both).
    pub async fn presence(&self, user_name: &str) -> Result<Option<PresenceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.last_connected_at, u.last_disconnected_at, c.connection_id, c.node, \
             c.connected_at, c.user_agent FROM users u \
             LEFT JOIN connections c ON c.user_name = u.name \
             WHERE u.name = $1 ORDER BY c.connected_at, c.connection_id",
        )
        .bind(user_name)
        .fetch_all(self.pool())
        .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut connections = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(connection_id) = row.try_get::<Option<String>, _>("connection_id")? else {
                continue;
            };
            connections.push(ConnectionRow {
                connection_id,
                user_name: user_name.to_owned(),
                node: row.try_get("node")?,
                connected_at: row.try_get("connected_at")?,
                user_agent: row.try_get("user_agent")?,
            });
        }
        Ok(Some(PresenceRow {
            user_name: user_name.to_owned(),
            connections,
            last_connected_at: first.try_get("last_connected_at")?,
            last_disconnected_at: first.try_get("last_disconnected_at")?,
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

/// The presence edges.
impl Db {
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

/// One queued change of presence.
#[derive(Debug, Clone)]
pub enum Change {
    /// A connection opened.
    Connect(ConnectionRow),
    /// A connection of `user` closed.
    Disconnect {
        /// The user.
        user: String,
        /// The connection.
        connection_id: String,
    },
}

impl Change {
    fn user(&self) -> &str {
        match self {
            Change::Connect(row) => &row.user_name,
            Change::Disconnect { user, .. } => user,
        }
    }

    fn connection_id(&self) -> &str {
        match self {
            Change::Connect(row) => &row.connection_id,
            Change::Disconnect { connection_id, .. } => connection_id,
        }
    }
}

/// Rows per multi-row `INSERT` (5 parameters each).
const INSERT_ROWS: usize = 200;

/// Several changes at once.
impl Db {
    /// Applies `changes` in one transaction, in order, stamping edges with `now`. Returns, for
    /// each change, whether it was an edge (the user went online, or offline), exactly as
    /// [`Db::connect_edge`] and [`Db::disconnect_edge`] would have one by one.
    pub async fn apply_presence_changes(
        &self,
        changes: &[Change],
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let users: Vec<&str> = changes
            .iter()
            .map(Change::user)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let ids: Vec<&str> = changes
            .iter()
            .map(Change::connection_id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let in_users = in_json(self.backend(), 1);
        let users_json = json_array(&users);
        let mut tx = self.pool().begin().await?;
        // The users' rows, locked in name order.
        let lock = match self.backend() {
            Backend::Postgres => format!(
                "SELECT name FROM users WHERE name IN ({in_users}) ORDER BY name FOR UPDATE"
            ),
            // One writer at a time: the first write takes the database's write lock.
            Backend::Sqlite => format!(
                "UPDATE users SET last_connected_at = last_connected_at WHERE name IN ({in_users})"
            ),
        };
        sqlx::query(&lock)
            .bind(&users_json)
            .execute(&mut *tx)
            .await?;
        let counts_sql = format!(
            "SELECT user_name, COUNT(*) AS n FROM connections WHERE user_name IN ({in_users}) \
             GROUP BY user_name"
        );
        let query = sqlx::query(&counts_sql).bind(&users_json);
        let mut counts: HashMap<String, i64> = HashMap::new();
        for row in query.fetch_all(&mut *tx).await? {
            counts.insert(row.try_get("user_name")?, row.try_get("n")?);
        }
        let existing_sql = format!(
            "SELECT connection_id FROM connections WHERE connection_id IN ({})",
            in_json(self.backend(), 1)
        );
        let query = sqlx::query(&existing_sql).bind(json_array(&ids));
        let mut existing: HashSet<String> = HashSet::new();
        for row in query.fetch_all(&mut *tx).await? {
            existing.insert(row.try_get("connection_id")?);
        }
        let stored_before = existing.clone();

        // Play the changes in order.
        let mut edges = Vec::with_capacity(changes.len());
        let mut inserted: HashMap<&str, &ConnectionRow> = HashMap::new();
        let mut went_online: BTreeSet<&str> = BTreeSet::new();
        let mut went_offline: BTreeSet<&str> = BTreeSet::new();
        for change in changes {
            let count = counts.entry(change.user().to_owned()).or_insert(0);
            let edge = match change {
                Change::Connect(row) => {
                    if existing.insert(row.connection_id.clone()) {
                        inserted.insert(&row.connection_id, row);
                        *count += 1;
                        *count == 1
                    } else {
                        false
                    }
                }
                Change::Disconnect { connection_id, .. } => {
                    if existing.remove(connection_id) {
                        inserted.remove(connection_id.as_str());
                        *count -= 1;
                        *count == 0
                    } else {
                        false
                    }
                }
            };
            if edge {
                match change {
                    Change::Connect(_) => went_online.insert(change.user()),
                    Change::Disconnect { .. } => went_offline.insert(change.user()),
                };
            }
            edges.push(edge);
        }

        // The net effect.
        let deleted: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| stored_before.contains(*id) && !existing.contains(*id))
            .collect();
        if !deleted.is_empty() {
            let sql = format!(
                "DELETE FROM connections WHERE connection_id IN ({})",
                in_json(self.backend(), 1)
            );
            sqlx::query(&sql)
                .bind(json_array(&deleted))
                .execute(&mut *tx)
                .await?;
        }
        let rows: Vec<&ConnectionRow> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Connect(row) => inserted.get(row.connection_id.as_str()).copied(),
                Change::Disconnect { .. } => None,
            })
            .collect();
        for chunk in rows.chunks(INSERT_ROWS) {
            let values = (0..chunk.len())
                .map(|i| format!("({})", placeholders(i * 5 + 1, 5)))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO connections (connection_id, user_name, node, connected_at, user_agent) \
                 VALUES {values} ON CONFLICT (connection_id) DO NOTHING"
            );
            let mut query = sqlx::query(&sql);
            for row in chunk {
                query = query
                    .bind(&row.connection_id)
                    .bind(&row.user_name)
                    .bind(&row.node)
                    .bind(row.connected_at)
                    .bind(row.user_agent.as_deref());
            }
            query.execute(&mut *tx).await?;
        }
        for (column, users) in [
            ("last_connected_at", &went_online),
            ("last_disconnected_at", &went_offline),
        ] {
            if users.is_empty() {
                continue;
            }
            let sql = format!(
                "UPDATE users SET {column} = $1 WHERE name IN ({})",
                in_json(self.backend(), 2)
            );
            sqlx::query(&sql)
                .bind(now)
                .bind(json_array(users))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(edges)
    }

    /// Those of `users` with a live connection on any node.
    pub async fn online_among(&self, users: &[String]) -> Result<Vec<String>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT DISTINCT user_name FROM connections WHERE user_name IN ({}) ORDER BY user_name",
            in_json(self.backend(), 1)
        );
        sqlx::query(&sql)
            .bind(json_array(users))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| r.try_get("user_name").map_err(StoreError::from))
            .collect()
    }

    /// How many users have a live connection, on any node.
    pub async fn online_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(DISTINCT user_name) AS n FROM connections")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// The first `limit` users online on any node, sorted.
    pub async fn online_users_first(&self, limit: i64) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT DISTINCT user_name FROM connections ORDER BY user_name LIMIT $1")
                .bind(limit)
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|r| r.try_get("user_name").map_err(StoreError::from))
            .collect()
    }
}
