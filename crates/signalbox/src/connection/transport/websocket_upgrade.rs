//! The WebSocket opening handshake (RFC 6455 §4.2) for sockets driven by
//! [`Driver`](super::websocket_driver::Driver): the request is checked as axum checks it (same
//! rejections), and the answer is built here so that the upgraded connection comes back raw.

use axum::extract::FromRequestParts;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Response};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderValue, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use tungstenite::handshake::derive_accept_key;

/// An accepted handshake: the response to send, and the upgraded connection to come.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) response: Response,
    pub(crate) upgrade: OnUpgrade,
}

/// Checks a WebSocket upgrade request; the error is the response to send instead.
#[allow(clippy::result_large_err)]
pub(crate) async fn accept(parts: &mut http::request::Parts) -> Result<Accepted, Response> {
    // Kept before axum's check takes it out of the request.
    let upgrade = parts.extensions.get::<OnUpgrade>().cloned();
    // Only the check: the socket is not axum's.
    drop(
        WebSocketUpgrade::from_request_parts(parts, &())
            .await
            .map_err(IntoResponse::into_response)?,
    );
    let Some(upgrade) = upgrade else {
        return Err(StatusCode::UPGRADE_REQUIRED.into_response());
    };
    let response = if parts.version <= Version::HTTP_11 {
        let Some(key) = parts.headers.get(SEC_WEBSOCKET_KEY) else {
            return Err(StatusCode::BAD_REQUEST.into_response());
        };
        let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) else {
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (CONNECTION, HeaderValue::from_static("upgrade")),
                (UPGRADE, HeaderValue::from_static("websocket")),
                (SEC_WEBSOCKET_ACCEPT, accept),
            ],
        )
            .into_response()
    } else {
        // HTTP/2 (RFC 8441): the CONNECT stream is the socket.
        StatusCode::OK.into_response()
    };
    Ok(Accepted { response, upgrade })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_with_the_accept_key_of_rfc_6455() {
        let request = http::Request::get("/hub")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .extension(hyper_upgrade_for_test())
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        let accepted = accept(&mut parts).await.unwrap();
        assert_eq!(accepted.response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            accepted.response.headers()[SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn refuses_a_request_without_upgrade_headers() {
        let request = http::Request::get("/hub")
            .extension(hyper_upgrade_for_test())
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        let refused = accept(&mut parts).await.unwrap_err();
        assert!(refused.status().is_client_error());
    }

    /// An upgrade handle as hyper puts in requests (never fulfilled here).
    fn hyper_upgrade_for_test() -> OnUpgrade {
        let mut request = http::Request::new(());
        hyper::upgrade::on(&mut request)
    }
}
