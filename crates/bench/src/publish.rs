//! Publishing to everyone: the service (`signalbox serve` on SQLite or PostgreSQL) with N
//! accounts, all of them connected or all offline, is sent K notifications with
//! `everyone: true`, one after the other. Measured per run: the request duration (the service
//! stores the notification, then delivers it to this node's connections, before it answers),
//! inbox entries stored per second (published × accounts: what every account finds in its inbox,
//! whether the build stores a row per account or, as now, one row shared by all), live
//! deliveries per second, deliveries lost and duplicated. With a baseline binary (an earlier
//! build of `signalbox`), every run is repeated on it, side by side.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::coord::{Ramp, Setup, Workers};
use crate::database::{FreshDatabase, create_accounts};
use crate::hist::{Histogram, Summary};
use crate::service::{NodeOptions, ServiceNode};
use crate::service_api::{ADMIN_USER, ServiceApi};
use crate::sys::now_us;
use crate::wire::{Kind, Proto, bench_message, user_of};

/// The database the service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PublishTarget {
    /// SQLite in the service's data directory.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// Whether the recipients are connected while the notifications are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Recipients {
    /// Every account has one connection: each notification is stored and delivered live.
    Online,
    /// Nobody is connected: each notification is only stored (replayed on connect).
    Offline,
}

/// Publish settings beyond [`Setup`].
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The `signalbox` binary measured.
    pub server_bin: PathBuf,
    /// An earlier `signalbox` binary run side by side as the baseline, if any.
    pub baseline_bin: Option<PathBuf>,
    /// PostgreSQL URL the bench creates (and drops) its fresh databases with.
    pub database_url: String,
    /// Notifications published per run.
    pub publishes: usize,
    /// Longest wait for deliveries after the last publish once nothing more arrives.
    pub drain_timeout: Duration,
    /// Hub protocol.
    pub proto: Proto,
}

/// One run: one binary, one database, N accounts online or offline.
#[derive(Debug, Clone, Serialize)]
pub struct PublishRun {
    /// `current` or `baseline`.
    pub binary: String,
    /// The database.
    pub target: PublishTarget,
    /// Whether the recipients were connected.
    pub recipients: Recipients,
    /// Accounts (each notification has a row for each, the publishing account included).
    pub accounts: usize,
    /// Connections up (0 when offline).
    pub connected: u64,
    /// The ramp, when online.
    pub ramp: Option<Ramp>,
    /// Notifications answered 201.
    pub published: u64,
    /// Notifications that failed.
    pub publish_errors: u64,
    /// The first failure.
    pub publish_error: Option<String>,
    /// Duration of each `POST /api/notifications` with `everyone: true`.
    pub request: Summary,
    /// The requests' durations summed, seconds.
    pub request_secs: f64,
    /// Inbox entries stored: published × accounts (rows, or entries of one shared row).
    pub rows_stored: u64,
    /// Entries stored per second of request time.
    pub rows_per_sec: f64,
    /// published × connected.
    pub expected: u64,
    /// Distinct (connection, notification) deliveries seen.
    pub delivered: u64,
    /// expected − delivered after the drain.
    pub lost: u64,
    /// Deliveries a connection saw again.
    pub duplicates: u64,
    /// First request sent to the last delivery, seconds.
    pub window_secs: f64,
    /// Deliveries per second over that window.
    pub deliveries_per_sec: f64,
    /// Publish (before the request) to receive.
    pub latency: Summary,
    /// Connections closed by the server.
    pub closed: u64,
}

/// Runs every (database, recipients) pair on the measured binary and, if given, the baseline.
pub async fn publish(
    setup: &Setup,
    options: &PublishOptions,
    targets: &[PublishTarget],
    modes: &[Recipients],
    n: usize,
) -> anyhow::Result<Vec<PublishRun>> {
    let mut bins = vec![("current", options.server_bin.clone())];
    if let Some(baseline) = &options.baseline_bin {
        bins.push(("baseline", baseline.clone()));
    }
    let mut runs = Vec::new();
    for &target in targets {
        for &mode in modes {
            for (binary, bin) in &bins {
                runs.push(run_one(setup, options, binary, bin, target, mode, n).await?);
            }
        }
    }
    Ok(runs)
}

/// One run, with a fresh database dropped afterwards (also on Ctrl-C).
async fn run_one(
    setup: &Setup,
    options: &PublishOptions,
    binary: &str,
    bin: &std::path::Path,
    target: PublishTarget,
    mode: Recipients,
    n: usize,
) -> anyhow::Result<PublishRun> {
    let db = match target {
        PublishTarget::Postgres => Some(FreshDatabase::create(&options.database_url).await?),
        PublishTarget::Sqlite => None,
    };
    let url = db.as_ref().map(|d| d.url.clone());
    let result = tokio::select! {
        r = measure(setup, options, binary, bin, target, mode, url, n) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Some(db) = db {
        db.drop_database().await?;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    setup: &Setup,
    options: &PublishOptions,
    binary: &str,
    bin: &std::path::Path,
    target: PublishTarget,
    mode: Recipients,
    database: Option<String>,
    n: usize,
) -> anyhow::Result<PublishRun> {
    let label = format!("publish {binary} {target:?} {mode:?}").to_lowercase();
    let node = ServiceNode::start(&NodeOptions {
        bin: bin.to_path_buf(),
        secret: setup.secret.clone(),
        database,
        backplane: None,
        listen: "127.0.0.1:0".parse()?,
        node_id: format!("bench-publish-{binary}"),
    })
    .await?;
    let mut names: Vec<String> = (0..n).map(user_of).collect();
    names.push(ADMIN_USER.to_owned());
    create_accounts(&node.database, &names).await?;
    let api = ServiceApi::new(node.http, &setup.secret)?;

    let mut workers = None;
    let mut ramp = None;
    let mut connected = 0;
    if mode == Recipients::Online {
        let mut w = Workers::new();
        w.add(setup, Kind::Service, options.proto, &[node.http], 0, n, 0)
            .await?;
        let r = w.ramp_from(&label, n, &[node.pid], 0).await?;
        connected = r.connected;
        wait_online(&api, connected).await;
        w.command("phase 1").await?;
        // Let every worker take the phase before the first notification.
        tokio::time::sleep(Duration::from_millis(200)).await;
        ramp = Some(r);
        workers = Some(w);
    }

    let mut request = Histogram::default();
    let mut request_secs = 0.0;
    let (mut published, mut errors, mut first_error) = (0u64, 0u64, None);
    let start_us = now_us();
    for seq in 0..options.publishes {
        let t = now_us();
        let started = Instant::now();
        let result = api
            .publish(
                json!({ "everyone": true }),
                &bench_message(t, 1, seq as u64),
            )
            .await;
        request_secs += started.elapsed().as_secs_f64();
        request.record(now_us().saturating_sub(t));
        match result {
            Ok(()) => published += 1,
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let expected = published * connected;
    let rows_stored = published * names.len() as u64;
    let (mut delivered, mut duplicates, mut closed, mut last_us) = (0, 0, 0, start_us);
    let mut latency = Histogram::default();
    if let Some(mut w) = workers {
        // Drain: until everything arrived, or nothing more came for a while.
        let mut last = (u64::MAX, Instant::now());
        let report = loop {
            let report = w.report().await?;
            if report.received >= expected
                || (report.received == last.0 && last.1.elapsed() > options.drain_timeout)
            {
                break report;
            }
            if report.received != last.0 {
                last = (report.received, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        delivered = report.received;
        duplicates = report.duplicates;
        closed = report.closed;
        last_us = report.last_us.max(start_us);
        latency = report.latency;
        w.quit().await;
    }
    node.stop().await;
    let window_secs = last_us.saturating_sub(start_us) as f64 / 1e6;
    let run = PublishRun {
        binary: binary.to_owned(),
        target,
        recipients: mode,
        accounts: names.len(),
        connected,
        ramp,
        published,
        publish_errors: errors,
        publish_error: first_error,
        request: request.summary(),
        request_secs,
        rows_stored,
        rows_per_sec: rows_stored as f64 / request_secs.max(1e-6),
        expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        duplicates,
        window_secs,
        deliveries_per_sec: delivered as f64 / window_secs.max(1e-6),
        latency: latency.summary(),
        closed,
    };
    print_run(&run);
    Ok(run)
}

/// Polls presence until `goal` users are online (or nothing moved for 30 s).
async fn wait_online(api: &ServiceApi, goal: u64) {
    let mut best = 0;
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_secs(30) {
        if let Ok(online) = api.online().await {
            if online.users >= goal {
                return;
            }
            if online.users > best {
                best = online.users;
                last_change = Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("[publish] only {best} of {goal} users online; publishing anyway");
}

fn print_run(r: &PublishRun) {
    eprintln!(
        "[publish {} {:?} {:?}] {} accounts, {} connected: {} notifications ({} failed), request p50 {:.0} ms max {:.0} ms, {:.0} entries/s; delivered {}/{} ({:.0}/s), lost {}, duplicates {}",
        r.binary,
        r.target,
        r.recipients,
        r.accounts,
        r.connected,
        r.published,
        r.publish_errors,
        r.request.p50_ms,
        r.request.max_ms,
        r.rows_per_sec,
        r.delivered,
        r.expected,
        r.deliveries_per_sec,
        r.lost,
        r.duplicates
    );
}

fn ratio(a: f64, b: f64) -> serde_json::Value {
    if b > 0.0 {
        json!((a / b * 1000.0).round() / 1000.0)
    } else {
        serde_json::Value::Null
    }
}

/// Each current run against the baseline run of the same database and recipients: request
/// duration (p50), rows stored/s and deliveries/s.
pub fn publish_ratios(runs: &[PublishRun]) -> serde_json::Value {
    runs.iter()
        .filter(|r| r.binary == "current")
        .filter_map(|r| {
            let base = runs.iter().find(|b| {
                b.binary == "baseline" && b.target == r.target && b.recipients == r.recipients
            })?;
            Some(json!({
                "target": r.target,
                "recipients": r.recipients,
                "baseline": "baseline",
                "request_p50": ratio(r.request.p50_ms, base.request.p50_ms),
                "rows_per_sec": ratio(r.rows_per_sec, base.rows_per_sec),
                "deliveries_per_sec": ratio(r.deliveries_per_sec, base.deliveries_per_sec),
            }))
        })
        .collect()
}
