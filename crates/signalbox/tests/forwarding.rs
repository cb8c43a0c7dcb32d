//! No sticky sessions: two nodes sharing a connection token secret and a node directory, behind a
//! round-robin front that sends each request to the next node. Long polling and Server-Sent
//! Events connect, send, receive and close whichever node each request reaches: the node that
//! does not hold the connection forwards the request to the one that does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use common::{HttpResponse, http, serve};
use futures_util::future::BoxFuture;
use signalbox::{ClusterNode, ConnectionEndpoint, ConnectionOptions, HubRouterExt, NodeDirectory};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN_SECRET: &[u8] = b"a connection token secret shared by both nodes";

/// Node id → base URL, filled once the nodes listen.
#[derive(Debug, Default)]
struct Directory(RwLock<HashMap<String, http::Uri>>);

impl Directory {
    fn set(&self, node: &str, addr: SocketAddr) {
        let url = format!("http://{addr}").parse().unwrap();
        self.0.write().unwrap().insert(node.to_owned(), url);
    }

    fn remove(&self, node: &str) {
        self.0.write().unwrap().remove(node);
    }
}

impl NodeDirectory for Directory {
    fn resolve<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Option<http::Uri>> {
        Box::pin(async move { self.0.read().unwrap().get(node).cloned() })
    }
}

/// An echo endpoint that prefixes each chunk with the id of the node running the connection.
fn echo_node(node: &'static str, directory: Arc<Directory>) -> ConnectionEndpoint {
    ConnectionEndpoint::new(move |mut connection| async move {
        while let Some(data) = connection.recv().await {
            let mut reply = format!("{node}:").into_bytes();
            reply.extend_from_slice(&data);
            if !connection.send(Bytes::from(reply)).await {
                break;
            }
        }
    })
    .options(
        ConnectionOptions::default()
            .long_poll_timeout(Duration::from_secs(5))
            .connection_token_secret(Arc::from(TOKEN_SECRET))
            .cluster_node(ClusterNode::new(node, directory)),
    )
}

/// Sends each request to the next node in turn, and counts the requests each node got.
struct Front {
    nodes: [SocketAddr; 2],
    next: AtomicUsize,
    hits: [AtomicUsize; 2],
}

impl Front {
    fn pick(&self) -> SocketAddr {
        let i = self.next.fetch_add(1, Ordering::SeqCst) % 2;
        self.hits[i].fetch_add(1, Ordering::SeqCst);
        self.nodes[i]
    }

    async fn request(&self, method: &str, path: &str, body: &[u8]) -> HttpResponse {
        http(self.pick(), method, path, &[], body).await
    }

    fn hits(&self) -> [usize; 2] {
        [
            self.hits[0].load(Ordering::SeqCst),
            self.hits[1].load(Ordering::SeqCst),
        ]
    }
}

struct Cluster {
    directory: Arc<Directory>,
    a: SocketAddr,
    b: SocketAddr,
    front: Front,
}

async fn cluster() -> Cluster {
    let directory = Arc::new(Directory::default());
    let a = serve(Router::new().map_connection("/echo", echo_node("a", directory.clone()))).await;
    let b = serve(Router::new().map_connection("/echo", echo_node("b", directory.clone()))).await;
    directory.set("a", a);
    directory.set("b", b);
    let front = Front {
        nodes: [a, b],
        next: AtomicUsize::new(0),
        hits: [AtomicUsize::new(0), AtomicUsize::new(0)],
    };
    Cluster {
        directory,
        a,
        b,
        front,
    }
}

/// Negotiates through the front (on node `a`, the first in turn).
async fn negotiate(front: &Front) -> String {
    let n = front
        .request("POST", "/echo/negotiate?negotiateVersion=1", b"")
        .await;
    assert_eq!(n.status, 200);
    n.json()["connectionToken"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn long_polling_needs_no_sticky_sessions() {
    let cluster = cluster().await;
    let front = &cluster.front;
    let token = negotiate(front).await;
    let path = format!("/echo?id={token}");

    // The first poll (reaching b, forwarded to a) answers at once, empty.
    let first = front.request("GET", &path, b"").await;
    assert_eq!((first.status, first.text().as_str()), (200, ""));
    // A send reaching a, then a poll reaching b.
    assert_eq!(front.request("POST", &path, b"hello").await.status, 200);
    let poll = front.request("GET", &path, b"").await;
    assert_eq!((poll.status, poll.text().as_str()), (200, "a:hello"));
    // A send reaching b, then a poll reaching a.
    assert_eq!(
        http(cluster.b, "POST", &path, &[], b"world").await.status,
        200
    );
    let poll = http(cluster.a, "GET", &path, &[], b"").await;
    assert_eq!((poll.status, poll.text().as_str()), (200, "a:world"));
    // A poll reaching b is held open until a send (also through b) answers it.
    let held = {
        let path = path.clone();
        let b = cluster.b;
        tokio::spawn(async move { http(b, "GET", &path, &[], b"").await })
    };
    common::eventually("the send to reach the held poll", || async {
        assert_eq!(http(cluster.b, "POST", &path, &[], b"!").await.status, 200);
        held.is_finished()
    })
    .await;
    let held = held.await.unwrap();
    assert_eq!(held.status, 200);
    assert!(held.text().starts_with("a:!"), "{}", held.text());

    // DELETE through b ends the connection on a.
    let delete = http(cluster.b, "DELETE", &path, &[], b"").await;
    assert_eq!(delete.status, 202);
    common::eventually("polls to get 204 or 404 after DELETE", || async {
        let after = front.request("GET", &path, b"").await;
        after.status == 204 || after.status == 404
    })
    .await;
    let [to_a, to_b] = front.hits();
    assert!(to_a >= 2 && to_b >= 2, "a got {to_a}, b got {to_b}");
}

/// Reads from `stream` into `received` until it contains `expected`.
async fn read_until(stream: &mut tokio::net::TcpStream, received: &mut Vec<u8>, expected: &str) {
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(received).contains(expected) {
        let n = tokio::time::timeout(common::EVENTUALLY, stream.read(&mut buf))
            .await
            .expect("the event stream stalled")
            .unwrap();
        assert!(
            n > 0,
            "the event stream ended: {}",
            String::from_utf8_lossy(received)
        );
        received.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn server_sent_events_need_no_sticky_sessions() {
    let cluster = cluster().await;
    let front = &cluster.front;
    let token = negotiate(front).await;
    let path = format!("/echo?id={token}");

    // The event stream reaches b, which streams a's events through.
    let node = front.pick();
    assert_eq!(node, cluster.b);
    let mut stream = tokio::net::TcpStream::connect(node).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {node}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    read_until(&mut stream, &mut received, ":\r\n").await;
    let head = String::from_utf8_lossy(&received).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");

    // Sends through either node reach the connection on a; the answers come down the stream.
    for (i, word) in ["one", "two", "three", "four"].iter().enumerate() {
        assert_eq!(
            front.request("POST", &path, word.as_bytes()).await.status,
            200,
            "send {i}"
        );
        read_until(
            &mut stream,
            &mut received,
            &format!("data: a:{word}\r\n\r\n"),
        )
        .await;
    }

    // Closing the stream at b ends the connection on a.
    drop(stream);
    common::eventually("the connection to end with its stream", || async {
        front.request("POST", &path, b"x").await.status == 404
    })
    .await;
    let [to_a, to_b] = front.hits();
    assert!(to_a >= 3 && to_b >= 3, "a got {to_a}, b got {to_b}");
}

#[tokio::test]
async fn an_unknown_or_unreachable_owner_is_an_unknown_connection() {
    let cluster = cluster().await;
    let n = http(
        cluster.a,
        "POST",
        "/echo/negotiate?negotiateVersion=1",
        &[],
        b"",
    )
    .await;
    let token = n.json()["connectionToken"].as_str().unwrap().to_owned();
    let path = format!("/echo?id={token}");
    assert_eq!(http(cluster.b, "GET", &path, &[], b"").await.status, 200);

    // A forwarded request is never forwarded again.
    let looped = http(
        cluster.b,
        "POST",
        &path,
        &[("X-SignalBox-Forwarded", "a")],
        b"x",
    )
    .await;
    assert_eq!(looped.status, 404);
    // A token that does not verify is not forwarded.
    let forged = http(cluster.b, "POST", &format!("{path}x"), &[], b"x").await;
    assert_eq!(forged.status, 404);

    // An owner that nobody can reach.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    cluster.directory.set("a", closed_addr);
    assert_eq!(http(cluster.b, "POST", &path, &[], b"x").await.status, 404);
    // An owner the directory does not know.
    cluster.directory.remove("a");
    let unknown = http(cluster.b, "GET", &path, &[], b"").await;
    assert_eq!(
        (unknown.status, unknown.text().as_str()),
        (404, "No Connection with that ID")
    );
    // The owner itself still serves it.
    assert_eq!(http(cluster.a, "POST", &path, &[], b"y").await.status, 200);
}

#[tokio::test]
async fn a_node_shutting_down_ends_the_event_streams_it_forwards() {
    use signalbox::Hub;
    let directory = Arc::new(Directory::default());
    let hub = |node: &'static str| {
        Hub::builder("chat")
            .connection_options(
                ConnectionOptions::default()
                    .connection_token_secret(Arc::from(TOKEN_SECRET))
                    .cluster_node(ClusterNode::new(node, directory.clone())),
            )
            .build()
    };
    let (hub_a, hub_b) = (hub("a"), hub("b"));
    let context_b = hub_b.context();
    let a = serve(Router::new().map_hub("/chat", hub_a)).await;
    let b = serve(Router::new().map_hub("/chat", hub_b)).await;
    directory.set("a", a);
    directory.set("b", b);

    let n = http(a, "POST", "/chat/negotiate?negotiateVersion=1", &[], b"").await;
    let token = n.json()["connectionToken"].as_str().unwrap().to_owned();
    let mut stream = tokio::net::TcpStream::connect(b).await.unwrap();
    let request = format!(
        "GET /chat?id={token} HTTP/1.1\r\nHost: {b}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    read_until(&mut stream, &mut received, ":\r\n").await;

    // b stops: the stream it passes through from a ends, and the client is free to reconnect.
    context_b.shutdown(Duration::from_secs(5)).await;
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(common::EVENTUALLY, stream.read(&mut buf))
            .await
            .expect("the forwarded stream to end when its node shuts down")
            .unwrap();
        if n == 0 {
            break;
        }
    }
    // The connection on a ended with it.
    common::eventually("the connection to end on a", || async {
        http(a, "POST", &format!("/chat?id={token}"), &[], b"{}\x1e")
            .await
            .status
            == 404
    })
    .await;
}
