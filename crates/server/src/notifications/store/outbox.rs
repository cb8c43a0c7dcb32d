//! The `publish_requests` table (PostgreSQL only): notifications an application published from
//! its own transaction with `signalbox_publish(...)`, waiting for a node to store them in the
//! inbox. See [`crate::notifications::outbox`] and docs/transactional-publish.md.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgListener;

use super::notifications::NotificationRow;
use super::notifications::{COLUMNS, INSERT_CHUNK, bind_row};
use crate::db::placeholders;
use crate::db::{Db, StoreError, json_column};

/// A publish request claimed by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequestRow {
    /// The request id (a UUID, as text).
    pub id: String,
    /// The recipients, resolved when it was published.
    pub recipients: Vec<String>,
    /// The text.
    pub message: String,
}

/// Why a listening connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The dedicated connection could not be opened.
    #[error("cannot connect: {0}")]
    Connect(sqlx::Error),
    /// `LISTEN` failed.
    #[error("cannot listen: {0}")]
    Listen(sqlx::Error),
}

/// Opens a dedicated connection to the PostgreSQL database at `database_url` and LISTENs on
/// `channel`.
pub async fn listen_publish_requests(
    database_url: &str,
    channel: &str,
) -> Result<PgListener, ListenError> {
    let mut listener = PgListener::connect(database_url)
        .await
        .map_err(ListenError::Connect)?;
    listener
        .listen(channel)
        .await
        .map_err(ListenError::Listen)?;
    Ok(listener)
}

/// A duration in milliseconds, for an `interval` computed in SQL.
fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

impl Db {
    /// Claims up to `limit` pending publish requests for `node`, oldest first: those nobody
    /// claimed and those whose claim is older than `claim_timeout` (its node is presumed dead).
    /// Rows another node is claiming at this moment are skipped, not waited for.
    pub async fn claim_publish_requests(
        &self,
        node: &str,
        claim_timeout: Duration,
        limit: i64,
    ) -> Result<Vec<PublishRequestRow>, StoreError> {
        let rows = sqlx::query(
            "UPDATE publish_requests SET claimed_by = $1, claimed_at = now() \
             WHERE id IN (\
                 SELECT id FROM publish_requests \
                 WHERE done_at IS NULL \
                   AND (claimed_at IS NULL \
                        OR claimed_at < now() - $2::float8 * interval '1 millisecond') \
                 ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id::text AS id, recipients::text AS recipients, \
                       body ->> 'message' AS message, \
                       (extract(epoch FROM created_at) * 1000000)::bigint AS created_us",
        )
        .bind(node)
        .bind(millis(claim_timeout))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        // RETURNING does not keep the subquery's order.
        let mut claimed = rows
            .iter()
            .map(|row| {
                let recipients: String = row.try_get("recipients")?;
                let created_us: i64 = row.try_get("created_us")?;
                let request = PublishRequestRow {
                    id: row.try_get("id")?,
                    recipients: json_column(&recipients, "publish_requests.recipients")?,
                    message: row.try_get("message")?,
                };
                Ok((created_us, request))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        Ok(claimed.into_iter().map(|(_, request)| request).collect())
    }

    /// Completes a publish request `node` claimed: in one transaction, stores `rows` in the inbox
    /// (skipping recipients deleted since) and marks the request done. `None` when the request is
    /// no longer this node's (done already, or its claim was taken over): nothing is stored.
    /// Otherwise the rows stored, to be delivered once this returns.
    pub async fn complete_publish_request(
        &self,
        id: &str,
        node: &str,
        rows: Vec<NotificationRow>,
    ) -> Result<Option<Vec<NotificationRow>>, StoreError> {
        let mut tx = self.pool().begin().await?;
        // The row lock orders this against a node taking the claim over: whoever locks second
        // sees the other's claim or done_at and stores nothing.
        let mine = sqlx::query(
            "SELECT 1 AS one FROM publish_requests \
             WHERE id = $1::uuid AND claimed_by = $2 AND done_at IS NULL FOR UPDATE",
        )
        .bind(id)
        .bind(node)
        .fetch_optional(&mut *tx)
        .await?;
        if mine.is_none() {
            tx.rollback().await?;
            return Ok(None);
        }
        // Multi-row inserts of the rows whose recipient still exists; RETURNING says which.
        let mut inserted = HashSet::with_capacity(rows.len());
        for chunk in rows.chunks(INSERT_CHUNK) {
            let values = (0..chunk.len())
                .map(|i| format!("({})", placeholders(1 + 7 * i, 7)))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO notifications ({COLUMNS}) \
                 SELECT v.* FROM (VALUES {values}) AS v ({COLUMNS}) \
                 WHERE EXISTS (SELECT 1 FROM users WHERE name = v.recipient) RETURNING id"
            );
            let query = chunk.iter().fold(sqlx::query(&sql), bind_row);
            for row in query.fetch_all(&mut *tx).await? {
                inserted.insert(row.try_get::<String, _>("id")?);
            }
        }
        let stored: Vec<NotificationRow> = rows
            .into_iter()
            .filter(|row| inserted.contains(&row.id))
            .collect();
        sqlx::query("UPDATE publish_requests SET done_at = now() WHERE id = $1::uuid")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(stored))
    }

    /// Gives up the claims `node` still holds on requests not done (at shutdown), so that
    /// another node takes them at once rather than after the claim timeout. Returns how many.
    pub async fn release_publish_claims(&self, node: &str) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE publish_requests SET claimed_by = NULL, claimed_at = NULL \
             WHERE claimed_by = $1 AND done_at IS NULL",
        )
        .bind(node)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }

    /// Deletes publish requests done more than `age` ago; returns how many.
    pub async fn purge_publish_requests(&self, age: Duration) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "DELETE FROM publish_requests \
             WHERE done_at < now() - $1::float8 * interval '1 millisecond'",
        )
        .bind(millis(age))
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }
}
