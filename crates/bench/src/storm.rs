//! The connection storm: N authenticated clients connect as fast as the generator can, to the
//! service (`signalbox serve` on SQLite or PostgreSQL) and to the library (`bench-target`) as
//! the reference. Measured from the client side (handshakes/s) and from outside: the time until
//! the service reports every connection fully set up (presence recorded and missed
//! notifications replayed: the gauge `signalbox_connections_ready` of `/metrics`), the time until every user with unread notifications
//! got its replay, the server's CPU seconds during the ramp and until it is idle again, and its
//! memory per connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::coord::{Ramp, Server, Setup, Workers};
use crate::database::{FreshDatabase, create_accounts};
use crate::plot::{Series, line_chart};
use crate::service::{NodeOptions, ServiceNode};
use crate::service_api::{ADMIN_USER, ServiceApi};
use crate::sys::{cpu_seconds, now_us, rss_kib};
use crate::wire::{Kind, Proto, REPLAY_MESSAGE, user_of};

/// What the storm runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StormTarget {
    /// `bench-target`: the library with an authenticated hub (the reference).
    Library,
    /// `signalbox serve` with SQLite in its data directory.
    Sqlite,
    /// `signalbox serve` with a fresh PostgreSQL database.
    Postgres,
}

/// Storm settings beyond [`Setup`].
#[derive(Debug, Clone)]
pub struct StormOptions {
    /// The `signalbox` binary.
    pub server_bin: PathBuf,
    /// PostgreSQL URL the bench creates (and drops) its fresh database with.
    pub database_url: String,
    /// Users given one unread notification before the storm (replayed when they connect).
    pub replay_users: usize,
    /// How long to wait for the server to become idle after the ramp.
    pub settle_timeout: Duration,
    /// Hub protocol.
    pub proto: Proto,
}

/// One storm.
#[derive(Debug, Clone, Serialize)]
pub struct StormResult {
    /// What was measured.
    pub target: StormTarget,
    /// Connections asked for.
    pub connections: usize,
    /// The ramp, from the client side (`connects_per_sec` = handshakes/s).
    pub ramp: Ramp,
    /// Storm start to every connection fully set up in the service (presence row written,
    /// replay done; the library: to the last handshake). `None`: never reached.
    pub set_up_secs: Option<f64>,
    /// Connections fully set up per second (connected / `set_up_secs`).
    pub set_up_per_sec: Option<f64>,
    /// Highest count of connections set up seen.
    pub online_reached: u64,
    /// Users online in the service's presence (`GET /api/admin/stats`) once every connection
    /// was set up: equal to the connections when the presence edges are exact.
    pub online_users_after: Option<u64>,
    /// (seconds since the storm started, connections set up) as polled.
    pub online_samples: Vec<(f64, u64)>,
    /// Users that had an unread notification before the storm.
    pub replay_users: usize,
    /// Of those, how many received it.
    pub replays_received: u64,
    /// Storm start to the last replay received.
    pub replay_complete_secs: Option<f64>,
    /// Server CPU seconds from the storm start until set up.
    pub cpu_ramp_seconds: f64,
    /// Server CPU seconds from set up until idle.
    pub cpu_settle_seconds: f64,
    /// Set up until idle (CPU below 5 % of a core over 1 s), seconds.
    pub settle_secs: f64,
    /// Server RSS before the storm, KiB.
    pub rss_before_kib: u64,
    /// Server RSS once idle, KiB.
    pub rss_after_kib: u64,
    /// (after − before) / connected, bytes.
    pub rss_per_connection_bytes: f64,
    /// Connections closed by the server.
    pub closed: u64,
}

/// Polls the connections set up until they reach `target` (or, once `stop` is set, nothing moved for 20 s
/// and 3 answers);
/// returns (samples, seconds when reached, CPU seconds of `pid` then).
async fn watch_online(
    api: ServiceApi,
    started: Instant,
    target: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    pid: u32,
) -> (Vec<(f64, u64)>, Option<(f64, f64)>) {
    let mut samples = Vec::new();
    let mut last = (0, Instant::now());
    // Answers since the count last moved (a request can take seconds during a storm).
    let mut unchanged = 0;
    loop {
        if let Ok(ready) = api.ready().await {
            unchanged += 1;
            let t = started.elapsed().as_secs_f64();
            samples.push((t, ready));
            let goal = target.load(Ordering::Relaxed);
            if ready >= goal && goal > 0 {
                return (samples, Some((t, cpu_seconds(pid).unwrap_or(0.0))));
            }
            if ready != last.0 {
                last = (ready, Instant::now());
                unchanged = 0;
            }
        }
        if (stop.load(Ordering::Relaxed)
            && unchanged >= 3
            && last.1.elapsed() > Duration::from_secs(20))
            || started.elapsed() > Duration::from_secs(600)
        {
            return (samples, None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the server's CPU use over one second is below 5 % of a core (at most
/// `timeout`); returns the seconds waited.
async fn settle(pid: u32, timeout: Duration) -> f64 {
    let started = Instant::now();
    let mut before = cpu_seconds(pid).unwrap_or(0.0);
    while started.elapsed() < timeout {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu_seconds(pid).unwrap_or(0.0);
        if now - before < 0.05 {
            break;
        }
        before = now;
    }
    started.elapsed().as_secs_f64()
}

/// Runs one storm of `n` connections against `target`.
pub async fn storm(
    setup: &Setup,
    options: &StormOptions,
    target: StormTarget,
    n: usize,
) -> anyhow::Result<StormResult> {
    let db = match target {
        StormTarget::Postgres => Some(FreshDatabase::create(&options.database_url).await?),
        StormTarget::Library | StormTarget::Sqlite => None,
    };
    let run = async {
        match (target, &db) {
            (StormTarget::Library, _) => storm_library(setup, options, n).await,
            (_, db) => {
                let url = db.as_ref().map(|d| d.url.clone());
                storm_service(setup, options, target, url, n).await
            }
        }
    };
    // On Ctrl-C the servers and workers are dropped (killed), then the database.
    let result = tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Some(db) = db {
        db.drop_database().await?;
    }
    result
}

async fn storm_library(
    setup: &Setup,
    options: &StormOptions,
    n: usize,
) -> anyhow::Result<StormResult> {
    let server = Server::start(setup, Kind::Signalbox).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(server.pid).unwrap_or(0);
    let cpu_before = cpu_seconds(server.pid).unwrap_or(0.0);
    let started = Instant::now();
    let mut workers = Workers::new();
    workers
        .add(setup, Kind::Signalbox, options.proto, &[server.ws], 0, n, 0)
        .await?;
    let ramp = workers
        .ramp_from("storm library", n, &[server.pid], 0)
        .await?;
    let set_up = started.elapsed().as_secs_f64();
    let cpu_set_up = cpu_seconds(server.pid).unwrap_or(0.0);
    let settle_secs = settle(server.pid, options.settle_timeout).await;
    let cpu_idle = cpu_seconds(server.pid).unwrap_or(0.0);
    let rss_after = rss_kib(server.pid).unwrap_or(0);
    let report = workers.report().await?;
    workers.quit().await;
    server.stop().await;
    let result = StormResult {
        target: StormTarget::Library,
        connections: n,
        set_up_secs: Some(set_up),
        set_up_per_sec: Some(ramp.connected as f64 / set_up.max(1e-6)),
        online_reached: ramp.connected,
        online_users_after: None,
        online_samples: Vec::new(),
        replay_users: 0,
        replays_received: 0,
        replay_complete_secs: None,
        cpu_ramp_seconds: cpu_set_up - cpu_before,
        cpu_settle_seconds: cpu_idle - cpu_set_up,
        settle_secs,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_per_connection_bytes: (rss_after.saturating_sub(rss_before) * 1024) as f64
            / ramp.connected.max(1) as f64,
        closed: report.closed,
        ramp,
    };
    print_result(&result);
    Ok(result)
}

async fn storm_service(
    setup: &Setup,
    options: &StormOptions,
    target: StormTarget,
    database: Option<String>,
    n: usize,
) -> anyhow::Result<StormResult> {
    let label = format!("storm {target:?}").to_lowercase();
    let node = ServiceNode::start(&NodeOptions {
        bin: options.server_bin.clone(),
        secret: setup.secret.clone(),
        database,
        backplane: None,
        listen: "127.0.0.1:0".parse()?,
        node_id: format!("bench-{}", format!("{target:?}").to_lowercase()),
    })
    .await?;
    // Accounts, and the notifications to replay: before anything is timed.
    let mut names: Vec<String> = (0..n).map(user_of).collect();
    names.push(ADMIN_USER.to_owned());
    let accounts = Instant::now();
    create_accounts(&node.database, &names).await?;
    let api = ServiceApi::new(node.http, &setup.secret)?;
    let replay_users = options.replay_users.min(n);
    if let Some(stride) = n.checked_div(replay_users) {
        let users: Vec<String> = (0..replay_users).map(|i| user_of(i * stride)).collect();
        for chunk in users.chunks(500) {
            api.publish(json!({ "users": chunk }), REPLAY_MESSAGE)
                .await?;
        }
    }
    eprintln!(
        "[{label}] {} accounts and {replay_users} unread notifications in {:.1} s",
        names.len(),
        accounts.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(node.pid).unwrap_or(0);
    let cpu_before = cpu_seconds(node.pid).unwrap_or(0.0);
    let started = Instant::now();
    let start_us = now_us();
    let goal = Arc::new(AtomicU64::new(n as u64));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_online(
        api.clone(),
        started,
        goal.clone(),
        stop.clone(),
        node.pid,
    ));
    let mut workers = Workers::new();
    workers
        .add(setup, Kind::Service, options.proto, &[node.http], 0, n, 0)
        .await?;
    let ramp = workers.ramp_from(&label, n, &[node.pid], 0).await?;
    goal.store(ramp.connected, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let (online_samples, reached) = watcher.await?;
    let (set_up_secs, cpu_set_up) = match reached {
        Some((t, cpu)) => (Some(t), cpu),
        None => (None, cpu_seconds(node.pid).unwrap_or(0.0)),
    };
    let online_reached = online_samples.iter().map(|s| s.1).max().unwrap_or(0);
    let online_users_after = api.online().await.ok().map(|o| o.users);
    // Replays: until every user with an unread notification got it, or nothing came for 10 s
    // (at most 2 minutes).
    let replay_wait = Instant::now();
    let mut last = (u64::MAX, Instant::now());
    let report = loop {
        let report = workers.report().await?;
        if report.replays >= replay_users as u64
            || replay_wait.elapsed() > Duration::from_secs(120)
            || (report.replays == last.0 && last.1.elapsed() > Duration::from_secs(10))
        {
            break report;
        }
        if report.replays != last.0 {
            last = (report.replays, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let replay_complete_secs = (replay_users > 0 && report.replays >= replay_users as u64)
        .then(|| report.replay_last_us.saturating_sub(start_us) as f64 / 1e6);
    let settle_secs = settle(node.pid, options.settle_timeout).await;
    let cpu_idle = cpu_seconds(node.pid).unwrap_or(0.0);
    let rss_after = rss_kib(node.pid).unwrap_or(0);
    let closed = workers.report().await?.closed;
    workers.quit().await;
    node.stop().await;
    let result = StormResult {
        target,
        connections: n,
        set_up_per_sec: set_up_secs.map(|t| ramp.connected as f64 / t.max(1e-6)),
        set_up_secs,
        online_reached,
        online_users_after,
        online_samples,
        replay_users,
        replays_received: report.replays,
        replay_complete_secs,
        cpu_ramp_seconds: cpu_set_up - cpu_before,
        cpu_settle_seconds: cpu_idle - cpu_set_up,
        settle_secs,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_per_connection_bytes: (rss_after.saturating_sub(rss_before) * 1024) as f64
            / ramp.connected.max(1) as f64,
        closed,
        ramp,
    };
    print_result(&result);
    Ok(result)
}

fn print_result(r: &StormResult) {
    let opt = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |v| format!("{v:.2} s"));
    eprintln!(
        "[storm {}] {} connected ({} failed) at {:.0} handshakes/s; all set up after {} ({:.0}/s), {} users online; {}/{} replays, last after {}; CPU {:.1} s ramp + {:.1} s settle ({:.1} s); {:.0} B/connection",
        format!("{:?}", r.target).to_lowercase(),
        r.ramp.connected,
        r.ramp.failed,
        r.ramp.connects_per_sec,
        opt(r.set_up_secs),
        r.set_up_per_sec.unwrap_or(0.0),
        r.online_users_after
            .map_or_else(|| "—".to_owned(), |n| n.to_string()),
        r.replays_received,
        r.replay_users,
        opt(r.replay_complete_secs),
        r.cpu_ramp_seconds,
        r.cpu_settle_seconds,
        r.settle_secs,
        r.rss_per_connection_bytes
    );
}

fn ratio(a: Option<f64>, b: Option<f64>) -> serde_json::Value {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => json!((a / b * 1000.0).round() / 1000.0),
        _ => serde_json::Value::Null,
    }
}

/// Each service target against the library: handshakes/s, set-up/s, CPU seconds per
/// connection (ramp and settle together) and memory per connection.
pub fn storm_ratios(results: &[StormResult]) -> serde_json::Value {
    let Some(library) = results.iter().find(|r| r.target == StormTarget::Library) else {
        return json!([]);
    };
    let cpu_per = |r: &StormResult| {
        Some((r.cpu_ramp_seconds + r.cpu_settle_seconds) / r.ramp.connected.max(1) as f64)
    };
    results
        .iter()
        .filter(|r| r.target != StormTarget::Library)
        .map(|r| {
            json!({
                "target": r.target,
                "baseline": "library",
                "handshakes_per_sec": ratio(Some(r.ramp.connects_per_sec), Some(library.ramp.connects_per_sec)),
                "set_up_per_sec": ratio(r.set_up_per_sec, library.set_up_per_sec),
                "handshake_p99": ratio(Some(r.ramp.handshake.p99_ms), Some(library.ramp.handshake.p99_ms)),
                "cpu_seconds_per_connection": ratio(cpu_per(r), cpu_per(library)),
                "rss_per_connection": ratio(Some(r.rss_per_connection_bytes), Some(library.rss_per_connection_bytes)),
            })
        })
        .collect()
}

/// `bench-storm-online.svg` in `dir`: connections fully set up (as the service reports them)
/// against time since the storm started, per service target.
pub fn storm_plots(dir: &std::path::Path, results: &[StormResult]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let series: Vec<Series> = results
        .iter()
        .filter(|r| !r.online_samples.is_empty())
        .map(|r| {
            (
                format!("service {:?}", r.target).to_lowercase(),
                r.online_samples
                    .iter()
                    .map(|&(t, n)| (t, n as f64))
                    .collect(),
            )
        })
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    line_chart(
        &dir.join("bench-storm-online.svg"),
        "Connection storm: connections fully set up in the service",
        "seconds since the storm started",
        "connections set up",
        &series,
    )
}
