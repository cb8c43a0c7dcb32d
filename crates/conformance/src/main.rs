//! `signalbox-conformance`: a server reproducing the ASP.NET Core SignalR TypeScript
//! functional-test app (`src/SignalR/clients/ts/FunctionalTests`; spec §10), so SignalR client
//! test suites written against that app can run against signalbox.
//!
//! Run: `cargo run -p signalbox-conformance -- --listen 127.0.0.1:0`. When ready it prints
//! exactly `Now listening on: http://ADDR` on stdout; logs go to stderr (`RUST_LOG`).
//! `--static-dir` names where the client's web-worker bundle is (see [`static_files`]).
//!
//! ## Layout
//!
//! * [`app`]: the routes, hubs and pre-routing middleware put together.
//! * [`hubs`]: `TestHub` and `HubWithAuthorization`, one file each.
//! * [`echo`]: the raw `/echo` connection endpoint.
//! * [`complex_object`]: `ComplexObject` / `CustomObject` and their per-protocol wire forms.
//! * [`jwt`]: the startup key, `GET /generateJwtToken` and the validator.
//! * [`cors`]: the official app's permissive CORS.
//! * [`middleware`]: case-insensitive routes and the negotiate cookies.
//! * [`routes`]: `/redirect`, `/bad-negotiate`, `/echoredirect`, `/clientresult`, `/deployment`.
//! * [`static_files`]: the client bundle at `/lib/signalr-webworker/signalr.js`.

mod app;
mod complex_object;
mod cors;
mod echo;
mod hubs;
mod jwt;
mod middleware;
mod routes;
mod static_files;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use axum::ServiceExt as _;
use clap::Parser;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "A SignalR functional-test server (the official TS test app) on signalbox"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:5000")]
    listen: SocketAddr,

    /// Directory holding the client's web-worker bundle, served at
    /// `/lib/signalr-webworker/signalr.js`: `@microsoft/signalr`'s `dist/` directory (or the
    /// package directory, or a wwwroot with `lib/signalr-webworker/`). Without it that path
    /// answers 404.
    #[arg(long, env = "SIGNALBOX_CONFORMANCE_STATIC_DIR")]
    static_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let (issuer, auth) = jwt::TokenIssuer::generate()?;
    let static_files = static_files::StaticFiles::from_option(args.static_dir.as_ref())?;
    let app = app::app(issuer, auth, static_files);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "Now listening on: http://{addr}")?;
        stdout.flush()?;
    }
    tracing::info!(%addr, "conformance server ready");

    let serve = axum::serve(listener, app.into_make_service());
    tokio::select! {
        result = serve => result.context("server failed")?,
        () = shutdown_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM. Open connections are dropped rather than drained: this is a
/// test server, and test runners stop it with SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
