//! Transactional publish (PostgreSQL): `signalbox_publish(...)` called inside the application's
//! own transaction, the per-node worker woken by LISTEN/NOTIFY, its sweep, claim take-over, and
//! the JSON variant's validation. Tests wait for events (or poll with a deadline), never sleep a
//! fixed time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::future::Future;
use std::time::Duration;

use common::{Backend, HubClient, TestApp, TestDb, test_config};
use serde_json::{Value, json};
use signalbox_server::notifications::inbox::NOTIFICATION;
use sqlx::postgres::PgPool;
use sqlx::{Connection, Row};

/// Longest wait for something the worker does: a sweep interval plus slack.
const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it holds, or panics after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    common::eventually_within(DEADLINE, what, check).await;
}

async fn pool(app: &TestApp) -> PgPool {
    PgPool::connect(&app.db.url).await.unwrap()
}

/// `signalbox_publish(recipient, message)` on `executor`; the request id.
async fn publish<'e>(executor: impl sqlx::PgExecutor<'e>, user: &str, message: &str) -> String {
    sqlx::query_scalar("SELECT signalbox_publish($1, $2)::text")
        .bind(user)
        .bind(message)
        .fetch_one(executor)
        .await
        .unwrap()
}

/// `signalbox_publish(body jsonb)` on `executor`.
async fn publish_json<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    body: &Value,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT signalbox_publish($1::jsonb)::text")
        .bind(body.to_string())
        .fetch_one(executor)
        .await
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn inbox_rows(pool: &PgPool, user: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT message FROM notifications WHERE recipient = $1 ORDER BY id")
        .bind(user)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn pending(pool: &PgPool) -> i64 {
    count(
        pool,
        "SELECT count(*) FROM publish_requests WHERE done_at IS NULL",
    )
    .await
}

/// Waits until every publish request is done.
async fn all_done(pool: &PgPool) {
    eventually("every publish request done", || async {
        pending(pool).await == 0
    })
    .await;
}

/// A connection of `user` on `app`, once presence has it (so that live delivery reaches it).
async fn online(app: &TestApp, user: &str, connections: usize) -> HubClient {
    let token = app.token(user).await;
    let client = app.connect(&token).await;
    app.wait_presence(user, &token, |v| {
        v["connections"].as_array().map(Vec::len) == Some(connections)
    })
    .await;
    client
}

fn message_of(args: &[Value]) -> String {
    args[0]["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_publishes_nothing() {
    let app = TestApp::start(Backend::Postgres).await;
    app.user("alice", &[]).await;
    let mut alice = online(&app, "alice", 1).await;
    let pool = pool(&app).await;
    sqlx::query("CREATE TABLE orders (id INT PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();

    // The application's transaction writes an order and publishes, then rolls back.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO orders (id) VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    publish(&mut *tx, "alice", "order 1 placed").await;
    tx.rollback().await.unwrap();

    // A committed one afterwards: it is the only notification that arrives.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO orders (id) VALUES (2)")
        .execute(&mut *tx)
        .await
        .unwrap();
    publish(&mut *tx, "alice", "order 2 placed").await;
    tx.commit().await.unwrap();
    let args = alice.expect(NOTIFICATION).await;
    assert_eq!(message_of(&args), "order 2 placed");
    assert_eq!(args[0]["from"], Value::Null);
    all_done(&pool).await;
    assert_eq!(inbox_rows(&pool, "alice").await, ["order 2 placed"]);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM publish_requests").await,
        1
    );
    assert!(
        alice
            .try_expect(NOTIFICATION, Duration::ZERO)
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_delivers_once_with_two_nodes() {
    let first = TestApp::start(Backend::Postgres).await;
    let second = TestApp::start_on(first.db.share(), test_config(&first.db)).await;
    first.user("alice", &[]).await;
    first.user("backend", &["permission=notify"]).await;
    // One connection of alice on each node: whichever node completes a request pushes it to
    // its own connection (no backplane here), so each notification arrives exactly once in all.
    let mut on_first = online(&first, "alice", 1).await;
    let mut on_second = online(&second, "alice", 2).await;
    let pool = pool(&first).await;

    const N: usize = 8;
    for i in 0..N {
        let mut tx = pool.begin().await.unwrap();
        publish(&mut *tx, "alice", &format!("n{i}")).await;
        tx.commit().await.unwrap();
    }
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while received.len() < N {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {received:?} arrived"
        );
        for client in [&mut on_first, &mut on_second] {
            if let Some(args) = client
                .try_expect(NOTIFICATION, Duration::from_millis(50))
                .await
            {
                received.push(message_of(&args));
            }
        }
    }
    received.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("n{i}")).collect();
    expected.sort();
    assert_eq!(received, expected);
    all_done(&pool).await;
    let mut stored = inbox_rows(&pool, "alice").await;
    stored.sort();
    assert_eq!(stored, expected);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM notifications WHERE delivered_at IS NULL"
        )
        .await,
        0
    );

    // Nothing else is on its way: a marker published on each node is the next to arrive there.
    let token = first.token("backend").await;
    for (app, client) in [(&first, &mut on_first), (&second, &mut on_second)] {
        let (status, body) = app
            .post(
                "/api/notifications",
                Some(&token),
                json!({"user": "alice", "message": "marker"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(message_of(&client.expect(NOTIFICATION).await), "marker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_claim_is_taken_over() {
    let app = TestApp::start(Backend::Postgres).await;
    app.user("alice", &[]).await;
    let mut alice = online(&app, "alice", 1).await;
    let pool = pool(&app).await;

    // Two requests claimed by nodes that never finish them (no NOTIFY: only a sweep finds them):
    // one claimed long ago (its node is dead), one just now (its node may be working on it).
    let mut tx = pool.begin().await.unwrap();
    let insert = "INSERT INTO publish_requests (body, recipients, claimed_by, claimed_at) \
                  VALUES ($1::jsonb, '[\"alice\"]', $2, now() - $3::interval) RETURNING id::text";
    let orphan: String = sqlx::query_scalar(insert)
        .bind(json!({"user": "alice", "message": "orphan"}).to_string())
        .bind("dead-node")
        .bind("1 hour")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let busy: String = sqlx::query_scalar(insert)
        .bind(json!({"user": "alice", "message": "busy"}).to_string())
        .bind("busy-node")
        .bind("0 seconds")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(message_of(&alice.expect(NOTIFICATION).await), "orphan");
    let row = sqlx::query(
        "SELECT claimed_by, done_at IS NOT NULL AS done FROM publish_requests WHERE id = $1::uuid",
    )
    .bind(&orphan)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        row.get::<String, _>("claimed_by"),
        app.state.config.node.as_str()
    );
    assert!(row.get::<bool, _>("done"));
    // The sweep that took the orphan over left the fresh claim alone.
    let busy_done: bool =
        sqlx::query_scalar("SELECT done_at IS NOT NULL FROM publish_requests WHERE id = $1::uuid")
            .bind(&busy)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!busy_done);
    assert_eq!(inbox_rows(&pool, "alice").await, ["orphan"]);

    // Once that claim is older than the timeout, its node is presumed dead too.
    sqlx::query(
        "UPDATE publish_requests SET claimed_at = now() - interval '1 hour' WHERE id = $1::uuid",
    )
    .bind(&busy)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(message_of(&alice.expect(NOTIFICATION).await), "busy");
    all_done(&pool).await;
    assert_eq!(inbox_rows(&pool, "alice").await, ["orphan", "busy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_stored_once_whoever_completes_it() {
    let app = TestApp::start(Backend::Postgres).await;
    app.user("alice", &[]).await;
    let pool = pool(&app).await;
    let db = &app.state.db;
    // Claimed just now by another node: this node's worker leaves it alone.
    let id: String = sqlx::query_scalar(
        "INSERT INTO publish_requests (body, recipients, claimed_by, claimed_at) \
         VALUES ('{\"user\":\"alice\",\"message\":\"m\"}', '[\"alice\"]', 'slow-node', now()) \
         RETURNING id::text",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let rows = |message: &str| {
        vec![signalbox_server::notifications::store::NotificationRow {
            id: uuid::Uuid::now_v7().to_string(),
            recipient: "alice".to_owned(),
            sender: None,
            message: message.to_owned(),
            created_at: 1,
            delivered_at: None,
            read_at: None,
        }]
    };
    // Not the claimant: nothing stored.
    assert_eq!(
        db.complete_publish_request(&id, "other-node", rows("other"))
            .await
            .unwrap(),
        None
    );
    // The claimant stores it once; a second completion (a duplicate wake-up, a slow node whose
    // claim was taken over and completed) stores nothing.
    let stored = db
        .complete_publish_request(&id, "slow-node", rows("first"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        db.complete_publish_request(&id, "slow-node", rows("second"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(inbox_rows(&pool, "alice").await, ["first"]);
    // A recipient deleted between publish and completion is skipped, the rest is stored.
    let id: String = sqlx::query_scalar(
        "INSERT INTO publish_requests (body, recipients, claimed_by, claimed_at) \
         VALUES ('{\"users\":[\"alice\",\"gone\"],\"message\":\"m\"}', '[\"alice\",\"gone\"]', \
                 'slow-node', now()) RETURNING id::text",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut both = rows("to both");
    both.push(signalbox_server::notifications::store::NotificationRow {
        recipient: "gone".to_owned(),
        id: uuid::Uuid::now_v7().to_string(),
        ..both[0].clone()
    });
    let stored = db
        .complete_publish_request(&id, "slow-node", both)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].recipient, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_notify_is_delivered_by_the_sweep() {
    let app = TestApp::start(Backend::Postgres).await;
    app.user("alice", &[]).await;
    let pool = pool(&app).await;

    // Published while no node runs: the NOTIFY reaches nobody.
    let db = app.stop().await;
    publish(&pool, "alice", "while down").await;
    assert_eq!(pending(&pool).await, 1);
    // The node finds it when it starts (before any NOTIFY).
    let app = TestApp::start_on(db.share(), test_config(&db)).await;
    all_done(&pool).await;
    let mut alice = online(&app, "alice", 1).await;
    assert_eq!(message_of(&alice.expect(NOTIFICATION).await), "while down");

    // A request whose NOTIFY was lost while the node runs (inserted without one): the periodic
    // sweep delivers it.
    sqlx::query(
        "INSERT INTO publish_requests (body, recipients) \
         VALUES ('{\"user\":\"alice\",\"message\":\"missed\"}', '[\"alice\"]')",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(message_of(&alice.expect(NOTIFICATION).await), "missed");
    all_done(&pool).await;
    assert_eq!(inbox_rows(&pool, "alice").await, ["while down", "missed"]);
    drop(app);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_variant_targets_and_validation() {
    let app = TestApp::start(Backend::Postgres).await;
    for user in ["alice", "bob", "carol"] {
        app.user(user, &[]).await;
    }
    for user in ["alice", "bob"] {
        app.state.db.add_group_member("team", user).await.unwrap();
    }
    let pool = pool(&app).await;

    let mut tx = pool.begin().await.unwrap();
    for body in [
        json!({"user": "carol", "message": "to carol"}),
        json!({"users": ["bob", "alice", "bob"], "message": "to users"}),
        json!({"group": "team", "message": "to team"}),
        json!({"everyone": true, "message": "to everyone"}),
        json!({"user": "alice", "group": null, "everyone": false, "message": "nulls are absent"}),
    ] {
        publish_json(&mut *tx, &body).await.unwrap();
    }
    tx.commit().await.unwrap();
    all_done(&pool).await;
    assert_eq!(
        inbox_rows(&pool, "alice").await,
        ["to users", "to team", "to everyone", "nulls are absent"]
    );
    assert_eq!(
        inbox_rows(&pool, "bob").await,
        ["to users", "to team", "to everyone"]
    );
    assert_eq!(
        inbox_rows(&pool, "carol").await,
        ["to carol", "to everyone"]
    );

    let too_long = "x".repeat(16 * 1024 + 1);
    let bad = [
        (json!({"message": "no target"}), "exactly one target"),
        (
            json!({"user": "alice", "group": "team", "message": "two"}),
            "exactly one target",
        ),
        (
            json!({"everyone": false, "message": "none"}),
            "exactly one target",
        ),
        (json!({"user": "alice"}), "\"message\" must be a string"),
        (
            json!({"user": "alice", "message": "m", "sender": "x"}),
            "unknown field \"sender\"",
        ),
        (
            json!({"user": 7, "message": "m"}),
            "\"user\" must be a string",
        ),
        (
            json!({"users": ["alice", 1], "message": "m"}),
            "\"users\" must be an array of strings",
        ),
        (
            json!({"users": ["alice", "nobody", "zed"], "message": "m"}),
            "unknown user(s): nobody, zed",
        ),
        (json!({"users": [], "message": "m"}), "no recipients"),
        (json!({"group": "empty", "message": "m"}), "has no members"),
        (json!({"user": "alice", "message": too_long}), "longer than"),
        (json!(["alice"]), "must be a JSON object"),
    ];
    for (body, expected) in bad {
        // A valid publish earlier in the same transaction goes down with it.
        let mut tx = pool.begin().await.unwrap();
        publish(&mut *tx, "alice", "rolled back with the error").await;
        let error = publish_json(&mut *tx, &body).await.unwrap_err();
        let database = error.as_database_error().expect("a database error");
        assert_eq!(database.code().as_deref(), Some("22023"), "{body}");
        assert!(
            database.message().contains(expected),
            "{body}: {}",
            database.message()
        );
        // The caller's transaction is aborted.
        let after = sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap_err();
        assert_eq!(
            after.as_database_error().and_then(|e| e.code()).as_deref(),
            Some("25P02")
        );
        tx.rollback().await.unwrap();
    }
    // The one-recipient variant validates too.
    let error = sqlx::query("SELECT signalbox_publish('nobody', 'm')")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("unknown user(s): nobody"),
        "{error}"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM publish_requests").await,
        5
    );
    assert_eq!(pending(&pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_role_needs_only_execute() {
    let app = TestApp::start(Backend::Postgres).await;
    app.user("alice", &[]).await;
    let pool = pool(&app).await;
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let granted = format!("signalbox_app_{unique}");
    let other = format!("signalbox_other_{unique}");
    let mut conn = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    for role in [&granted, &other] {
        sqlx::query(&format!("CREATE ROLE {role} NOLOGIN"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::query(&format!(
        "GRANT EXECUTE ON FUNCTION signalbox_publish(text, text), signalbox_publish(jsonb) \
         TO {granted}"
    ))
    .execute(&mut conn)
    .await
    .unwrap();

    let outcome = async {
        sqlx::query(&format!("SET ROLE {granted}"))
            .execute(&mut conn)
            .await
            .unwrap();
        publish(&mut conn, "alice", "from the application role").await;
        let tables = sqlx::query("SELECT count(*) FROM publish_requests")
            .execute(&mut conn)
            .await
            .unwrap_err();
        sqlx::query(&format!("SET ROLE {other}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let denied = publish_json(&mut conn, &json!({"user": "alice", "message": "m"}))
            .await
            .unwrap_err();
        sqlx::query("RESET ROLE").execute(&mut conn).await.unwrap();
        (tables, denied)
    }
    .await;
    for role in [&granted, &other] {
        sqlx::query(&format!("DROP OWNED BY {role}"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("DROP ROLE {role}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let (tables, denied) = outcome;
    for error in [tables, denied] {
        assert_eq!(
            error.as_database_error().and_then(|e| e.code()).as_deref(),
            Some("42501"),
            "{error}"
        );
    }
    all_done(&pool).await;
    assert_eq!(
        inbox_rows(&pool, "alice").await,
        ["from the application role"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_records_the_version_without_the_function() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::start_on(db.share(), test_config(&db)).await;
    let mut conn = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE version = 6")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(recorded, 1, "migration 6 is recorded on SQLite too");
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = 'publish_requests'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(tables, 0);
    conn.close().await.unwrap();
    drop(app);
    drop(db);
}
