//! The `broadcasts` table: notifications to every account, stored once (`seq`-ordered), with
//! each account's read marks (`broadcast_reads`) and delivery cursor (`users.broadcast_cursor`).

use std::collections::HashMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Db, StoreError, in_json, json_array};

/// One notification to every account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastRow {
    /// Position in the order of broadcasts (1, 2, …).
    pub seq: i64,
    /// Id (time-ordered UUID), shared by every recipient.
    pub id: String,
    /// Who sent it (a user name), if anyone.
    pub sender: Option<String>,
    /// The text.
    pub message: String,
    /// When it was stored (ms).
    pub created_at: i64,
}

/// A broadcast as one account sees it in the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedBroadcast {
    /// The broadcast.
    pub broadcast: BroadcastRow,
    /// When this account marked it read (ms).
    pub read_at: Option<i64>,
}

/// Where an account stands with broadcasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BroadcastCursor {
    /// Every broadcast up to this `seq` has been handed to a connection of the account.
    pub cursor: i64,
    /// When the account was created (ms): it receives the broadcasts stored since.
    pub created_at: i64,
}

const COLUMNS: &str = "seq, id, sender, message, created_at";

fn broadcast_from_row(row: &AnyRow) -> Result<BroadcastRow, StoreError> {
    Ok(BroadcastRow {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        sender: row.try_get("sender")?,
        message: row.try_get("message")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Db {
    /// Stores a broadcast: draws the next `seq` (the counter's row lock orders the commits) and
    /// records how many accounts there are now.
    pub async fn insert_broadcast(
        &self,
        id: &str,
        sender: Option<&str>,
        message: &str,
        created_at: i64,
    ) -> Result<BroadcastRow, StoreError> {
        let mut tx = self.pool().begin().await?;
        let seq: i64 =
            sqlx::query("UPDATE broadcast_counter SET seq = seq + 1 WHERE id = 1 RETURNING seq")
                .fetch_one(&mut *tx)
                .await?
                .try_get("seq")?;
        sqlx::query(
            "INSERT INTO broadcasts (seq, id, sender, message, created_at, recipients) \
             VALUES ($1, $2, $3, $4, $5, (SELECT COUNT(*) FROM users))",
        )
        .bind(seq)
        .bind(id)
        .bind(sender)
        .bind(message)
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BroadcastRow {
            seq,
            id: id.to_owned(),
            sender: sender.map(str::to_owned),
            message: message.to_owned(),
            created_at,
        })
    }

    /// The newest broadcast's `seq` (0 before the first).
    pub async fn last_broadcast_seq(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT seq FROM broadcast_counter WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("seq")?)
    }

    /// Broadcasts after `after` (by `seq`, oldest first), at most `limit`.
    pub async fn broadcasts_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<BroadcastRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM broadcasts WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(broadcast_from_row).collect()
    }

    /// The broadcasts with `seq` in (`after`, `upto`] stored since `since` (ms), oldest first.
    pub async fn broadcasts_between(
        &self,
        after: i64,
        upto: i64,
        since: i64,
    ) -> Result<Vec<BroadcastRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM broadcasts \
             WHERE seq > $1 AND seq <= $2 AND created_at >= $3 ORDER BY seq"
        ))
        .bind(after)
        .bind(upto)
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(broadcast_from_row).collect()
    }

    /// The broadcast cursors of those of `users` that exist.
    pub async fn broadcast_cursors(
        &self,
        users: &[String],
    ) -> Result<HashMap<String, BroadcastCursor>, StoreError> {
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT name, broadcast_cursor, created_at FROM users WHERE name IN ({})",
            in_json(self.backend(), 1)
        );
        sqlx::query(&sql)
            .bind(json_array(users))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("name")?,
                    BroadcastCursor {
                        cursor: row.try_get("broadcast_cursor")?,
                        created_at: row.try_get("created_at")?,
                    },
                ))
            })
            .collect()
    }

    /// Moves `user`'s cursor from `from` to `to`, only if it is still at `from` (compare and
    /// set: of two connections racing for the same broadcasts, one wins). Whether it moved.
    pub async fn move_broadcast_cursor(
        &self,
        user: &str,
        from: i64,
        to: i64,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE users SET broadcast_cursor = $3 WHERE name = $1 AND broadcast_cursor = $2",
        )
        .bind(user)
        .bind(from)
        .bind(to)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Records that a connection of `user` received every broadcast in (`from`, `to`]: the
    /// cursor moves to `to` if that continues it (it is at least `from`), and stays otherwise
    /// (a gap before `from` is still to be replayed).
    pub async fn extend_broadcast_cursor(
        &self,
        user: &str,
        from: i64,
        to: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE users SET broadcast_cursor = $3 \
             WHERE name = $1 AND broadcast_cursor >= $2 AND broadcast_cursor < $3",
        )
        .bind(user)
        .bind(from)
        .bind(to)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The newest broadcasts `user` receives (stored since the account was created), with the
    /// user's read marks, optionally only unread ones; at most `limit`, newest first.
    pub async fn broadcasts_for(
        &self,
        user: &str,
        unread_only: bool,
        limit: i64,
    ) -> Result<Vec<ReceivedBroadcast>, StoreError> {
        let filter = if unread_only {
            " AND r.read_at IS NULL"
        } else {
            ""
        };
        let rows = sqlx::query(&format!(
            "SELECT b.seq, b.id, b.sender, b.message, b.created_at, r.read_at \
             FROM broadcasts b \
             LEFT JOIN broadcast_reads r ON r.broadcast_id = b.id AND r.user_name = $1 \
             WHERE b.created_at >= (SELECT created_at FROM users WHERE name = $1){filter} \
             ORDER BY b.seq DESC LIMIT $2"
        ))
        .bind(user)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ReceivedBroadcast {
                    broadcast: broadcast_from_row(row)?,
                    read_at: row.try_get("read_at")?,
                })
            })
            .collect()
    }

    /// Marks broadcast `id` read for `user` (idempotent); `Ok(false)` if `user` does not receive
    /// such a broadcast.
    pub async fn mark_broadcast_read(
        &self,
        user: &str,
        id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let received = sqlx::query(
            "SELECT 1 AS one FROM broadcasts b JOIN users u ON u.name = $1 \
             WHERE b.id = $2 AND b.created_at >= u.created_at",
        )
        .bind(user)
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .is_some();
        if !received {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO broadcast_reads (user_name, broadcast_id, read_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_name, broadcast_id) DO NOTHING",
        )
        .bind(user)
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(true)
    }

    /// How many broadcasts are unread, all accounts together: the accounts each had when it was
    /// stored, less the read marks.
    pub async fn unread_broadcasts(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT CAST(COALESCE(SUM(recipients), 0) AS BIGINT) FROM broadcasts) \
                  - (SELECT COUNT(*) FROM broadcast_reads) AS n",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<i64, _>("n")?.max(0))
    }

    /// Deletes broadcasts stored before `before` (ms), and their read marks; returns how many.
    pub async fn purge_broadcasts(&self, before: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "DELETE FROM broadcast_reads WHERE broadcast_id IN \
             (SELECT id FROM broadcasts WHERE created_at < $1)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let result = sqlx::query("DELETE FROM broadcasts WHERE created_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(result.rows_affected())
    }
}
