//! The notification service under test: one `signalbox serve` process with its own data
//! directory, configured through `SIGNALBOX_*` environment variables, stopped (and its data
//! directory removed) when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How to start one node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The `signalbox` binary.
    pub bin: PathBuf,
    /// HS256 secret (`SIGNALBOX_JWT_SECRET`).
    pub secret: String,
    /// Database URL (`SIGNALBOX_DATABASE`); `None`: SQLite in the node's data directory.
    pub database: Option<String>,
    /// Backplane URL (`SIGNALBOX_BACKPLANE`), with the connection token secret and the channel
    /// prefix it needs.
    pub backplane: Option<Backplane>,
    /// Listen address (port 0: any free port).
    pub listen: SocketAddr,
    /// Node id (`SIGNALBOX_NODE_ID`).
    pub node_id: String,
}

/// A backplane shared by the nodes of a cluster.
#[derive(Debug, Clone)]
pub struct Backplane {
    /// `nats://…` or `redis://…`.
    pub url: String,
    /// `SIGNALBOX_CONNECTION_TOKEN_SECRET`.
    pub connection_token_secret: String,
    /// `SIGNALBOX_CHANNEL_PREFIX`, unique per run so that runs never hear each other.
    pub channel_prefix: String,
}

/// A running `signalbox serve`.
#[derive(Debug)]
pub struct ServiceNode {
    /// Its node id.
    pub node_id: String,
    /// The HTTP (and hub) address.
    pub http: SocketAddr,
    /// Process id (for /proc).
    pub pid: u32,
    /// The database URL it uses (for bulk account creation).
    pub database: String,
    data_dir: PathBuf,
    child: Child,
}

/// The default `signalbox` binary: `$CARGO_TARGET_DIR/release/signalbox`, else the debug one,
/// else next to this executable.
pub fn default_server_bin() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let here = exe.as_deref().and_then(Path::parent).map(Path::to_path_buf);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            here.as_deref()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
        });
    if let Some(target) = target {
        for profile in ["release", "debug"] {
            let bin = target.join(profile).join("signalbox");
            if bin.is_file() {
                return bin;
            }
        }
    }
    here.map(|d| d.join("signalbox"))
        .unwrap_or_else(|| PathBuf::from("signalbox"))
}

/// A fresh directory under the system's temporary directory.
fn temp_dir(label: &str) -> anyhow::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "signalbox-bench-{}-{}-{label}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// The last lines of a log file (for error messages).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl ServiceNode {
    /// Starts a node and waits until `/health/ready` answers 200.
    pub async fn start(options: &NodeOptions) -> anyhow::Result<ServiceNode> {
        if !options.bin.is_file() {
            bail!(
                "no signalbox binary at {} (build it: cargo build --release -p signalbox-server, or pass --server-bin)",
                options.bin.display()
            );
        }
        let data_dir = temp_dir(&options.node_id)?;
        let database = options
            .database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/signalbox.db", data_dir.display()));
        let log_path = data_dir.join("node.log");
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new(&options.bin);
        command.arg("serve");
        // Only this run's settings: none inherited from the caller's environment.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SIGNALBOX_") {
                command.env_remove(name);
            }
        }
        command
            .env("SIGNALBOX_DATA_DIR", &data_dir)
            .env("SIGNALBOX_LISTEN", options.listen.to_string())
            .env("SIGNALBOX_DATABASE", &database)
            .env("SIGNALBOX_JWT_SECRET", &options.secret)
            .env("SIGNALBOX_NODE_ID", &options.node_id);
        if let Some(backplane) = &options.backplane {
            command
                .env("SIGNALBOX_BACKPLANE", &backplane.url)
                .env(
                    "SIGNALBOX_CONNECTION_TOKEN_SECRET",
                    &backplane.connection_token_secret,
                )
                .env("SIGNALBOX_CHANNEL_PREFIX", &backplane.channel_prefix);
        }
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("start {}", options.bin.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("the service exited"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let http = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line
                    .strip_prefix("Now listening on: ")
                    .and_then(|a| a.trim().trim_start_matches("http://").parse().ok())
                {
                    return anyhow::Ok(Some(addr));
                }
            }
            Ok(None)
        })
        .await;
        let http: SocketAddr = match http {
            Ok(Ok(Some(addr))) => addr,
            _ => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let log = tail(&log_path, 20);
                let _ = std::fs::remove_dir_all(&data_dir);
                bail!("{} did not start:\n{log}", options.node_id);
            }
        };
        // Keep draining stdout so the service never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let node = ServiceNode {
            node_id: options.node_id.clone(),
            http,
            pid,
            database,
            data_dir,
            child,
        };
        node.wait_ready(Duration::from_secs(60)).await?;
        Ok(node)
    }

    /// Polls `/health/ready` until it answers 200.
    async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let url = format!("http://{}/health/ready", self.http);
        let started = Instant::now();
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!(
                    "{} not ready after {timeout:?}:\n{}",
                    self.node_id,
                    tail(&self.data_dir.join("node.log"), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the node (SIGKILL) and removes its data directory.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

impl Drop for ServiceNode {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
