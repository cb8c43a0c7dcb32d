//! The SQL of the webhooks: the `webhook_events` table (the events waiting for delivery and the
//! delivery log) and `webhook_presence` (what receivers were last told about each user).
//! Migration `0008_webhooks.sql`; timestamps are milliseconds since the Unix epoch.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::event::EventType;
use crate::db::{Backend, Db, StoreError};

/// Locks the row of user `$1` until the transaction ends: the same lock the presence edges take,
/// so that a user's presence is read and the events about it are recorded one at a time across
/// the cluster.
const LOCK_USER: &str = "UPDATE users SET last_connected_at = last_connected_at WHERE name = $1";

/// A condition on event `e`: it is not a presence event waiting for an earlier pending presence
/// event of the same user (a user's presence events are delivered in order).
const IN_ORDER: &str = "(e.seq IS NULL OR NOT EXISTS (\
     SELECT 1 FROM webhook_events p \
     WHERE p.user_name = e.user_name AND p.status = 'pending' \
       AND p.seq IS NOT NULL AND p.seq < e.seq))";

/// Columns read for the delivery log.
const LOG_COLUMNS: &str = "id, event, user_name, connection_id, node, occurred_at, status, \
     attempts, due_at, last_status, last_error, last_attempt_at, created_at, delivered_at";

/// Where an event is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for its (next) attempt.
    Pending,
    /// The receiver answered `2xx`.
    Delivered,
    /// The attempts are used up, or the receiver's answer cannot change by retrying.
    Failed,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// An event to store.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent<'a> {
    pub(crate) id: &'a str,
    pub(crate) event: EventType,
    pub(crate) user: &'a str,
    pub(crate) connection_id: Option<&'a str>,
    pub(crate) node: &'a str,
    pub(crate) occurred_at: i64,
    pub(crate) body: &'a str,
    pub(crate) seq: Option<i64>,
    pub(crate) due_at: i64,
    pub(crate) now: i64,
}

/// What a presence change recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PresenceRecord {
    /// Receivers were already told the current presence: nothing to do.
    Unchanged,
    /// An event of this type was stored.
    Stored(EventType),
    /// The user came back within the debounce: the pending `user.offline` was withdrawn and no
    /// `user.online` is sent.
    Debounced,
    /// The presence changed, but its event type is not sent.
    NotSent,
}

/// How [`record_presence`] turns a change into an event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PresencePolicy {
    /// Whether `user.online` is sent.
    pub(crate) online: bool,
    /// Whether `user.offline` is sent.
    pub(crate) offline: bool,
    /// The debounce, milliseconds.
    pub(crate) debounce_ms: i64,
}

/// A row claimed for an attempt.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedEvent {
    pub(crate) id: String,
    pub(crate) event: String,
    pub(crate) body: String,
    /// Attempts including the one this claim is for.
    pub(crate) attempts: i64,
}

/// One event of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// The event id (`X-Signalbox-Delivery`).
    pub id: String,
    /// The event type.
    pub event: String,
    /// The user.
    pub user: String,
    /// The connection, for `connection.*` events.
    pub connection_id: Option<String>,
    /// The node that recorded it.
    pub node: String,
    /// When it happened (ms).
    pub occurred_at: i64,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made (or under way).
    pub attempts: i64,
    /// When the next attempt is due (ms), for pending events.
    pub due_at: i64,
    /// The receiver's status at the last attempt, if it answered.
    pub last_status: Option<i64>,
    /// What went wrong at the last attempt.
    pub last_error: Option<String>,
    /// When the last attempt ended (ms).
    pub last_attempt_at: Option<i64>,
    /// When it was stored (ms).
    pub created_at: i64,
    /// When the receiver accepted it (ms).
    pub delivered_at: Option<i64>,
}

fn delivery_row(row: &AnyRow) -> Result<DeliveryRow, StoreError> {
    Ok(DeliveryRow {
        id: row.try_get("id")?,
        event: row.try_get("event")?,
        user: row.try_get("user_name")?,
        connection_id: row.try_get("connection_id")?,
        node: row.try_get("node")?,
        occurred_at: row.try_get("occurred_at")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        due_at: row.try_get("due_at")?,
        last_status: row.try_get("last_status")?,
        last_error: row.try_get("last_error")?,
        last_attempt_at: row.try_get("last_attempt_at")?,
        created_at: row.try_get("created_at")?,
        delivered_at: row.try_get("delivered_at")?,
    })
}

async fn insert_event<'c, E>(executor: E, event: &NewEvent<'_>) -> Result<(), StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO webhook_events \
         (id, event, user_name, connection_id, node, occurred_at, body, seq, status, attempts, \
          due_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $9, $10)",
    )
    .bind(event.id)
    .bind(event.event.as_str())
    .bind(event.user)
    .bind(event.connection_id)
    .bind(event.node)
    .bind(event.occurred_at)
    .bind(event.body)
    .bind(event.seq)
    .bind(event.due_at)
    .bind(event.now)
    .execute(executor)
    .await?;
    Ok(())
}

/// Stores a connection event, due at once.
pub(crate) async fn insert_connection_event(
    db: &Db,
    event: &NewEvent<'_>,
) -> Result<(), StoreError> {
    insert_event(db.pool(), event).await
}

/// Brings what receivers are told about `user` in line with the user's recorded presence (live
/// connections on any node), in one transaction under the lock of the user's row:
///
/// - online now, told offline: if a `user.offline` is not due yet (the user came back within
///   the debounce) and was never attempted, it is withdrawn and nothing is sent; otherwise a
///   `user.online` due at once is stored;
/// - offline now, told online: a `user.offline` due after the debounce is stored;
/// - otherwise nothing changes.
///
/// Since it reads the presence rather than trusting the edge that triggered it, two nodes
/// recording a user's edges in the opposite order still leave receivers with the right state.
/// `make` builds the event (id and body) of a type.
pub(crate) async fn record_presence(
    db: &Db,
    user: &str,
    now: i64,
    policy: PresencePolicy,
    make: impl FnOnce(EventType) -> (String, String),
    node: &str,
    occurred_at: i64,
) -> Result<PresenceRecord, StoreError> {
    let mut tx = db.pool().begin().await?;
    sqlx::query(LOCK_USER).bind(user).execute(&mut *tx).await?;
    let connections: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM connections WHERE user_name = $1")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
    let online = connections > 0;
    let told =
        sqlx::query("SELECT online, changed_at, seq FROM webhook_presence WHERE user_name = $1")
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
    let (told_online, changed_at, seq) = match &told {
        Some(row) => (
            row.try_get::<i64, _>("online")? != 0,
            Some(row.try_get::<i64, _>("changed_at")?),
            row.try_get::<i64, _>("seq")?,
        ),
        None => (false, None, 0),
    };
    if online == told_online {
        tx.commit().await?;
        return Ok(PresenceRecord::Unchanged);
    }
    let seq = seq + 1;
    let store = |event: EventType, due_at: i64| {
        let (id, body) = make(event);
        (id, body, event, due_at)
    };
    let mut outcome = PresenceRecord::NotSent;
    let mut new = None;
    if online {
        let withdrawn = if policy.offline {
            // Not yet due: the user is back within the debounce. Not attempted yet: the
            // receiver cannot have seen it.
            sqlx::query(
                "DELETE FROM webhook_events WHERE user_name = $1 AND event = $2 \
                 AND status = 'pending' AND attempts = 0 AND due_at > $3",
            )
            .bind(user)
            .bind(EventType::UserOffline.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0
        } else {
            // No `user.offline` is stored; the debounce still hides a reload.
            changed_at.is_some_and(|at| now - at < policy.debounce_ms)
        };
        if withdrawn {
            outcome = PresenceRecord::Debounced;
        } else if policy.online {
            new = Some(store(EventType::UserOnline, now));
        }
    } else if policy.offline {
        new = Some(store(
            EventType::UserOffline,
            now.saturating_add(policy.debounce_ms),
        ));
    }
    if let Some((id, body, event, due_at)) = &new {
        insert_event(
            &mut *tx,
            &NewEvent {
                id,
                event: *event,
                user,
                connection_id: None,
                node,
                occurred_at,
                body,
                seq: Some(seq),
                due_at: *due_at,
                now,
            },
        )
        .await?;
        outcome = PresenceRecord::Stored(*event);
    }
    sqlx::query(
        "INSERT INTO webhook_presence (user_name, online, changed_at, seq) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_name) DO UPDATE SET online = excluded.online, \
         changed_at = excluded.changed_at, seq = excluded.seq",
    )
    .bind(user)
    .bind(i64::from(online))
    .bind(now)
    .bind(seq)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Claims up to `limit` due events for `node` until `lease_until`: pending, due, not leased by
/// another node (or its lease ended), and, for presence events, not preceded by a pending
/// presence event of the same user. Counts the attempt. On PostgreSQL rows another node is
/// claiming at this moment are skipped, not waited for.
pub(crate) async fn claim(
    db: &Db,
    node: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<ClaimedEvent>, StoreError> {
    let lock = match db.backend() {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE webhook_events SET claimed_by = $1, lease_until = $2, attempts = attempts + 1 \
         WHERE id IN (\
             SELECT e.id FROM webhook_events e \
             WHERE e.status = 'pending' AND e.due_at <= $3 \
               AND (e.lease_until IS NULL OR e.lease_until < $3) \
               AND {IN_ORDER} \
             ORDER BY e.due_at, e.id LIMIT $4{lock}) \
         RETURNING id, event, body, attempts"
    );
    let rows = sqlx::query(&sql)
        .bind(node)
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|row| {
            Ok(ClaimedEvent {
                id: row.try_get("id")?,
                event: row.try_get("event")?,
                body: row.try_get("body")?,
                attempts: row.try_get("attempts")?,
            })
        })
        .collect()
}

/// The outcome of an attempt, as stored.
#[derive(Debug, Clone)]
pub(crate) struct AttemptRecord<'a> {
    pub(crate) status: Status,
    /// The receiver's status, if it answered.
    pub(crate) http_status: Option<i64>,
    pub(crate) error: Option<&'a str>,
    /// When the next attempt is due (pending only).
    pub(crate) due_at: i64,
    pub(crate) now: i64,
}

/// Records the outcome of the attempt `node` made under its claim; `false` when the claim was
/// no longer this node's (its lease ended and another node took the event over).
pub(crate) async fn finish(
    db: &Db,
    id: &str,
    node: &str,
    record: &AttemptRecord<'_>,
) -> Result<bool, StoreError> {
    let delivered_at = (record.status == Status::Delivered).then_some(record.now);
    let done = sqlx::query(
        "UPDATE webhook_events SET status = $3, last_status = $4, last_error = $5, \
         last_attempt_at = $6, delivered_at = $7, due_at = $8, claimed_by = NULL, \
         lease_until = NULL \
         WHERE id = $1 AND claimed_by = $2 AND status = 'pending'",
    )
    .bind(id)
    .bind(node)
    .bind(record.status.as_str())
    .bind(record.http_status)
    .bind(record.error)
    .bind(record.now)
    .bind(delivered_at)
    .bind(record.due_at)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Gives up the claims `node` holds (at shutdown): those events are due again at once, for any
/// node. Returns how many.
pub(crate) async fn release(db: &Db, node: &str) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE webhook_events SET claimed_by = NULL, lease_until = NULL \
         WHERE claimed_by = $1 AND status = 'pending'",
    )
    .bind(node)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected())
}

/// When the earliest pending event that could be claimed is due (ms): not leased, and not
/// waiting for an earlier presence event of its user.
pub(crate) async fn next_due(db: &Db, now: i64) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT MIN(e.due_at) AS due FROM webhook_events e WHERE e.status = 'pending' \
         AND (e.lease_until IS NULL OR e.lease_until < $1) AND {IN_ORDER}"
    ))
    .bind(now)
    .fetch_one(db.pool())
    .await?;
    Ok(row.try_get("due")?)
}

/// How many events are pending, on every node.
pub async fn pending_count(db: &Db) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM webhook_events WHERE status = 'pending'")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get("n")?)
}

/// The newest `limit` events of the delivery log, newest first, optionally of one status.
pub async fn recent(
    db: &Db,
    status: Option<Status>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, StoreError> {
    let rows = match status {
        Some(status) => {
            sqlx::query(&format!(
                "SELECT {LOG_COLUMNS} FROM webhook_events WHERE status = $1 \
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            ))
            .bind(status.as_str())
            .bind(limit)
            .fetch_all(db.pool())
            .await?
        }
        None => {
            sqlx::query(&format!(
                "SELECT {LOG_COLUMNS} FROM webhook_events \
                 ORDER BY created_at DESC, id DESC LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(db.pool())
            .await?
        }
    };
    rows.iter().map(delivery_row).collect()
}

/// One event of the delivery log.
pub async fn find(db: &Db, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {LOG_COLUMNS} FROM webhook_events WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(delivery_row).transpose()
}

/// Makes a failed event pending again, due at `now`: one more attempt. `false` when the event
/// does not exist or has not failed.
pub async fn retry(db: &Db, id: &str, now: i64) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE webhook_events SET status = 'pending', due_at = $2, claimed_by = NULL, \
         lease_until = NULL WHERE id = $1 AND status = 'failed'",
    )
    .bind(id)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes delivered and failed events stored before `before`, then all but the newest `keep`
/// of them (those stored in the same millisecond as the oldest one over the cap go too); and what receivers were told about users offline since before `before` (the same
/// as never having been told). Returns how many events were deleted.
pub(crate) async fn purge(db: &Db, before: i64, keep: i64) -> Result<u64, StoreError> {
    let old =
        sqlx::query("DELETE FROM webhook_events WHERE status <> 'pending' AND created_at < $1")
            .bind(before)
            .execute(db.pool())
            .await?
            .rows_affected();
    let over = sqlx::query(
        "DELETE FROM webhook_events WHERE status <> 'pending' AND created_at <= (\
             SELECT created_at FROM webhook_events WHERE status <> 'pending' \
             ORDER BY created_at DESC LIMIT 1 OFFSET $1)",
    )
    .bind(keep)
    .execute(db.pool())
    .await?
    .rows_affected();
    sqlx::query(
        "DELETE FROM webhook_presence WHERE online = 0 AND changed_at < $1 \
         AND NOT EXISTS (SELECT 1 FROM webhook_events e \
                         WHERE e.user_name = webhook_presence.user_name AND e.status = 'pending')",
    )
    .bind(before)
    .execute(db.pool())
    .await?;
    Ok(old + over)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::presence::ConnectionRow;

    const POLICY: PresencePolicy = PresencePolicy {
        online: true,
        offline: true,
        debounce_ms: 3000,
    };

    async fn db() -> Db {
        let db = Db::open("sqlite::memory:").await.unwrap();
        sqlx::query("INSERT INTO users (name, created_at) VALUES ('alice', 0)")
            .execute(db.pool())
            .await
            .unwrap();
        db
    }

    async fn set_online(db: &Db, online: bool) {
        if online {
            db.insert_connection(&ConnectionRow {
                connection_id: "c1".to_owned(),
                user_name: "alice".to_owned(),
                node: "n1".to_owned(),
                connected_at: 0,
                user_agent: None,
            })
            .await
            .unwrap();
        } else {
            db.delete_connection("c1").await.unwrap();
        }
    }

    async fn record(db: &Db, now: i64) -> PresenceRecord {
        let make = |event: EventType| (format!("{event}-{now}"), "{}".to_owned());
        record_presence(db, "alice", now, POLICY, make, "n1", now)
            .await
            .unwrap()
    }

    async fn events(db: &Db) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = recent(db, None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.status))
            .collect();
        rows.sort();
        rows
    }

    #[tokio::test]
    async fn presence_events_follow_the_debounce_and_the_order() {
        let db = db().await;
        set_online(&db, true).await;
        assert_eq!(
            record(&db, 1000).await,
            PresenceRecord::Stored(EventType::UserOnline)
        );
        assert_eq!(record(&db, 1001).await, PresenceRecord::Unchanged);
        let online = claim(&db, "n1", 1000, 60_000, 10).await.unwrap();
        assert_eq!(online.len(), 1);
        let delivered = AttemptRecord {
            status: Status::Delivered,
            http_status: Some(204),
            error: None,
            due_at: 1000,
            now: 1000,
        };
        assert!(
            finish(&db, "user.online-1000", "n1", &delivered)
                .await
                .unwrap()
        );

        // A reload: offline, back within the debounce.
        set_online(&db, false).await;
        assert_eq!(
            record(&db, 2000).await,
            PresenceRecord::Stored(EventType::UserOffline)
        );
        assert!(claim(&db, "n1", 2000, 60_000, 10).await.unwrap().is_empty());
        assert_eq!(next_due(&db, 2000).await.unwrap(), Some(5000));
        set_online(&db, true).await;
        assert_eq!(record(&db, 3000).await, PresenceRecord::Debounced);
        assert_eq!(pending_count(&db).await.unwrap(), 0);

        // Away longer than the debounce, the offline not sent yet (the receiver was down):
        // it stays, and the online waits for it.
        set_online(&db, false).await;
        assert_eq!(
            record(&db, 4000).await,
            PresenceRecord::Stored(EventType::UserOffline)
        );
        set_online(&db, true).await;
        assert_eq!(
            record(&db, 8000).await,
            PresenceRecord::Stored(EventType::UserOnline)
        );
        let first = claim(&db, "n1", 8000, 60_000, 10).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].id, "user.offline-4000");
        assert_eq!(first[0].attempts, 1);
        let again_later = AttemptRecord {
            status: Status::Pending,
            http_status: Some(503),
            error: Some("status 503"),
            due_at: 9000,
            now: 8000,
        };
        assert!(finish(&db, &first[0].id, "n1", &again_later).await.unwrap());
        // Not before the offline is delivered (or failed).
        assert!(claim(&db, "n1", 8500, 60_000, 10).await.unwrap().is_empty());
        assert_eq!(next_due(&db, 8500).await.unwrap(), Some(9000));
        let again = claim(&db, "n1", 9000, 60_000, 10).await.unwrap();
        assert_eq!(again[0].attempts, 2);
        // Another node cannot finish an attempt it does not hold.
        assert!(!finish(&db, &again[0].id, "n2", &delivered).await.unwrap());
        assert!(finish(&db, &again[0].id, "n1", &delivered).await.unwrap());
        let last = claim(&db, "n1", 9000, 60_000, 10).await.unwrap();
        assert_eq!(last[0].id, "user.online-8000");
        let failed = AttemptRecord {
            status: Status::Failed,
            http_status: Some(404),
            error: Some("status 404"),
            due_at: 9000,
            now: 9000,
        };
        assert!(finish(&db, &last[0].id, "n1", &failed).await.unwrap());
        assert!(retry(&db, "user.online-8000", 9500).await.unwrap());
        assert!(!retry(&db, "user.online-1000", 9500).await.unwrap());
        assert_eq!(
            events(&db).await,
            vec![
                ("user.offline-4000".to_owned(), "delivered".to_owned()),
                ("user.online-1000".to_owned(), "delivered".to_owned()),
                ("user.online-8000".to_owned(), "pending".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn leases_and_purge() {
        let db = db().await;
        set_online(&db, true).await;
        record(&db, 1000).await;
        let claimed = claim(&db, "n1", 1000, 2000, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        // Leased: nobody else gets it until the lease ends, then another node does.
        assert!(claim(&db, "n2", 1500, 5000, 10).await.unwrap().is_empty());
        let taken = claim(&db, "n2", 2500, 5000, 10).await.unwrap();
        assert_eq!(taken[0].attempts, 2);
        // Released at shutdown: due again at once.
        assert_eq!(release(&db, "n2").await.unwrap(), 1);
        assert_eq!(claim(&db, "n1", 2600, 9000, 10).await.unwrap().len(), 1);
        let delivered = AttemptRecord {
            status: Status::Delivered,
            http_status: Some(200),
            error: None,
            due_at: 3000,
            now: 3000,
        };
        assert!(
            finish(&db, "user.online-1000", "n1", &delivered)
                .await
                .unwrap()
        );
        assert_eq!(purge(&db, 0, 10).await.unwrap(), 0);
        assert_eq!(purge(&db, 0, 0).await.unwrap(), 1);
        assert!(events(&db).await.is_empty());
    }
}
