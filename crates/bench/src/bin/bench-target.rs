//! The server under test: signalbox with the benchmark hub (`--mode signalbox`, the default) or
//! the bare tokio-tungstenite broadcast baseline (`--mode bare-ws`).
//!
//! Prints `Now listening on: http://ADDR` (and, in bare-ws mode, `Publish API on: http://ADDR`).

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};
use signalbox_bench::target;

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Signalbox,
    BareWs,
}

#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// HS256 secret for the hub's and the publish API's tokens (at least 32 bytes).
    #[arg(long, env = "BENCH_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// Which server.
    #[arg(long, value_enum, default_value = "signalbox")]
    mode: Mode,
    /// Publish API address in bare-ws mode (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    http_listen: SocketAddr,
    /// Experiment: serve the hub without authentication (the publish API still checks tokens),
    /// to see what authentication costs per connection.
    #[arg(long, env = "BENCH_ANONYMOUS_HUB")]
    anonymous_hub: bool,
}

#[allow(clippy::print_stdout)]
fn announce(prefix: &str, addr: SocketAddr) {
    println!("{prefix}: http://{addr}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    signalbox_bench::sys::raise_nofile();
    let listener = target::bind(args.listen)?;
    announce("Now listening on", listener.local_addr()?);
    match args.mode {
        Mode::Signalbox => {
            target::serve_signalbox(listener, &args.jwt_secret, args.anonymous_hub).await
        }
        Mode::BareWs => {
            let http = target::bind(args.http_listen)?;
            announce("Publish API on", http.local_addr()?);
            target::serve_bare(listener, http).await
        }
    }
}
