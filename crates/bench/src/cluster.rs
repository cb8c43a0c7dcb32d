//! The cluster scenario: M service nodes (`signalbox serve`) on one backplane and one fresh
//! PostgreSQL database; the connection count is raised in steps, and at each step everyone is
//! sent a notification (`POST /api/notifications` with `everyone: true`) at a fixed rate, with
//! losses, duplicates, delivery latency and each node's memory and CPU measured. Nodes are
//! stopped and the database dropped at the end, after an error and on Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde::Serialize;
use serde_json::json;

use crate::coord::{MAX_PER_WORKER, Ramp, Setup, Workers};
use crate::database::{FreshDatabase, create_accounts};
use crate::hist::{Histogram, Summary};
use crate::plot::{Series, line_chart};
use crate::service::{Backplane, NodeOptions, ServiceNode};
use crate::service_api::{ADMIN_USER, ServiceApi};
use crate::sys::{cpu_seconds, now_us, rss_kib};
use crate::wire::{Kind, Proto, bench_message, user_of};

/// Cluster settings beyond [`Setup`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The `signalbox` binary.
    pub server_bin: PathBuf,
    /// PostgreSQL URL the bench creates (and drops) its fresh database with.
    pub database_url: String,
    /// Backplane URL (`nats://…` or `redis://…`).
    pub backplane: String,
    /// Nodes.
    pub nodes: usize,
    /// Node `i` listens on `base_port + i`.
    pub base_port: u16,
    /// Total connections at each step, ascending.
    pub steps: Vec<usize>,
    /// Broadcasts per second.
    pub rate: f64,
    /// Seconds of broadcasting per step.
    pub secs: f64,
    /// Longest wait for deliveries after the last broadcast of a step.
    pub drain_timeout: Duration,
    /// Hub protocol.
    pub proto: Proto,
}

/// One node's resources at a step.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSample {
    /// Node id.
    pub node: String,
    /// RSS after the step, KiB.
    pub rss_kib: u64,
    /// CPU use from the first broadcast to the end of the drain (1.0 = one core).
    pub cpu: f64,
    /// CPU seconds during the ramp of this step.
    pub ramp_cpu_seconds: f64,
}

/// One step.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStep {
    /// Connections asked for in total.
    pub connections: usize,
    /// Connections up in total.
    pub connected: u64,
    /// This step's ramp.
    pub ramp: Ramp,
    /// Ramp start to every connected user online in presence (all nodes); `None`: never.
    pub online_secs: Option<f64>,
    /// Highest online count seen.
    pub online_reached: u64,
    /// Broadcasts answered 2xx.
    pub published: u64,
    /// Broadcasts that failed.
    pub publish_errors: u64,
    /// The first failure.
    pub publish_error: Option<String>,
    /// Duration of `POST /api/notifications` (the service stores a row per account first).
    pub publish_request: Summary,
    /// published × connected.
    pub expected: u64,
    /// Distinct (connection, broadcast) deliveries seen.
    pub delivered: u64,
    /// expected − delivered after the drain.
    pub lost: u64,
    /// Deliveries a connection saw again.
    pub duplicates: u64,
    /// First broadcast to the last delivery, seconds.
    pub window_secs: f64,
    /// Publish (before the request) to receive.
    pub latency: Summary,
    /// Per node.
    pub nodes: Vec<NodeSample>,
    /// Connections closed so far.
    pub closed: u64,
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterResult {
    /// Nodes.
    pub nodes: usize,
    /// Backplane URL.
    pub backplane: String,
    /// Broadcasts per second.
    pub rate: f64,
    /// Seconds of broadcasting per step.
    pub secs: f64,
    /// Steps done (all of them unless `error` says why not).
    pub steps: Vec<ClusterStep>,
    /// Why the run stopped early.
    pub error: Option<String>,
}

/// Runs the cluster scenario. Steps done before an error (or Ctrl-C) are kept in the result.
pub async fn cluster(setup: &Setup, options: &ClusterOptions) -> anyhow::Result<ClusterResult> {
    let Some(&largest) = options.steps.iter().max() else {
        bail!("no steps");
    };
    if options.nodes == 0 || largest.div_ceil(options.nodes) > MAX_PER_WORKER {
        bail!(
            "{largest} connections over {} nodes is more than {MAX_PER_WORKER} per node",
            options.nodes
        );
    }
    let db = FreshDatabase::create(&options.database_url).await?;
    let mut steps = Vec::new();
    let outcome = tokio::select! {
        r = run(setup, options, &db.url, &mut steps) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    // Nodes and workers were dropped with the future (killed); now the database.
    if let Err(e) = db.drop_database().await {
        eprintln!("{e:#}");
    }
    if let Err(e) = &outcome {
        eprintln!("[cluster] stopped: {e:#}");
    }
    Ok(ClusterResult {
        nodes: options.nodes,
        backplane: options.backplane.clone(),
        rate: options.rate,
        secs: options.secs,
        steps,
        error: outcome.err().map(|e| format!("{e:#}")),
    })
}

async fn start_nodes(
    setup: &Setup,
    options: &ClusterOptions,
    database: &str,
) -> anyhow::Result<Vec<ServiceNode>> {
    let backplane = Backplane {
        url: options.backplane.clone(),
        connection_token_secret: format!("{}-connection-tokens", setup.secret),
        channel_prefix: format!("bench{}", std::process::id()),
    };
    let mut nodes = Vec::new();
    // The first node migrates the database; the others start once it is ready.
    for i in 0..options.nodes {
        let port = options
            .base_port
            .checked_add(i as u16)
            .ok_or_else(|| anyhow!("port out of range"))?;
        let node = ServiceNode::start(&NodeOptions {
            bin: options.server_bin.clone(),
            secret: setup.secret.clone(),
            database: Some(database.to_owned()),
            backplane: Some(backplane.clone()),
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            node_id: format!("bench-node-{i}"),
        })
        .await?;
        eprintln!("[cluster] {} ready on {}", node.node_id, node.http);
        nodes.push(node);
    }
    Ok(nodes)
}

/// Polls presence until `goal` users are online (or nothing moved for 30 s).
async fn wait_online(api: &ServiceApi, goal: u64, started: Instant) -> (Option<f64>, u64) {
    let mut best = 0;
    let mut last_change = Instant::now();
    loop {
        if let Ok(online) = api.online().await {
            if online.users > best {
                best = online.users;
                last_change = Instant::now();
            }
            if online.users >= goal {
                return (Some(started.elapsed().as_secs_f64()), best);
            }
        }
        if last_change.elapsed() > Duration::from_secs(30) {
            return (None, best);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run(
    setup: &Setup,
    options: &ClusterOptions,
    database: &str,
    steps: &mut Vec<ClusterStep>,
) -> anyhow::Result<()> {
    let nodes = start_nodes(setup, options, database).await?;
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.http).collect();
    let pids: Vec<u32> = nodes.iter().map(|n| n.pid).collect();
    create_accounts(database, &[ADMIN_USER.to_owned()]).await?;
    let api = ServiceApi::new(addrs[0], &setup.secret)?;
    let mut workers = Workers::new();
    let mut accounts = 0;
    let mut connected = 0u64;
    for (k, &total) in options.steps.iter().enumerate() {
        let phase = k as u64 + 1;
        let label = format!("cluster {total}");
        if total <= accounts {
            bail!("steps must ascend ({total} after {accounts})");
        }
        let names: Vec<String> = (accounts..total).map(user_of).collect();
        create_accounts(database, &names).await?;
        let cpu_before_ramp: Vec<f64> = pids
            .iter()
            .map(|&p| cpu_seconds(p).unwrap_or(0.0))
            .collect();
        let started = Instant::now();
        let from = workers.len();
        workers
            .add(
                setup,
                Kind::Service,
                options.proto,
                &addrs,
                accounts,
                total - accounts,
                0,
            )
            .await?;
        let ramp = workers
            .ramp_from(&label, total - accounts, &pids, from)
            .await?;
        accounts = total;
        connected += ramp.connected;
        let (online_secs, online_reached) = wait_online(&api, connected, started).await;
        eprintln!(
            "[{label}] {connected} connected ({} failed this step) at {:.0}/s; all online after {}",
            ramp.failed,
            ramp.connects_per_sec,
            online_secs.map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s"))
        );
        let cpu_after_ramp: Vec<f64> = pids
            .iter()
            .map(|&p| cpu_seconds(p).unwrap_or(0.0))
            .collect();
        workers.command(&format!("phase {phase}")).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let broadcast = broadcast(options, &api, &addrs, phase).await?;
        let expected = broadcast.ok * connected;
        // Drain: until everything arrived, or nothing more came for 30 s.
        let drain_start = Instant::now();
        let mut last = (u64::MAX, Instant::now());
        let report = loop {
            let report = workers.report().await?;
            if report.received >= expected
                || drain_start.elapsed() > options.drain_timeout
                || (report.received == last.0 && last.1.elapsed() > Duration::from_secs(30))
            {
                break report;
            }
            if report.received != last.0 {
                last = (report.received, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let window = report.last_us.saturating_sub(broadcast.start_us) as f64 / 1e6;
        let busy = broadcast.started.elapsed().as_secs_f64();
        let node_samples = nodes
            .iter()
            .zip(cpu_before_ramp.iter().zip(&cpu_after_ramp))
            .map(|(node, (&before, &after))| NodeSample {
                node: node.node_id.clone(),
                rss_kib: rss_kib(node.pid).unwrap_or(0),
                cpu: (cpu_seconds(node.pid).unwrap_or(0.0) - after) / busy.max(1e-3),
                ramp_cpu_seconds: after - before,
            })
            .collect();
        let step = ClusterStep {
            connections: total,
            connected,
            ramp,
            online_secs,
            online_reached,
            published: broadcast.ok,
            publish_errors: broadcast.errors,
            publish_error: broadcast.first_error,
            publish_request: broadcast.request.summary(),
            expected,
            delivered: report.received,
            lost: expected.saturating_sub(report.received),
            duplicates: report.duplicates,
            window_secs: window,
            latency: report.latency.summary(),
            nodes: node_samples,
            closed: report.closed,
        };
        print_step(&step);
        steps.push(step);
    }
    workers.quit().await;
    for node in nodes {
        node.stop().await;
    }
    Ok(())
}

/// What one step's broadcasting did.
struct Broadcast {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    request: Histogram,
    start_us: u64,
    started: Instant,
}

/// Sends `rate × secs` broadcasts, one every `1/rate` s, round robin over the nodes, and waits
/// for their answers.
async fn broadcast(
    options: &ClusterOptions,
    api: &ServiceApi,
    addrs: &[SocketAddr],
    phase: u64,
) -> anyhow::Result<Broadcast> {
    let total = (options.rate * options.secs).round().max(1.0) as u64;
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let request = Arc::new(Mutex::new(Histogram::default()));
    let start = tokio::time::Instant::now();
    let started = Instant::now();
    let start_us = now_us();
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(seq as f64 / options.rate)).await;
        let api = api.at(addrs[seq as usize % addrs.len()]);
        let (ok, errors, first_error, request) = (
            ok.clone(),
            errors.clone(),
            first_error.clone(),
            request.clone(),
        );
        tasks.spawn(async move {
            let t = now_us();
            let result = api
                .publish(json!({ "everyone": true }), &bench_message(t, phase, seq))
                .await;
            let took = now_us().saturating_sub(t);
            request
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .record(took);
            match result {
                Ok(()) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get_or_insert_with(|| format!("{e:#}"));
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let request = request
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let first_error = first_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Broadcast {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        first_error,
        request,
        start_us,
        started,
    })
}

fn print_step(s: &ClusterStep) {
    let rss: Vec<String> = s
        .nodes
        .iter()
        .map(|n| format!("{:.0}", n.rss_kib as f64 / 1024.0))
        .collect();
    let cpu: Vec<String> = s.nodes.iter().map(|n| format!("{:.2}", n.cpu)).collect();
    eprintln!(
        "[cluster {}] {} broadcasts ({} failed, request p50 {:.0} ms): delivered {}/{}, lost {}, duplicates {}, p50 {:.1} ms p99 {:.1} ms; node RSS MiB [{}], CPU [{}]",
        s.connections,
        s.published,
        s.publish_errors,
        s.publish_request.p50_ms,
        s.delivered,
        s.expected,
        s.lost,
        s.duplicates,
        s.latency.p50_ms,
        s.latency.p99_ms,
        rss.join(", "),
        cpu.join(", ")
    );
}

/// `bench-cluster-latency.svg` (p50 and p99 against connections) and `bench-cluster-rss.svg`
/// (mean and largest node RSS against connections) in `dir`.
pub fn cluster_plots(dir: &Path, result: &ClusterResult) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let points = |f: &dyn Fn(&ClusterStep) -> f64| -> Vec<(f64, f64)> {
        result
            .steps
            .iter()
            .map(|s| (s.connected as f64, f(s)))
            .collect()
    };
    let latency: Vec<Series> = vec![
        ("p50".to_owned(), points(&|s| s.latency.p50_ms)),
        ("p99".to_owned(), points(&|s| s.latency.p99_ms)),
    ];
    line_chart(
        &dir.join("bench-cluster-latency.svg"),
        &format!(
            "{} nodes: broadcast delivery latency, publish to receive",
            result.nodes
        ),
        "connections",
        "latency (ms)",
        &latency,
    )?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let rss: Vec<Series> = vec![
        (
            "mean node".to_owned(),
            points(&|s| {
                mib(s.nodes.iter().map(|n| n.rss_kib).sum::<u64>()) / s.nodes.len().max(1) as f64
            }),
        ),
        (
            "largest node".to_owned(),
            points(&|s| mib(s.nodes.iter().map(|n| n.rss_kib).max().unwrap_or(0))),
        ),
    ];
    line_chart(
        &dir.join("bench-cluster-rss.svg"),
        &format!("{} nodes: RSS per node", result.nodes),
        "connections",
        "RSS (MiB)",
        &rss,
    )?;
    Ok(())
}
