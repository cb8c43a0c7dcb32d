//! The coordinator: starts the servers under test and the worker processes, runs the scenarios,
//! prints progress to stderr and collects the results.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Semaphore, mpsc};

use crate::client::{WorkerEvent, WorkerSpec};
use crate::hist::{Histogram, Summary};
use crate::sys::{cpu_seconds, now_us, rss_kib, threads};
use crate::wire::{Kind, Proto, Publish, group_of, token, user_of};

/// How to start servers and workers.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The `bench-target` binary.
    pub target_bin: PathBuf,
    /// Python interpreter with aiosignalr installed (None: skip that baseline).
    pub python: Option<PathBuf>,
    /// The aiosignalr server script.
    pub aiosignalr_script: PathBuf,
    /// JWT secret.
    pub secret: String,
    /// Worker processes.
    pub workers: usize,
    /// Source addresses 127.0.0.`first_source` ..= 127.0.0.(`first_source` + sources − 1).
    pub sources: usize,
    /// The last byte of the first source address (2: 127.0.0.2). Runs one after the other can
    /// each start at their own, so that a run's connects do not search for free ports among
    /// the closed connections (`TIME_WAIT`) of the run before.
    pub first_source: u8,
    /// Connection attempts in flight per worker.
    pub concurrency: usize,
    /// Padding bytes per published message.
    pub payload: usize,
    /// SignalR connects negotiate first (see [`WorkerSpec::negotiate`]).
    pub negotiate: bool,
}

/// A running server under test.
#[derive(Debug)]
pub struct Server {
    /// What it is.
    pub kind: Kind,
    /// WebSocket address.
    pub ws: SocketAddr,
    /// Publish API address.
    pub http: SocketAddr,
    /// Process id (for /proc).
    pub pid: u32,
    child: Child,
}

fn listening(line: &str, prefix: &str) -> Option<SocketAddr> {
    line.strip_prefix(prefix)?
        .trim()
        .trim_start_matches("http://")
        .parse()
        .ok()
}

impl Server {
    /// Starts a server of `kind` on a free loopback port and waits until it listens.
    pub async fn start(setup: &Setup, kind: Kind) -> anyhow::Result<Server> {
        let mut command = match kind {
            Kind::Signalbox | Kind::BareWs => {
                let mut c = Command::new(&setup.target_bin);
                c.args(["--listen", "127.0.0.1:0", "--jwt-secret", &setup.secret]);
                if kind == Kind::BareWs {
                    c.args(["--mode", "bare-ws"]);
                }
                c
            }
            Kind::Aiosignalr => {
                let python = setup
                    .python
                    .as_ref()
                    .ok_or_else(|| anyhow!("no python for aiosignalr"))?;
                let mut c = Command::new(python);
                c.arg(&setup.aiosignalr_script)
                    .args(["--port", "0", "--secret", &setup.secret]);
                c
            }
            Kind::Service => bail!("the service is started by the storm and cluster scenarios"),
        };
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("start {kind:?}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("server exited"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut ws = None;
        let mut http = None;
        let deadline = Duration::from_secs(20);
        tokio::time::timeout(deadline, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = listening(&line, "Now listening on: ") {
                    ws = Some(a);
                }
                if let Some(a) = listening(&line, "Publish API on: ") {
                    http = Some(a);
                }
                if ws.is_some() && (kind != Kind::BareWs || http.is_some()) {
                    break;
                }
            }
            anyhow::Ok(())
        })
        .await
        .context("server did not start")??;
        let ws = ws.ok_or_else(|| anyhow!("server printed no address"))?;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            kind,
            ws,
            http: http.unwrap_or(ws),
            pid,
            child,
        })
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Most connections one worker process opens (the open file limit here is 20,000).
pub const MAX_PER_WORKER: usize = 19_000;

/// The generator's worker processes.
pub(crate) struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    events: mpsc::Receiver<(usize, WorkerEvent)>,
    tx: mpsc::Sender<(usize, WorkerEvent)>,
}

/// Result of a ramp.
#[derive(Debug, Clone, Serialize)]
pub struct Ramp {
    /// Connections asked for.
    pub requested: usize,
    /// Connections up.
    pub connected: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Ramp duration (slowest worker).
    pub secs: f64,
    /// Connected per second.
    pub connects_per_sec: f64,
    /// TCP connect to SignalR handshake response.
    pub handshake: Summary,
    /// First failure reasons.
    pub errors: Vec<String>,
    /// (connections up, server RSS KiB) during the ramp.
    pub rss_samples: Vec<(u64, u64)>,
}

impl Workers {
    async fn spawn(
        setup: &Setup,
        server: &Server,
        proto: Proto,
        count: usize,
        groups: usize,
    ) -> anyhow::Result<Workers> {
        let mut workers = Workers::new();
        workers
            .add(setup, server.kind, proto, &[server.ws], 0, count, groups)
            .await?;
        Ok(workers)
    }

    /// No worker yet.
    pub(crate) fn new() -> Workers {
        // Workers write a progress line every 250 ms; 1024 lines is far more than ever queue.
        let (tx, events) = mpsc::channel(1024);
        Workers {
            children: Vec::new(),
            stdins: Vec::new(),
            events,
            tx,
        }
    }

    /// Worker processes so far.
    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }

    /// Starts worker processes (at least `setup.workers`, at most [`MAX_PER_WORKER`]
    /// connections each) for connections `first..first + count`, spread over `addrs`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn add(
        &mut self,
        setup: &Setup,
        kind: Kind,
        proto: Proto,
        addrs: &[SocketAddr],
        first: usize,
        count: usize,
        groups: usize,
    ) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let addr = *addrs.first().ok_or_else(|| anyhow!("no server address"))?;
        let n = setup
            .workers
            .max(count.div_ceil(MAX_PER_WORKER))
            .max(1)
            .min(count.max(1));
        let sources: Vec<Ipv4Addr> = (0..setup.sources)
            .map(|i| {
                let last = usize::from(setup.first_source) + i;
                Ipv4Addr::new(127, 0, 0, u8::try_from(last).unwrap_or(u8::MAX))
            })
            .collect();
        let mut first = first;
        for w in 0..n {
            let share = count / n + usize::from(w < count % n);
            let spec = WorkerSpec {
                kind,
                proto,
                addr,
                addrs: if addrs.len() > 1 {
                    addrs.to_vec()
                } else {
                    Vec::new()
                },
                first,
                count: share,
                sources: sources.clone(),
                secret: setup.secret.clone(),
                groups,
                concurrency: setup.concurrency,
                negotiate: setup.negotiate,
            };
            first += share;
            let mut child = Command::new(&exe)
                .args(["worker", "--spec", &serde_json::to_string(&spec)?])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
            self.stdins
                .push(child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?);
            let tx = self.tx.clone();
            let w = self.children.len();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(event) = serde_json::from_str::<WorkerEvent>(&line)
                        && tx.send((w, event)).await.is_err()
                    {
                        break;
                    }
                }
            });
            self.children.push(child);
        }
        Ok(())
    }

    async fn ramp(
        &mut self,
        label: &str,
        requested: usize,
        server_pid: u32,
    ) -> anyhow::Result<Ramp> {
        self.ramp_from(label, requested, &[server_pid], 0).await
    }

    /// Waits until the workers from number `from` on finished their ramp; samples the summed
    /// RSS of `server_pids`.
    pub(crate) async fn ramp_from(
        &mut self,
        label: &str,
        requested: usize,
        server_pids: &[u32],
        from: usize,
    ) -> anyhow::Result<Ramp> {
        let n = self.children.len();
        let mut progress = vec![(0u64, 0u64); n];
        let mut done: Vec<bool> = (0..n).map(|w| w < from).collect();
        let mut secs: f64 = 0.0;
        let mut handshake = Histogram::default();
        let mut errors = Vec::new();
        let mut rss_samples = Vec::new();
        let started = Instant::now();
        let mut last_print = Instant::now();
        while done.iter().any(|d| !d) {
            let (w, event) = tokio::time::timeout(Duration::from_secs(60), self.events.recv())
                .await
                .context("workers stopped reporting")?
                .ok_or_else(|| anyhow!("workers exited during the ramp"))?;
            match event {
                WorkerEvent::Progress { connected, failed } => progress[w] = (connected, failed),
                WorkerEvent::Ramped {
                    connected,
                    failed,
                    secs: s,
                    handshake: h,
                    errors: e,
                } => {
                    progress[w] = (connected, failed);
                    done[w] = true;
                    secs = secs.max(s);
                    handshake.merge(&h);
                    errors.extend(e);
                }
                WorkerEvent::Report { .. } => {}
            }
            if last_print.elapsed() >= Duration::from_millis(500) || done.iter().all(|d| *d) {
                last_print = Instant::now();
                let connected: u64 = progress.iter().map(|p| p.0).sum();
                let failed: u64 = progress.iter().map(|p| p.1).sum();
                let rss: u64 = server_pids
                    .iter()
                    .map(|&pid| rss_kib(pid).unwrap_or(0))
                    .sum();
                rss_samples.push((connected, rss));
                eprintln!(
                    "[{label}] {connected}/{requested} connected, {failed} failed, {:.0}/s, server RSS {:.1} MiB",
                    connected as f64 / started.elapsed().as_secs_f64().max(1e-3),
                    rss as f64 / 1024.0
                );
            }
        }
        let connected: u64 = progress.iter().map(|p| p.0).sum();
        let failed: u64 = progress.iter().map(|p| p.1).sum();
        errors.truncate(5);
        Ok(Ramp {
            requested,
            connected,
            failed,
            secs,
            connects_per_sec: connected as f64 / secs.max(1e-6),
            handshake: handshake.summary(),
            errors,
            rss_samples,
        })
    }

    /// Sends `line` to every worker.
    pub(crate) async fn command(&mut self, line: &str) -> anyhow::Result<()> {
        for stdin in &mut self.stdins {
            stdin.write_all(format!("{line}\n").as_bytes()).await?;
            stdin.flush().await?;
        }
        Ok(())
    }

    /// Asks every worker for its counts and merges them.
    pub(crate) async fn report(&mut self) -> anyhow::Result<PhaseReport> {
        self.command("report").await?;
        let mut report = PhaseReport::default();
        let mut answered = 0;
        while answered < self.children.len() {
            let (_, event) = tokio::time::timeout(Duration::from_secs(30), self.events.recv())
                .await
                .context("workers stopped reporting")?
                .ok_or_else(|| anyhow!("workers exited"))?;
            if let WorkerEvent::Report {
                received,
                latency,
                first_us,
                last_us,
                closed,
                duplicates,
                replays,
                replay_last_us,
                ..
            } = event
            {
                report.duplicates += duplicates;
                report.replays += replays;
                report.replay_last_us = report.replay_last_us.max(replay_last_us);
                answered += 1;
                report.received += received;
                report.latency.merge(&latency);
                if first_us > 0 {
                    report.first_us = if report.first_us == 0 {
                        first_us
                    } else {
                        report.first_us.min(first_us)
                    };
                }
                report.last_us = report.last_us.max(last_us);
                report.closed += closed;
            }
        }
        Ok(report)
    }

    /// Stops the workers.
    pub(crate) async fn quit(mut self) {
        let _ = self.command("quit").await;
        for mut child in self.children {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}

/// The workers' merged counts.
#[derive(Default)]
pub(crate) struct PhaseReport {
    /// Messages of the phase received (each once per connection).
    pub(crate) received: u64,
    /// Their latency.
    pub(crate) latency: Histogram,
    /// First receive, µs since the epoch.
    pub(crate) first_us: u64,
    /// Last receive, µs since the epoch.
    pub(crate) last_us: u64,
    /// Connections closed.
    pub(crate) closed: u64,
    /// Messages received again by the same connection.
    pub(crate) duplicates: u64,
    /// Connections that got their inbox replay.
    pub(crate) replays: u64,
    /// Last replay receive, µs since the epoch.
    pub(crate) replay_last_us: u64,
}

/// Scenario (a): ramp N authenticated connections and measure the server's memory.
#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    /// Server kind.
    pub target: Kind,
    /// Protocol.
    pub protocol: Proto,
    /// The ramp.
    pub ramp: Ramp,
    /// Server RSS before the ramp, KiB.
    pub rss_before_kib: u64,
    /// Server RSS 2 s after the ramp, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / connected, bytes.
    pub rss_per_connection_bytes: f64,
    /// Server threads after the ramp.
    pub server_threads: u64,
    /// Connections the server closed during a 3 s idle hold.
    pub closed_while_idle: u64,
}

/// Runs scenario (a).
pub async fn idle(setup: &Setup, kind: Kind, proto: Proto, n: usize) -> anyhow::Result<IdleResult> {
    let server = Server::start(setup, kind).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(server.pid).unwrap_or(0);
    let mut workers = Workers::spawn(setup, &server, proto, n, 0).await?;
    let label = format!("idle {}/{proto:?}", kind.label());
    let ramp = workers.ramp(&label, n, server.pid).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = rss_kib(server.pid).unwrap_or(0);
    let server_threads = threads(server.pid).unwrap_or(0);
    let report = workers.report().await?;
    workers.quit().await;
    server.stop().await;
    let per = (rss_after.saturating_sub(rss_before) * 1024) as f64 / ramp.connected.max(1) as f64;
    eprintln!(
        "[{label}] {} connected in {:.2} s ({:.0}/s), handshake p50 {:.2} ms p99 {:.2} ms, {:.0} B/connection",
        ramp.connected,
        ramp.secs,
        ramp.connects_per_sec,
        ramp.handshake.p50_ms,
        ramp.handshake.p99_ms,
        per
    );
    Ok(IdleResult {
        target: kind,
        protocol: proto,
        ramp,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_per_connection_bytes: per,
        server_threads,
        closed_while_idle: report.closed,
    })
}

/// Which publish scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fanout {
    /// (b) `POST /broadcast`: every connection receives every message.
    Broadcast,
    /// (c) `POST /publish`: one user (one connection) per message.
    User,
    /// (d) `POST /group`: one group (connections / groups) per message, round robin.
    Group,
}

/// One publish rate.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Messages published per second (asked).
    pub offered_msgs_per_sec: f64,
    /// Deliveries per second that rate means.
    pub offered_deliveries_per_sec: f64,
    /// Publish requests answered 2xx.
    pub published: u64,
    /// Publish requests that failed.
    pub publish_errors: u64,
    /// Deliveries expected.
    pub expected: u64,
    /// Deliveries seen by the generator.
    pub delivered: u64,
    /// expected - delivered (after up to 10 s of draining).
    pub lost: u64,
    /// delivered / (last receive - first publish).
    pub delivered_per_sec: f64,
    /// Publish (before the HTTP request) to receive.
    pub latency: Summary,
    /// Server CPU use during the step (1.0 = one core).
    pub server_cpu: f64,
    /// Connections closed so far.
    pub closed: u64,
}

/// Scenarios (b), (c), (d).
#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    /// Which scenario.
    pub scenario: Fanout,
    /// Server kind.
    pub target: Kind,
    /// Protocol.
    pub protocol: Proto,
    /// Connections.
    pub connections: usize,
    /// Groups (group scenario).
    pub groups: usize,
    /// The ramp.
    pub ramp: Ramp,
    /// Server RSS after the ramp, KiB.
    pub rss_after_ramp_kib: u64,
    /// One entry per rate.
    pub steps: Vec<Step>,
}

#[allow(clippy::too_many_arguments)]
/// Runs (b), (c) or (d) at each rate in `rates` (messages per second) for `secs` each.
pub async fn fanout(
    setup: &Setup,
    scenario: Fanout,
    kind: Kind,
    proto: Proto,
    n: usize,
    groups: usize,
    rates: &[f64],
    secs: f64,
) -> anyhow::Result<FanoutResult> {
    let server = Server::start(setup, kind).await?;
    let join = if scenario == Fanout::Group { groups } else { 0 };
    let mut workers = Workers::spawn(setup, &server, proto, n, join).await?;
    let label = format!("{scenario:?} {}/{proto:?}", kind.label()).to_lowercase();
    let ramp = workers.ramp(&label, n, server.pid).await?;
    if ramp.connected == 0 {
        bail!("[{label}] no connection: {:?}", ramp.errors);
    }
    let rss_after_ramp = rss_kib(server.pid).unwrap_or(0);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let auth = format!("Bearer {}", token(&setup.secret, "publisher")?);
    let path = match scenario {
        Fanout::Broadcast => "broadcast",
        Fanout::User => "publish",
        Fanout::Group => "group",
    };
    let url = format!("http://{}/{path}", server.http);
    let connected = ramp.connected as usize;
    let recipients = match scenario {
        Fanout::Broadcast => connected as f64,
        Fanout::User => 1.0,
        Fanout::Group => connected as f64 / groups.max(1) as f64,
    };
    let pad = "x".repeat(setup.payload);
    let mut steps = Vec::new();
    for (i, &rate) in rates.iter().enumerate() {
        let phase = i as u64 + 1;
        workers.command(&format!("phase {phase}")).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cpu_before = cpu_seconds(server.pid).unwrap_or(0.0);
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(Semaphore::new(256));
        let total = (rate * secs).round().max(1.0) as u64;
        let start = tokio::time::Instant::now();
        let start_us = now_us();
        let mut tasks = tokio::task::JoinSet::new();
        let mut expected = 0u64;
        for seq in 0..total {
            tokio::time::sleep_until(start + Duration::from_secs_f64(seq as f64 / rate)).await;
            let permit = in_flight.clone().acquire_owned().await?;
            // Users and groups are picked so that every one of them receives the same share.
            let index = (seq as usize).wrapping_mul(7919) % connected.max(1);
            let mut body = Publish {
                user: None,
                group: None,
                t: 0,
                phase,
                seq,
                pad: pad.clone(),
            };
            match scenario {
                Fanout::Broadcast => expected += connected as u64,
                Fanout::User => {
                    body.user = Some(user_of(index));
                    expected += 1;
                }
                Fanout::Group => {
                    let g = seq as usize % groups.max(1);
                    body.group = Some(group_of(g, groups));
                    expected += (0..connected).filter(|c| c % groups.max(1) == g).count() as u64;
                }
            }
            let (http, url, auth, ok, errors) = (
                http.clone(),
                url.clone(),
                auth.clone(),
                ok.clone(),
                errors.clone(),
            );
            tasks.spawn(async move {
                body.t = now_us();
                let result = http
                    .post(&url)
                    .header("authorization", auth)
                    .json(&body)
                    .send()
                    .await;
                match result {
                    Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                    _ => errors.fetch_add(1, Ordering::Relaxed),
                };
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
        let published = ok.load(Ordering::Relaxed);
        let publish_errors = errors.load(Ordering::Relaxed);
        if publish_errors > 0 {
            // Messages whose publish failed are not expected anywhere.
            expected = (expected as f64 * published as f64 / total as f64).round() as u64;
        }
        // Drain: until everything arrived, or nothing more arrives for 2 s (at most 10 s).
        let drain_start = Instant::now();
        let mut last = (0, Instant::now());
        let report = loop {
            let report = workers.report().await?;
            if report.received >= expected
                || drain_start.elapsed() > Duration::from_secs(10)
                || (report.received == last.0 && last.1.elapsed() > Duration::from_secs(2))
            {
                break report;
            }
            if report.received != last.0 {
                last = (report.received, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let cpu = cpu_seconds(server.pid).unwrap_or(0.0) - cpu_before;
        let window = (report.last_us.saturating_sub(start_us)) as f64 / 1e6;
        let step = Step {
            offered_msgs_per_sec: rate,
            offered_deliveries_per_sec: rate * recipients,
            published,
            publish_errors,
            expected,
            delivered: report.received,
            lost: expected.saturating_sub(report.received),
            delivered_per_sec: report.received as f64 / window.max(1e-3),
            latency: report.latency.summary(),
            server_cpu: cpu / (window.max(secs)),
            closed: report.closed,
        };
        eprintln!(
            "[{label}] {:.0} msg/s ({:.0} deliveries/s offered): delivered {}/{} at {:.0}/s, p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms, server CPU {:.2}, closed {}",
            rate,
            step.offered_deliveries_per_sec,
            step.delivered,
            step.expected,
            step.delivered_per_sec,
            step.latency.p50_ms,
            step.latency.p99_ms,
            step.latency.p999_ms,
            step.server_cpu,
            step.closed
        );
        steps.push(step);
    }
    workers.quit().await;
    server.stop().await;
    Ok(FanoutResult {
        scenario,
        target: kind,
        protocol: proto,
        connections: n,
        groups: join,
        ramp,
        rss_after_ramp_kib: rss_after_ramp,
        steps,
    })
}
