//! Long polling (TransportProtocols.md, "Long Polling"): each GET returns what the server queued,
//! or waits for it; POST sends; DELETE ends the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::StreamExt;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, EXPIRES, PRAGMA};
use http::{HeaderValue, StatusCode};
use signalbox_protocol::TransportType;
use tokio_util::sync::CancellationToken;

use super::receiver_stream;
use crate::auth::Principal;
use crate::connection::manager::{ConnectionEntry, LongPoll};
use crate::connection::{Connection, HttpRequestInfo};

/// Most bytes returned by one poll (more stays queued for the next).
const MAX_POLL_BYTES: usize = 1024 * 1024;

fn no_cache(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        EXPIRES,
        HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    );
    response
}

fn octets(body: Body) -> Response {
    no_cache(
        (
            StatusCode::OK,
            [(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )],
            body,
        )
            .into_response(),
    )
}

/// The first poll: sets the connection up and answers 200 with an empty body at once.
pub(crate) fn connect(
    entry: &Arc<ConnectionEntry>,
    principal: Option<Principal>,
    request: Arc<HttpRequestInfo>,
    queue_capacity: usize,
) -> (Connection, Response) {
    let (_, inbound_rx) = entry.take_inbound();
    let (outbound_tx, outbound_rx) = crate::connection::outbound::channel(queue_capacity);
    let _ = entry.long_poll.set(Box::new(LongPoll::new(outbound_rx)));
    let connection = Connection {
        id: entry.id.clone(),
        transport: TransportType::LongPolling,
        principal,
        auth: None,
        request,
        inbound: receiver_stream(inbound_rx)
            .take_until(entry.closed.clone().cancelled_owned())
            .boxed(),
        outbound: outbound_tx,
        binary: Arc::new(AtomicBool::new(false)),
        supports_binary: true,
        keep_alive: false,
        resumable: None,
        transport_closed: entry.closed.clone(),
    };
    (connection, octets(Body::empty()))
}

/// Marks a poll in flight until dropped.
struct Active<'a>(&'a LongPoll);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if let Ok(mut idle) = self.0.idle_since.lock() {
            *idle = tokio::time::Instant::now();
        }
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A later poll: whatever is queued, else wait up to `timeout`; 204 when superseded or closed.
pub(crate) async fn poll(entry: &ConnectionEntry, timeout: Duration) -> Response {
    let Some(state) = entry.long_poll.get() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    state.active.fetch_add(1, Ordering::AcqRel);
    let _active = Active(state);
    let token = CancellationToken::new();
    if let Ok(mut current) = state.current.lock() {
        current.cancel();
        *current = token.clone();
    }
    let mut frames = tokio::select! {
        frames = state.frames.lock() => frames,
        () = token.cancelled() => return no_cache(StatusCode::NO_CONTENT.into_response()),
    };
    tokio::select! {
        biased;
        () = token.cancelled() => no_cache(StatusCode::NO_CONTENT.into_response()),
        first = frames.recv() => match first {
            Some(first) => {
                let mut body = BytesMut::from(&first[..]);
                while body.len() < MAX_POLL_BYTES {
                    match frames.try_recv() {
                        Some(more) => body.extend_from_slice(&more),
                        None => break,
                    }
                }
                crate::metrics::bytes_sent(TransportType::LongPolling, body.len() as u64);
                octets(Body::from(body.freeze()))
            }
            // The connection has ended: the client stops polling.
            None => no_cache(StatusCode::NO_CONTENT.into_response()),
        },
        () = tokio::time::sleep(timeout) => no_cache(
            (StatusCode::OK, [(CONTENT_TYPE, HeaderValue::from_static("text/plain"))], Body::empty())
                .into_response(),
        ),
    }
}
