//! Streams, upload streams, client results and every transport: a hub at `/hubs/features` with
//! stateful reconnect allowed, the same hub without WebSockets at `/hubs/features-nows`, and
//! `GET /clientresult/{connectionId}` asking a client for a value from a plain HTTP handler.
//!
//! Run: `cargo run -p signalbox --example streaming -- --listen 127.0.0.1:5001`

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use clap::Parser;
use futures_util::{StreamExt, stream};
use serde_json::Value;
use signalbox::hub::UploadStream;
use signalbox::{
    Caller, ConnectionOptions, Hub, HubContext, HubError, HubOptions, HubRouterExt, TransportType,
};

#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:5001")]
    listen: SocketAddr,
}

fn features_hub(transports: Vec<TransportType>) -> Hub {
    Hub::builder("features")
        .options(HubOptions::default().enable_detailed_errors(true))
        .connection_options(
            ConnectionOptions::default()
                .transports(transports)
                .allow_stateful_reconnect(true),
        )
        .method("Echo", |_c: Caller, (value,): (Value,)| async move {
            Ok::<_, HubError>(value)
        })
        .method("GetTransport", |c: Caller, ()| async move {
            Ok::<_, HubError>(c.transport().name())
        })
        .method("GetConnectionId", |c: Caller, ()| async move {
            Ok::<_, HubError>(c.connection_id().to_owned())
        })
        .method("Broadcast", |c: Caller, (message,): (String,)| async move {
            c.clients().all().send("Broadcast", (message,)).await?;
            Ok::<_, HubError>(())
        })
        .method(
            "SendToMe",
            |c: Caller, (count, delay_ms): (u32, u64)| async move {
                // Numbered messages to the caller, spaced out: what a reconnecting client must not lose.
                for i in 0..count {
                    c.clients().caller().send("Tick", (i,)).await?;
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                Ok::<_, HubError>(count)
            },
        )
        .stream(
            "Counter",
            |_c: Caller, (count, delay_ms): (u32, u64)| async move {
                Ok::<_, HubError>(stream::iter(0..count).then(move |i| async move {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    Ok::<_, HubError>(i)
                }))
            },
        )
        .stream("Infinite", |c: Caller, ()| async move {
            let token = c.cancellation_token();
            tokio::spawn(async move {
                token.cancelled().await;
                // The client may be gone already; nothing to do then.
                let _ = c.clients().caller().send("StreamCanceled", ()).await;
            });
            Ok::<_, HubError>(stream::pending::<Result<u32, HubError>>())
        })
        .stream("FailingStream", |_c: Caller, ()| async move {
            Ok::<_, HubError>(stream::iter([Ok(1), Err(HubError::new("stream broke"))]))
        })
        .method(
            "Concat",
            |_c: Caller, (mut parts,): (UploadStream<String>,)| async move {
                let mut text = String::new();
                while let Some(part) = parts.next().await {
                    text.push_str(&part?);
                }
                Ok::<_, HubError>(text)
            },
        )
        .method(
            "ScaledSum",
            |_c: Caller, (factor, mut numbers): (i64, UploadStream<i64>)| async move {
                let mut sum = 0;
                while let Some(n) = numbers.next().await {
                    sum += n? * factor;
                }
                Ok::<_, HubError>(sum)
            },
        )
        .method(
            "AskClient",
            |c: Caller, (question,): (String,)| async move {
                let answer: Value = c
                    .clients()
                    .caller()
                    .invoke("Ask", (question,))
                    .await
                    .map_err(|e| HubError::new(e.to_string()))?;
                Ok::<_, HubError>(answer)
            },
        )
        .build()
}

async fn client_result(State(hub): State<HubContext>, Path(connection_id): Path<String>) -> String {
    let client = hub.clients().client(connection_id);
    let ask = client.invoke::<i64>("Result", ());
    match tokio::time::timeout(Duration::from_secs(10), ask).await {
        Ok(Ok(value)) => value.to_string(),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "timed out".to_owned(),
    }
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
    let hub = features_hub(TransportType::ALL.to_vec());
    let context = hub.context();
    let app = Router::new()
        .route("/clientresult/{connection_id}", get(client_result))
        .with_state(context)
        .map_hub("/hubs/features", hub)
        .map_hub(
            "/hubs/features-nows",
            features_hub(vec![
                TransportType::ServerSentEvents,
                TransportType::LongPolling,
            ]),
        );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    #[allow(clippy::print_stdout)]
    {
        println!("Now listening on: http://{addr}");
    }
    axum::serve(listener, app).await?;
    Ok(())
}
