//! Raw connections (no hub protocol) over long polling and Server-Sent Events, driven with plain
//! HTTP: the transport rules of TransportProtocols.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use common::{http, serve};
use signalbox::{ConnectionEndpoint, ConnectionOptions, HubRouterExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

fn echo(options: ConnectionOptions) -> ConnectionEndpoint {
    echo_reporting(options, mpsc::channel(1).0)
}

/// [`echo`] that reports each chunk on `echoed` once it is queued back to the client (reports
/// that find the channel full or closed are dropped).
fn echo_reporting(options: ConnectionOptions, echoed: mpsc::Sender<Bytes>) -> ConnectionEndpoint {
    ConnectionEndpoint::new(move |mut connection| {
        let echoed = echoed.clone();
        async move {
            while let Some(data) = connection.recv().await {
                if !connection.send(data.clone()).await {
                    break;
                }
                let _ = echoed.try_send(data);
            }
        }
    })
    .options(options)
}

async fn negotiate(addr: std::net::SocketAddr) -> String {
    let n = http(addr, "POST", "/echo/negotiate?negotiateVersion=1", &[], b"").await;
    n.json()["connectionToken"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn long_polling_lifecycle() {
    // Room for every chunk this test posts.
    let (echoed_tx, mut echoed) = mpsc::channel(16);
    let addr = serve(Router::new().map_connection(
        "/echo",
        echo_reporting(
            ConnectionOptions::default().long_poll_timeout(Duration::from_millis(300)),
            echoed_tx,
        ),
    ))
    .await;
    let id = negotiate(addr).await;
    let path = format!("/echo?id={id}");

    // The first poll returns at once, empty.
    let first = http(addr, "GET", &path, &[], b"").await;
    assert_eq!(first.status, 200);
    assert!(first.body.is_empty());
    assert_eq!(
        first.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(first.header("cache-control"), Some("no-cache, no-store"));

    // Sends are echoed on the next poll, several chunks in one body.
    assert_eq!(http(addr, "POST", &path, &[], b"hello ").await.status, 200);
    assert_eq!(http(addr, "POST", &path, &[], b"world").await.status, 200);
    assert_eq!(&echoed.recv().await.unwrap()[..], b"hello ");
    assert_eq!(&echoed.recv().await.unwrap()[..], b"world");
    let poll = http(addr, "GET", &path, &[], b"").await;
    assert_eq!((poll.status, poll.text().as_str()), (200, "hello world"));

    // An idle poll times out with 200 and no content.
    let idle = http(addr, "GET", &path, &[], b"").await;
    assert_eq!(idle.status, 200);
    assert!(idle.body.is_empty());

    // A newer poll supersedes the waiting one, which answers 204.
    let older =
        tokio::spawn(async move { http(addr, "GET", &format!("/echo?id={id}"), &[], b"").await });
    // Kept: the server exposes nothing that says the older poll is parked; this orders the two.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let path2 = path.clone();
    let newer = tokio::spawn(async move { http(addr, "GET", &path2, &[], b"").await });
    assert_eq!(older.await.unwrap().status, 204);
    let _ = newer.await.unwrap();

    // DELETE ends the connection: 202, then polls get 204 or 404.
    let delete = http(addr, "DELETE", &path, &[], b"").await;
    assert_eq!(delete.status, 202);
    common::eventually("polls to get 204 or 404 after DELETE", || async {
        let after = http(addr, "GET", &path, &[], b"").await;
        after.status == 204 || after.status == 404
    })
    .await;
}

#[tokio::test]
async fn data_posted_before_the_first_poll_is_kept() {
    let addr =
        serve(Router::new().map_connection("/echo", echo(ConnectionOptions::default()))).await;
    for version in ["0", "1"] {
        let n = http(
            addr,
            "POST",
            &format!("/echo/negotiate?negotiateVersion={version}"),
            &[],
            b"",
        )
        .await
        .json();
        let id = n["connectionToken"]
            .as_str()
            .or(n["connectionId"].as_str())
            .unwrap()
            .to_owned();
        let path = format!("/echo?id={id}");
        assert_eq!(http(addr, "POST", &path, &[], b"early").await.status, 200);
        let first = http(addr, "GET", &path, &[], b"").await;
        assert_eq!(
            (first.status, first.body.len()),
            (200, 0),
            "the first poll answers at once"
        );
        let poll = http(addr, "GET", &path, &[], b"").await;
        assert_eq!((poll.status, poll.text().as_str()), (200, "early"));
    }
}

#[tokio::test]
async fn transport_errors() {
    let addr =
        serve(Router::new().map_connection("/echo", echo(ConnectionOptions::default()))).await;
    let missing = http(addr, "GET", "/echo", &[], b"").await;
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (400, "Connection ID required")
    );
    let unknown = http(addr, "GET", "/echo?id=nope", &[], b"").await;
    assert_eq!(
        (unknown.status, unknown.text().as_str()),
        (404, "No Connection with that ID")
    );
    let id = negotiate(addr).await;
    http(addr, "GET", &format!("/echo?id={id}"), &[], b"").await;
    let sse = http(
        addr,
        "GET",
        &format!("/echo?id={id}"),
        &[("Accept", "text/event-stream")],
        b"",
    )
    .await;
    assert_eq!(
        (sse.status, sse.text().as_str()),
        (400, "Cannot change transports mid-connection")
    );

    let lp_only = serve(Router::new().map_connection(
        "/echo",
        echo(ConnectionOptions::default().transports([signalbox::TransportType::LongPolling])),
    ))
    .await;
    let n = http(
        lp_only,
        "POST",
        "/echo/negotiate?negotiateVersion=1",
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(n["availableTransports"].as_array().unwrap().len(), 1);
    let id = n["connectionToken"].as_str().unwrap();
    let sse = http(
        lp_only,
        "GET",
        &format!("/echo?id={id}"),
        &[("Accept", "text/event-stream")],
        b"",
    )
    .await;
    assert_eq!(
        (sse.status, sse.text().as_str()),
        (
            404,
            "ServerSentEvents transport not supported by this end point type"
        )
    );
}

#[tokio::test]
async fn abandoned_negotiations_and_polls_are_reaped() {
    let addr = serve(Router::new().map_connection(
        "/echo",
        echo(ConnectionOptions::default().disconnect_timeout(Duration::from_millis(200))),
    ))
    .await;
    let pending = negotiate(addr).await;
    let polling = negotiate(addr).await;
    http(addr, "GET", &format!("/echo?id={polling}"), &[], b"").await;
    // The reaper runs once a second. Probe the polling connection only (its echo consumes what
    // is posted); the pending one, negotiated earlier, goes in the same pass.
    common::eventually("the polling connection to be reaped", || async {
        let r = http(addr, "POST", &format!("/echo?id={polling}"), &[], b"x").await;
        r.status == 404
    })
    .await;
    let r = http(addr, "POST", &format!("/echo?id={pending}"), &[], b"x").await;
    assert_eq!(r.status, 404, "connection {pending} was reaped");
}

#[tokio::test]
async fn server_sent_events_stream() {
    let addr =
        serve(Router::new().map_connection("/echo", echo(ConnectionOptions::default()))).await;
    let id = negotiate(addr).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET /echo?id={id} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    // Headers and the opening comment arrive before any data.
    while !String::from_utf8_lossy(&received).contains(":\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        received.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&received).to_string();
    assert!(head.starts_with("HTTP/1.1 200"));
    assert!(
        head.to_lowercase()
            .contains("content-type: text/event-stream")
    );
    assert!(head.to_lowercase().contains("content-encoding: identity"));

    assert_eq!(
        http(
            addr,
            "POST",
            &format!("/echo?id={id}"),
            &[],
            b"line1\nline2"
        )
        .await
        .status,
        200
    );
    while !String::from_utf8_lossy(&received).contains("data: line2\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        received.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&received).contains("data: line1\r\ndata: line2\r\n\r\n"));

    // Closing the stream ends the connection.
    drop(stream);
    common::eventually("the connection to end with its stream", || async {
        http(addr, "POST", &format!("/echo?id={id}"), &[], b"x")
            .await
            .status
            == 404
    })
    .await;
}

/// Reads until the server's close frame; `None` if the socket ended without one.
async fn server_close(
    ws: &mut common::Ws,
) -> Option<Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Close(frame)) => return Some(frame),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// A WebSocket client closing a raw connection with a status code gets the same code back
/// (RFC 6455 §5.5.1), both negotiated and not: the official functional tests expect a clean
/// close with 1000, not 1005.
#[tokio::test]
async fn websocket_close_codes_are_echoed() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let addr =
        serve(Router::new().map_connection("/echo", echo(ConnectionOptions::default()))).await;
    for (code, reason) in [(1000u16, ""), (4001, "bye")] {
        for negotiated in [false, true] {
            let path = if negotiated {
                format!("/echo?id={}", negotiate(addr).await)
            } else {
                "/echo".to_owned()
            };
            let mut ws = common::ws_connect(addr, &path, None).await.unwrap();
            // The connection works first: a message is echoed.
            ws.send(Message::text("ping")).await.unwrap();
            loop {
                match futures_util::StreamExt::next(&mut ws).await {
                    Some(Ok(Message::Text(text))) => {
                        assert_eq!(text.as_str(), "ping");
                        break;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("no echo: {other:?}"),
                }
            }
            ws.send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            })))
            .await
            .unwrap();
            let frame = server_close(&mut ws)
                .await
                .unwrap_or_else(|| panic!("{path}: no close frame from the server"))
                .unwrap_or_else(|| panic!("{path}: the server's close frame has no code"));
            assert_eq!(
                (u16::from(frame.code), frame.reason.as_str()),
                (code, reason),
                "{path}"
            );
        }
    }
}

/// The server answers a client's close frame at once, echoing its code, even while the handler
/// is still busy after the connection ended (RFC 6455 §5.5.1: "as soon as practical"); the
/// client would otherwise wait for the handler and give up with 1006.
#[tokio::test]
async fn websocket_close_is_echoed_while_the_handler_is_still_running() {
    use futures_util::SinkExt;
    use std::sync::Arc;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let release = Arc::new(tokio::sync::Notify::new());
    let ended = Arc::new(tokio::sync::Notify::new());
    let endpoint = {
        let (release, ended) = (release.clone(), ended.clone());
        ConnectionEndpoint::new(move |mut connection| {
            let (release, ended) = (release.clone(), ended.clone());
            async move {
                while connection.recv().await.is_some() {}
                ended.notify_one();
                // Still holding the connection (e.g. cleaning up) after the client left.
                release.notified().await;
            }
        })
    };
    let addr = serve(Router::new().map_connection("/echo", endpoint)).await;
    let mut ws = common::ws_connect(addr, "/echo", None).await.unwrap();
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4001),
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(5), server_close(&mut ws))
        .await
        .expect("no close frame while the handler runs")
        .expect("the socket ended without a close frame")
        .expect("the close frame has no code");
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4001, "bye")
    );
    ended.notified().await;
    release.notify_one();
}
