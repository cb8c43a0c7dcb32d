//! The `notifications` table: the durable inbox, one row per recipient.

use std::collections::HashSet;
use std::fmt::Write as _;

use sqlx::Row;
use sqlx::any::{AnyArguments, AnyRow};

use crate::db::{Db, StoreError, in_json, json_array, placeholders};

/// One stored notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    /// Id (time-ordered UUID).
    pub id: String,
    /// The user it is for.
    pub recipient: String,
    /// Who sent it (a user name), if anyone.
    pub sender: Option<String>,
    /// The text.
    pub message: String,
    /// When it was stored (ms).
    pub created_at: i64,
    /// When it was handed to a live connection (ms).
    pub delivered_at: Option<i64>,
    /// When the recipient marked it read (ms).
    pub read_at: Option<i64>,
}

pub(super) const COLUMNS: &str =
    "id, recipient, sender, message, created_at, delivered_at, read_at";

fn notification_from_row(row: &AnyRow) -> Result<NotificationRow, StoreError> {
    Ok(NotificationRow {
        id: row.try_get("id")?,
        recipient: row.try_get("recipient")?,
        sender: row.try_get("sender")?,
        message: row.try_get("message")?,
        created_at: row.try_get("created_at")?,
        delivered_at: row.try_get("delivered_at")?,
        read_at: row.try_get("read_at")?,
    })
}

/// Binds a row's values, in [`COLUMNS`] order, as `$1`…`$7`.
pub(super) fn bind_row<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    row: &'q NotificationRow,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(&row.id)
        .bind(&row.recipient)
        .bind(row.sender.as_deref())
        .bind(&row.message)
        .bind(row.created_at)
        .bind(row.delivered_at)
        .bind(row.read_at)
}

/// Most rows one INSERT stores. A chunk binds at most 7 values per row, 7,000 in all: well under
/// SQLite's limit of 32,766 bound parameters per statement and PostgreSQL's 65,535.
pub const INSERT_CHUNK: usize = 1000;

/// SQLite refuses statements with more bound parameters than this.
const SQLITE_MAX_PARAMETERS: usize = 32_766;
const _: () = assert!(7 * INSERT_CHUNK < SQLITE_MAX_PARAMETERS);

/// Whether the rows share every column but the id and the recipient (the rows of one publish).
fn shares_body(rows: &[NotificationRow]) -> bool {
    rows.first().is_some_and(|a| {
        rows.iter().all(|b| {
            a.sender == b.sender
                && a.message == b.message
                && a.created_at == b.created_at
                && a.delivered_at == b.delivered_at
                && a.read_at == b.read_at
        })
    })
}

/// The multi-row INSERT of `rows` rows. With a `shared` body, the values the rows share are
/// bound once (`$1`…`$5`) and each row adds two (id, recipient), so that a long message is not
/// sent once per recipient; otherwise each row binds its seven columns.
fn insert_sql(rows: usize, shared: bool) -> String {
    let mut sql = format!("INSERT INTO notifications ({COLUMNS}) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        if shared {
            let n = 6 + 2 * i;
            let _ = write!(sql, "(${n}, ${}, $1, $2, $3, $4, $5)", n + 1);
        } else {
            let _ = write!(sql, "({})", placeholders(1 + 7 * i, 7));
        }
    }
    sql
}

/// Binds the values of [`insert_sql`]`(chunk.len(), shared)`.
fn bind_chunk<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, AnyArguments<'q>>,
    chunk: &'q [NotificationRow],
    shared: bool,
) -> sqlx::query::Query<'q, sqlx::Any, AnyArguments<'q>> {
    match chunk.first() {
        Some(first) if shared => {
            query = query
                .bind(first.sender.as_deref())
                .bind(&first.message)
                .bind(first.created_at)
                .bind(first.delivered_at)
                .bind(first.read_at);
            for row in chunk {
                query = query.bind(&row.id).bind(&row.recipient);
            }
            query
        }
        _ => chunk.iter().fold(query, bind_row),
    }
}

impl Db {
    /// How many notifications are unread, all users together.
    pub async fn unread_total(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM notifications WHERE read_at IS NULL")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Stores notifications (all or none), in multi-row INSERTs of at most [`INSERT_CHUNK`] rows
    /// inside one transaction.
    pub async fn insert_notifications(&self, rows: &[NotificationRow]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for chunk in rows.chunks(INSERT_CHUNK) {
            let shared = shares_body(chunk);
            let sql = insert_sql(chunk.len(), shared);
            bind_chunk(sqlx::query(&sql), chunk, shared)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks the notifications `ids` delivered, those not delivered yet, with one UPDATE.
    /// Returns the ids claimed: this caller must deliver exactly those (whoever else raced for
    /// the others, a replay for instance, got them).
    pub async fn claim_deliveries(
        &self,
        ids: &[&str],
        now: i64,
    ) -> Result<HashSet<String>, StoreError> {
        let mut claimed = HashSet::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(claimed);
        }
        let sql = format!(
            "UPDATE notifications SET delivered_at = $1 \
             WHERE delivered_at IS NULL AND id IN ({}) RETURNING id",
            in_json(self.backend(), 2)
        );
        let query = sqlx::query(&sql).bind(now).bind(json_array(ids));
        for row in query.fetch_all(self.pool()).await? {
            claimed.insert(row.try_get::<String, _>("id")?);
        }
        Ok(claimed)
    }

    /// Claims every undelivered notification of a user, oldest first.
    pub async fn claim_undelivered(
        &self,
        recipient: &str,
        now: i64,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "UPDATE notifications SET delivered_at = $2 \
             WHERE recipient = $1 AND delivered_at IS NULL RETURNING {COLUMNS}"
        ))
        .bind(recipient)
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        let mut rows: Vec<NotificationRow> = rows
            .iter()
            .map(notification_from_row)
            .collect::<Result<_, _>>()?;
        rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(rows)
    }

    /// A user's notifications, newest first, optionally only unread ones.
    pub async fn notifications_for(
        &self,
        recipient: &str,
        unread_only: bool,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let filter = if unread_only {
            " AND read_at IS NULL"
        } else {
            ""
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE recipient = $1{filter} \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(recipient)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(notification_from_row).collect()
    }

    /// Marks a notification of `recipient` read (idempotent); `Ok(false)` if there is no such
    /// notification for that user.
    pub async fn mark_read(&self, recipient: &str, id: &str, now: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE notifications SET read_at = COALESCE(read_at, $3) WHERE id = $1 AND recipient = $2",
        )
        .bind(id)
        .bind(recipient)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Deletes notifications created before `before` (ms); returns how many.
    pub async fn purge_notifications(&self, before: i64) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM notifications WHERE created_at < $1")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, recipient: &str, message: &str) -> NotificationRow {
        NotificationRow {
            id: id.to_owned(),
            recipient: recipient.to_owned(),
            sender: None,
            message: message.to_owned(),
            created_at: 1,
            delivered_at: None,
            read_at: None,
        }
    }

    #[test]
    fn rows_of_one_publish_bind_their_shared_values_once() {
        assert_eq!(
            insert_sql(2, true),
            format!(
                "INSERT INTO notifications ({COLUMNS}) VALUES \
                 ($6, $7, $1, $2, $3, $4, $5), ($8, $9, $1, $2, $3, $4, $5)"
            )
        );
        assert!(shares_body(&[row("a", "x", "m"), row("b", "y", "m")]));
        assert!(!shares_body(&[row("a", "x", "m"), row("b", "y", "other")]));
        assert!(!shares_body(&[]));
    }

    #[test]
    fn other_rows_bind_seven_values_each() {
        assert_eq!(
            insert_sql(2, false),
            format!(
                "INSERT INTO notifications ({COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14)"
            )
        );
    }
}
