//! Server-Sent Events (TransportProtocols.md, "Server-Sent Events"): the server-to-client half is
//! one long `text/event-stream` response, the client-to-server half is POST requests.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::body::Body;
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{StreamExt, future};
use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, StatusCode};
use signalbox_protocol::TransportType;

use super::receiver_stream;
use crate::auth::Principal;
use crate::connection::manager::ConnectionEntry;
use crate::connection::{Connection, HttpRequestInfo};

/// Formats one frame as an SSE event: `data: <line>\r\n` per line, then `\r\n`.
pub(crate) fn format_event(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 16);
    if payload.is_empty() {
        out.put_slice(b"\r\n");
        return out.freeze();
    }
    for line in payload.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.put_slice(b"data: ");
        out.put_slice(line);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// Starts an SSE connection: returns the hub's side and the streaming response.
pub(crate) fn connect(
    entry: &Arc<ConnectionEntry>,
    principal: Option<Principal>,
    request: Arc<HttpRequestInfo>,
    queue_capacity: usize,
) -> (Connection, Response) {
    let (_, inbound_rx) = entry.take_inbound();
    let (outbound_tx, outbound_rx) = crate::connection::outbound::channel(queue_capacity);
    let connection = Connection {
        id: entry.id.clone(),
        transport: TransportType::ServerSentEvents,
        principal,
        auth: None,
        request,
        inbound: receiver_stream(inbound_rx)
            .take_until(entry.closed.clone().cancelled_owned())
            .boxed(),
        outbound: outbound_tx,
        binary: Arc::new(AtomicBool::new(false)),
        supports_binary: false,
        keep_alive: true,
        resumable: None,
        transport_closed: entry.closed.clone(),
    };
    // The client closing the response disposes the connection.
    let guard = entry.closed.clone().drop_guard();
    let events = futures_util::stream::once(future::ready(Bytes::from_static(b":\r\n")))
        .chain(outbound_rx.into_stream().map(|frame| {
            let event = format_event(&frame);
            crate::metrics::bytes_sent(TransportType::ServerSentEvents, event.len() as u64);
            event
        }))
        .map(move |chunk| {
            let _keep = &guard;
            Ok::<_, std::convert::Infallible>(chunk)
        });
    let mut response = Response::new(Body::from_stream(events));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("identity"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    (connection, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_events_per_line() {
        assert_eq!(
            &format_event(b"{\"type\":6}\x1e")[..],
            b"data: {\"type\":6}\x1e\r\n\r\n"
        );
        assert_eq!(
            &format_event(b"a\r\nb\nc")[..],
            b"data: a\r\ndata: b\r\ndata: c\r\n\r\n"
        );
        assert_eq!(&format_event(b"")[..], b"\r\n");
    }
}
