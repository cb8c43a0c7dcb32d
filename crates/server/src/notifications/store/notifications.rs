//! The `notifications` table: the durable inbox, one row per recipient.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Db, StoreError};

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

impl Db {
    /// How many notifications are unread, all users together.
    pub async fn unread_total(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM notifications WHERE read_at IS NULL")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Stores notifications (all or none).
    pub async fn insert_notifications(&self, rows: &[NotificationRow]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for row in rows {
            let sql = format!(
                "INSERT INTO notifications ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            );
            bind_row(sqlx::query(&sql), row).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks one notification delivered unless it already is: `true` for the one caller that
    /// claims it (and must then deliver it).
    pub async fn claim_delivery(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE notifications SET delivered_at = $2 WHERE id = $1 AND delivered_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
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
