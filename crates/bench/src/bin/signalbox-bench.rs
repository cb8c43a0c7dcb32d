//! The load generator. Each scenario subcommand starts the servers under test itself (signalbox
//! and the baselines, one fresh process per run), spreads the connections over worker processes
//! and source addresses, prints progress to stderr and writes the results as JSON.
//!
//! `signalbox-bench suite` runs every scenario against every target and draws the plots.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args as ClapArgs, Parser, Subcommand};
use serde_json::{Value, json};
use signalbox_bench::client::{WorkerSpec, run_worker};
use signalbox_bench::cluster::{ClusterOptions, cluster, cluster_plots};
use signalbox_bench::coord::{self, Fanout, FanoutResult, IdleResult, Setup};
use signalbox_bench::plot::{Series, line_chart};
use signalbox_bench::publish::{
    PublishOptions, PublishTarget, Recipients, publish, publish_ratios,
};
use signalbox_bench::storm::{StormOptions, StormTarget, storm, storm_plots, storm_ratios};
use signalbox_bench::wire::{Kind, Proto};

#[derive(Parser)]
#[command(about = "SignalR load generator for signalbox and its baselines")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// (a) Ramp N authenticated connections: connects/s, handshake latency, server memory.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Connections.
        #[arg(long, short = 'n', default_value_t = 19_000)]
        connections: usize,
    },
    /// (b) Broadcast fan-out: every connection receives every message.
    Broadcast {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        rates: Rates,
    },
    /// (c) User-targeted: HTTP publish API to one user's connection.
    User {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        rates: Rates,
    },
    /// (d) Group fan-out: connections spread over groups, one group per message.
    Group {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        rates: Rates,
        /// Groups.
        #[arg(long, default_value_t = 100)]
        groups: usize,
    },
    /// Every scenario against every target, results JSON and SVG plots.
    Suite {
        #[command(flatten)]
        common: Common,
        /// Directory for the SVG plots.
        #[arg(long)]
        plots: Option<PathBuf>,
        /// Connections for the idle scenario.
        #[arg(long, default_value_t = 19_000)]
        idle_connections: usize,
        /// Connections for the broadcast scenario.
        #[arg(long, default_value_t = 10_000)]
        broadcast_connections: usize,
        /// Broadcast rates, messages per second.
        #[arg(long, value_delimiter = ',', default_value = "2,5,10,20,40")]
        broadcast_rates: Vec<f64>,
        /// Connections for the user scenario.
        #[arg(long, default_value_t = 10_000)]
        user_connections: usize,
        /// User publish rates, messages per second.
        #[arg(long, value_delimiter = ',', default_value = "500,1000,2000")]
        user_rates: Vec<f64>,
        /// Connections for the group scenario.
        #[arg(long, default_value_t = 10_000)]
        group_connections: usize,
        /// Groups.
        #[arg(long, default_value_t = 100)]
        groups: usize,
        /// Group publish rates, messages per second.
        #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
        group_rates: Vec<f64>,
        /// Seconds per rate.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Connection storm on the service (`signalbox serve`, SQLite and PostgreSQL) with the
    /// library as the reference: handshakes/s, time until presence reports everyone online and
    /// until every inbox replay arrived, server CPU and memory.
    Storm {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        service: ServiceArgs,
        /// Connections.
        #[arg(long, short = 'n', default_value_t = 10_000)]
        connections: usize,
        /// What to storm, side by side.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "library,sqlite,postgres"
        )]
        against: Vec<StormTarget>,
        /// Users given an unread notification before the storm (default: a tenth of them).
        #[arg(long)]
        replay_users: Option<usize>,
        /// Longest wait for the server to become idle after the ramp, seconds.
        #[arg(long, default_value_t = 30.0)]
        settle_timeout: f64,
        /// Directory for the SVG plot (online users over time).
        #[arg(long)]
        plots: Option<PathBuf>,
    },
    /// Publishing to everyone on the service (`signalbox serve`, SQLite and PostgreSQL): N
    /// accounts all connected or all offline, K notifications with `everyone: true`; request
    /// duration, inbox rows stored/s, deliveries/s, lost and duplicates, side by side with a
    /// baseline binary if given.
    Publish {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        service: ServiceArgs,
        /// Accounts (and, online, connections).
        #[arg(long, short = 'n', default_value_t = 10_000)]
        connections: usize,
        /// Notifications published per run.
        #[arg(long, short = 'k', default_value_t = 3)]
        publishes: usize,
        /// Databases, side by side.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "sqlite,postgres"
        )]
        against: Vec<PublishTarget>,
        /// Recipients connected, offline, or both.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "online,offline"
        )]
        recipients: Vec<Recipients>,
        /// An earlier `signalbox` binary to run side by side as the baseline.
        #[arg(long)]
        baseline_bin: Option<PathBuf>,
        /// Longest wait for more deliveries once nothing arrives, seconds.
        #[arg(long, default_value_t = 10.0)]
        drain_timeout: f64,
    },
    /// M service nodes on a backplane and one PostgreSQL database; connections raised in steps,
    /// everyone notified at a fixed rate at each step: losses, duplicates, latency, per-node
    /// memory and CPU.
    Cluster {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        service: ServiceArgs,
        /// Connections at the last step.
        #[arg(long, short = 'n', default_value_t = 100_000)]
        connections: usize,
        /// Steps of equal size up to `--connections` (ignored with `--steps`).
        #[arg(long, default_value_t = 5)]
        step_count: usize,
        /// Explicit connection counts per step, ascending.
        #[arg(long, value_delimiter = ',')]
        steps: Vec<usize>,
        /// Nodes.
        #[arg(long, default_value_t = 6)]
        nodes: usize,
        /// Node i listens on base-port + i.
        #[arg(long, default_value_t = 39_100)]
        base_port: u16,
        /// The backplane.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        backplane: String,
        /// Broadcasts (`everyone: true`) per second.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Seconds of broadcasting per step.
        #[arg(long, default_value_t = 60.0)]
        secs: f64,
        /// Longest wait for deliveries after a step's broadcasts, seconds.
        #[arg(long, default_value_t = 600.0)]
        drain_timeout: f64,
        /// Directory for the SVG plots (latency and RSS against connections).
        #[arg(long)]
        plots: Option<PathBuf>,
    },
    /// Internal: one generator worker process (spawned by the others).
    #[command(hide = true)]
    Worker {
        /// The worker's job, as JSON.
        #[arg(long)]
        spec: String,
    },
}

#[derive(ClapArgs, Clone)]
struct Common {
    /// Servers to measure, side by side.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "signalbox,bare-ws,aiosignalr"
    )]
    targets: Vec<Kind>,
    /// Hub protocols (the bare-ws target runs once, without SignalR).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "json,messagepack"
    )]
    protocols: Vec<Proto>,
    /// Generator worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Source addresses 127.0.0.2 ..= 127.0.0.(1+N).
    #[arg(long, default_value_t = 4)]
    sources: usize,
    /// Connection attempts in flight per worker.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Padding bytes per published message.
    #[arg(long, default_value_t = 32)]
    payload: usize,
    /// JWT secret shared with the servers.
    #[arg(long, default_value = "signalbox-bench-secret-of-at-least-32-bytes")]
    secret: String,
    /// Python with aiosignalr installed (skips that baseline when absent).
    #[arg(long, env = "AIOSIGNALR_PYTHON")]
    aiosignalr_python: Option<PathBuf>,
    /// The bench-target binary (default: next to this one).
    #[arg(long)]
    target_bin: Option<PathBuf>,
    /// Each SignalR connect starts with `POST {hub}/negotiate?negotiateVersion=1` (bearer
    /// token, over a per-worker keep-alive pool), then connects with the returned token, as the
    /// official clients do; without it, the WebSocket connects directly (`skipNegotiation`).
    #[arg(long)]
    negotiate: bool,
    /// Results file (default: stdout).
    #[arg(long, short)]
    out: Option<PathBuf>,
}

/// Where the service comes from and which database server it may use.
#[derive(ClapArgs, Clone)]
struct ServiceArgs {
    /// The `signalbox` binary (default: `$CARGO_TARGET_DIR/release/signalbox`, else the debug
    /// one, else next to this executable).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// PostgreSQL server URL; each run creates a fresh database there and drops it at the end.
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
}

impl ServiceArgs {
    fn server_bin(&self) -> PathBuf {
        let bin = self
            .server_bin
            .clone()
            .unwrap_or_else(signalbox_bench::service::default_server_bin);
        eprintln!("service binary: {}", bin.display());
        bin
    }
}

#[derive(ClapArgs, Clone)]
struct Rates {
    /// Connections.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    connections: usize,
    /// Publish rates, messages per second.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    rates: Vec<f64>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
}

impl Common {
    fn setup(&self) -> anyhow::Result<Setup> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().context("no exe dir")?;
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("baselines/aiosignalr_server.py");
        Ok(Setup {
            target_bin: self
                .target_bin
                .clone()
                .unwrap_or_else(|| dir.join("bench-target")),
            python: self.aiosignalr_python.clone(),
            aiosignalr_script: script,
            secret: self.secret.clone(),
            workers: self.workers,
            sources: self.sources,
            first_source: quiet_source_block(self.sources)?,
            concurrency: self.concurrency,
            payload: self.payload,
            negotiate: self.negotiate,
        })
    }

    /// (target, protocol) pairs to run: bare-ws once, aiosignalr only with a python.
    fn runs(&self) -> Vec<(Kind, Proto)> {
        let mut runs = Vec::new();
        for &kind in &self.targets {
            if kind == Kind::Aiosignalr && self.aiosignalr_python.is_none() {
                eprintln!("skipping aiosignalr: no --aiosignalr-python / AIOSIGNALR_PYTHON");
                continue;
            }
            if kind == Kind::BareWs {
                runs.push((kind, Proto::Json));
                continue;
            }
            for &proto in &self.protocols {
                runs.push((kind, proto));
            }
        }
        runs
    }
}

async fn run_idle(common: &Common, n: usize) -> anyhow::Result<Vec<IdleResult>> {
    let mut setup = common.setup()?;
    let mut results = Vec::new();
    for (i, (kind, proto)) in common.runs().into_iter().enumerate() {
        if i > 0 {
            setup.first_source = quiet_source_block(setup.sources)?;
        }
        results.push(coord::idle(&setup, kind, proto, n).await?);
    }
    Ok(results)
}

async fn run_fanout(
    common: &Common,
    scenario: Fanout,
    rates: &Rates,
    groups: usize,
) -> anyhow::Result<Vec<FanoutResult>> {
    let setup = common.setup()?;
    let mut results = Vec::new();
    for (kind, proto) in common.runs() {
        if scenario == Fanout::Group && kind == Kind::Aiosignalr && proto == Proto::Messagepack {
            // aiosignalr 0.1.1 writes the headers of MessagePack completions as the integer 128
            // (`_EMPTY_HEADERS = 0x80`) instead of an empty map, so no conforming client can read
            // the JoinGroup result.
            eprintln!(
                "skipping group aiosignalr/messagepack: its completions are not valid MessagePack hub messages"
            );
            continue;
        }
        results.push(
            coord::fanout(
                &setup,
                scenario,
                kind,
                proto,
                rates.connections,
                groups,
                &rates.rates,
                rates.secs,
            )
            .await?,
        );
    }
    Ok(results)
}

fn ratio(a: f64, b: f64) -> Value {
    if b > 0.0 {
        json!((a / b * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

fn idle_ratios(results: &[IdleResult]) -> Value {
    let find = |k: Kind, p: Option<Proto>| {
        results
            .iter()
            .find(|r| r.target == k && p.is_none_or(|p| r.protocol == p))
    };
    let mut out = Vec::new();
    for r in results.iter().filter(|r| r.target == Kind::Signalbox) {
        for (name, base) in [
            ("bare-ws", find(Kind::BareWs, None)),
            ("aiosignalr", find(Kind::Aiosignalr, Some(r.protocol))),
        ] {
            if let Some(b) = base {
                out.push(json!({
                    "protocol": r.protocol, "baseline": name,
                    "rss_per_connection": ratio(r.rss_per_connection_bytes, b.rss_per_connection_bytes),
                    "connects_per_sec": ratio(r.ramp.connects_per_sec, b.ramp.connects_per_sec),
                    "handshake_p99": ratio(r.ramp.handshake.p99_ms, b.ramp.handshake.p99_ms),
                }));
            }
        }
    }
    Value::Array(out)
}

fn peak(r: &FanoutResult) -> f64 {
    r.steps
        .iter()
        .map(|s| s.delivered_per_sec)
        .fold(0.0, f64::max)
}

fn fanout_ratios(results: &[FanoutResult]) -> Value {
    let find = |k: Kind, p: Option<Proto>| {
        results
            .iter()
            .find(|r| r.target == k && p.is_none_or(|p| r.protocol == p))
    };
    let mut out = Vec::new();
    for r in results.iter().filter(|r| r.target == Kind::Signalbox) {
        for (name, base) in [
            ("bare-ws", find(Kind::BareWs, None)),
            ("aiosignalr", find(Kind::Aiosignalr, Some(r.protocol))),
        ] {
            if let Some(b) = base {
                let steps: Vec<Value> = r
                    .steps
                    .iter()
                    .zip(&b.steps)
                    .map(|(s, t)| {
                        json!({
                            "offered_deliveries_per_sec": s.offered_deliveries_per_sec,
                            "delivered_per_sec": ratio(s.delivered_per_sec, t.delivered_per_sec),
                            "p50": ratio(s.latency.p50_ms, t.latency.p50_ms),
                            "p99": ratio(s.latency.p99_ms, t.latency.p99_ms),
                        })
                    })
                    .collect();
                out.push(json!({
                    "protocol": r.protocol, "baseline": name,
                    "peak_delivered_per_sec": ratio(peak(r), peak(b)),
                    "steps": steps,
                }));
            }
        }
    }
    Value::Array(out)
}

fn label(kind: Kind, proto: Proto) -> String {
    if kind == Kind::BareWs {
        kind.label().to_owned()
    } else {
        format!("{} {proto:?}", kind.label()).to_lowercase()
    }
}

fn plots(
    dir: &std::path::Path,
    idle: &[IdleResult],
    fanouts: &[(&str, &[FanoutResult])],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let rss: Vec<Series> = idle
        .iter()
        .map(|r| {
            let base = r.rss_before_kib as f64 / 1024.0;
            let mut pts: Vec<(f64, f64)> = r
                .ramp
                .rss_samples
                .iter()
                .map(|&(c, k)| (c as f64, k as f64 / 1024.0 - base))
                .collect();
            pts.push((
                r.ramp.connected as f64,
                (r.rss_after_kib as f64 / 1024.0) - base,
            ));
            (label(r.target, r.protocol), pts)
        })
        .collect();
    if !rss.is_empty() {
        line_chart(
            &dir.join("bench-idle-rss.svg"),
            "Server memory growth during the idle ramp",
            "connections",
            "RSS growth (MiB)",
            &rss,
        )?;
    }
    for (name, results) in fanouts {
        if results.is_empty() {
            continue;
        }
        let per = |f: &dyn Fn(&coord::Step) -> f64| -> Vec<Series> {
            results
                .iter()
                .map(|r| {
                    (
                        label(r.target, r.protocol),
                        r.steps
                            .iter()
                            .map(|s| (s.offered_deliveries_per_sec, f(s)))
                            .collect(),
                    )
                })
                .collect()
        };
        line_chart(
            &dir.join(format!("bench-{name}-p99.svg")),
            &format!("{name}: p99 latency, publish to receive"),
            "offered deliveries/s",
            "p99 (ms)",
            &per(&|s| s.latency.p99_ms),
        )?;
        line_chart(
            &dir.join(format!("bench-{name}-throughput.svg")),
            &format!("{name}: deliveries/s achieved"),
            "offered deliveries/s",
            "delivered/s",
            &per(&|s| s.delivered_per_sec),
        )?;
    }
    Ok(())
}

fn write_out(path: Option<&PathBuf>, value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    match path {
        Some(p) => {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).ok();
            }
            std::fs::write(p, text + "\n")?;
            eprintln!("results written to {}", p.display());
        }
        None => {
            #[allow(clippy::print_stdout)]
            {
                println!("{text}");
            }
        }
    }
    Ok(())
}

/// The first address of the block of `sources` loopback source addresses (blocks from
/// 127.0.0.2 on) holding the fewest sockets in `TIME_WAIT`: the closed connections of an earlier
/// run stay there for a minute, and connects from the same addresses would search past their
/// ports for free ones (runs started back to back stalled at a tenth of their rate).
fn quiet_source_block(sources: usize) -> anyhow::Result<u8> {
    let time_wait = signalbox_bench::sys::time_wait_by_address();
    let mut best: Option<(usize, u8)> = None;
    for i in 0.. {
        let Ok(first) = source_block(i, sources) else {
            break;
        };
        let closed: usize = (0..sources)
            .filter_map(|k| u8::try_from(usize::from(first) + k).ok())
            .map(|last| {
                time_wait
                    .get(&std::net::Ipv4Addr::new(127, 0, 0, last))
                    .copied()
                    .unwrap_or(0)
            })
            .sum();
        if best.is_none_or(|(fewest, _)| closed < fewest) {
            best = Some((closed, first));
        }
        if closed == 0 {
            break;
        }
    }
    let (closed, first) = best
        .ok_or_else(|| anyhow::anyhow!("{sources} source addresses do not fit in 127.0.0.0/24"))?;
    if first != 2 {
        eprintln!(
            "source addresses 127.0.0.{first} ..= 127.0.0.{} ({closed} sockets of earlier runs in TIME_WAIT there)",
            usize::from(first) + sources - 1
        );
    }
    Ok(first)
}

/// The first source address (last byte) of the `i`-th block of `sources` addresses from
/// 127.0.0.2; an error when the blocks do not fit in 127.0.0.0/24.
fn source_block(i: usize, sources: usize) -> anyhow::Result<u8> {
    let first = 2 + i * sources;
    match u8::try_from(first + sources.saturating_sub(1)) {
        Ok(last) if last < u8::MAX => Ok(u8::try_from(first)?),
        _ => anyhow::bail!(
            "{} blocks of {sources} source addresses do not fit in 127.0.0.0/24",
            i + 1
        ),
    }
}

fn header() -> Value {
    json!({
        "machine": signalbox_bench::sys::machine(),
        "command": std::env::args().collect::<Vec<_>>(),
        "started_unix": signalbox_bench::sys::now_us() / 1_000_000,
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Storm {
            common,
            service,
            connections,
            against,
            replay_users,
            settle_timeout,
            plots,
        } => {
            let setup = common.setup()?;
            let options = StormOptions {
                server_bin: service.server_bin(),
                database_url: service.database_url.clone(),
                replay_users: replay_users.unwrap_or(connections / 10),
                settle_timeout: std::time::Duration::from_secs_f64(settle_timeout),
                proto: common.protocols.first().copied().unwrap_or(Proto::Json),
            };
            let mut out = header();
            let mut results = Vec::new();
            // Each target connects from the source addresses with the fewest closed connections
            // (see `quiet_source_block`), not those the previous target just used.
            let mut setup = setup;
            for (i, target) in against.into_iter().enumerate() {
                if i > 0 {
                    setup.first_source = quiet_source_block(setup.sources)?;
                }
                results.push(storm(&setup, &options, target, connections).await?);
            }
            out["ratios"] = storm_ratios(&results);
            out["storm"] = serde_json::to_value(&results)?;
            out["finished_loadavg"] = signalbox_bench::sys::machine()["loadavg"].clone();
            if let Some(dir) = plots {
                storm_plots(&dir, &results)?;
            }
            write_out(common.out.as_ref(), &out)
        }
        Cmd::Publish {
            common,
            service,
            connections,
            publishes,
            against,
            recipients,
            baseline_bin,
            drain_timeout,
        } => {
            let setup = common.setup()?;
            let options = PublishOptions {
                server_bin: service.server_bin(),
                baseline_bin,
                database_url: service.database_url.clone(),
                publishes,
                drain_timeout: std::time::Duration::from_secs_f64(drain_timeout),
                proto: common.protocols.first().copied().unwrap_or(Proto::Json),
            };
            let mut out = header();
            let runs = publish(&setup, &options, &against, &recipients, connections).await?;
            out["ratios"] = publish_ratios(&runs);
            out["publish"] = serde_json::to_value(&runs)?;
            out["finished_loadavg"] = signalbox_bench::sys::machine()["loadavg"].clone();
            write_out(common.out.as_ref(), &out)
        }
        Cmd::Cluster {
            common,
            service,
            connections,
            step_count,
            steps,
            nodes,
            base_port,
            backplane,
            rate,
            secs,
            drain_timeout,
            plots,
        } => {
            let mut setup = common.setup()?;
            let steps: Vec<usize> = if steps.is_empty() {
                let k = step_count.max(1);
                (1..=k).map(|i| connections * i / k).collect()
            } else {
                steps
            };
            // About 28,000 ephemeral ports per source address, but the kernel's search for a
            // free port costs more the fuller the range is (at 80 % full the generator spent
            // its time in `connect`): one address per 10,000 connections.
            let most = steps.iter().copied().max().unwrap_or(connections);
            let sources = most.div_ceil(10_000);
            if setup.sources < sources {
                eprintln!("using {sources} source addresses for {most} connections");
                setup.sources = sources;
            }
            let options = ClusterOptions {
                server_bin: service.server_bin(),
                database_url: service.database_url.clone(),
                backplane,
                nodes,
                base_port,
                steps,
                rate,
                secs,
                drain_timeout: std::time::Duration::from_secs_f64(drain_timeout),
                proto: common.protocols.first().copied().unwrap_or(Proto::Json),
            };
            let mut out = header();
            let result = cluster(&setup, &options).await?;
            out["finished_loadavg"] = signalbox_bench::sys::machine()["loadavg"].clone();
            if let Some(dir) = plots {
                cluster_plots(&dir, &result)?;
            }
            let error = result.error.clone();
            out["cluster"] = serde_json::to_value(&result)?;
            write_out(common.out.as_ref(), &out)?;
            match error {
                Some(e) => Err(anyhow::anyhow!("the cluster run stopped early: {e}")),
                None => Ok(()),
            }
        }
        Cmd::Worker { spec } => {
            let spec: WorkerSpec = serde_json::from_str(&spec)?;
            run_worker(spec).await
        }
        Cmd::Idle {
            common,
            connections,
        } => {
            let mut out = header();
            let idle = run_idle(&common, connections).await?;
            out["idle_ratios"] = idle_ratios(&idle);
            out["idle"] = serde_json::to_value(&idle)?;
            write_out(common.out.as_ref(), &out)
        }
        Cmd::Broadcast { common, rates } | Cmd::User { common, rates } => {
            let scenario = if matches!(cli_name(), Some("user")) {
                Fanout::User
            } else {
                Fanout::Broadcast
            };
            let mut out = header();
            let results = run_fanout(&common, scenario, &rates, 0).await?;
            out["ratios"] = fanout_ratios(&results);
            out["results"] = serde_json::to_value(&results)?;
            write_out(common.out.as_ref(), &out)
        }
        Cmd::Group {
            common,
            rates,
            groups,
        } => {
            let mut out = header();
            let results = run_fanout(&common, Fanout::Group, &rates, groups).await?;
            out["ratios"] = fanout_ratios(&results);
            out["results"] = serde_json::to_value(&results)?;
            write_out(common.out.as_ref(), &out)
        }
        Cmd::Suite {
            common,
            plots: plot_dir,
            idle_connections,
            broadcast_connections,
            broadcast_rates,
            user_connections,
            user_rates,
            group_connections,
            groups,
            group_rates,
            secs,
        } => {
            let mut out = header();
            let idle = run_idle(&common, idle_connections).await?;
            let rates = |connections, rates: Vec<f64>| Rates {
                connections,
                rates,
                secs,
            };
            let broadcast = run_fanout(
                &common,
                Fanout::Broadcast,
                &rates(broadcast_connections, broadcast_rates),
                0,
            )
            .await?;
            let user = run_fanout(
                &common,
                Fanout::User,
                &rates(user_connections, user_rates),
                0,
            )
            .await?;
            let group = run_fanout(
                &common,
                Fanout::Group,
                &rates(group_connections, group_rates),
                groups,
            )
            .await?;
            out["ratios"] = json!({
                "idle": idle_ratios(&idle),
                "broadcast": fanout_ratios(&broadcast),
                "user": fanout_ratios(&user),
                "group": fanout_ratios(&group),
            });
            out["idle"] = serde_json::to_value(&idle)?;
            out["broadcast"] = serde_json::to_value(&broadcast)?;
            out["user"] = serde_json::to_value(&user)?;
            out["group"] = serde_json::to_value(&group)?;
            out["finished_loadavg"] = signalbox_bench::sys::machine()["loadavg"].clone();
            if let Some(dir) = plot_dir {
                plots(
                    &dir,
                    &idle,
                    &[
                        ("broadcast", &broadcast),
                        ("user", &user),
                        ("group", &group),
                    ],
                )?;
            }
            write_out(common.out.as_ref(), &out)
        }
    }
}

/// The subcommand name as typed (`broadcast` and `user` share their arguments).
fn cli_name() -> Option<&'static str> {
    let arg = std::env::args().nth(1)?;
    ["user", "broadcast"].into_iter().find(|n| *n == arg)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Workers are single-threaded (several processes share the cores); the coordinator too.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let limit = signalbox_bench::sys::raise_nofile();
    if !matches!(cli.command, Cmd::Worker { .. }) {
        eprintln!("open file limit: {limit}");
    }
    runtime.block_on(run(cli))
}
