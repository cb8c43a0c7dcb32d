//! Negotiate wire types (spec §2): the JSON body of `POST {hub}/negotiate` responses, and the
//! server's negotiate-version selection.

use serde::{Deserialize, Serialize};

use crate::protocol::TransferFormat;

/// The highest negotiate version the server speaks (1 = separate connection id and token).
pub const MAX_NEGOTIATE_VERSION: u32 = 1;

/// A transport a client may use. Serialised as its .NET name (`"WebSockets"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransportType {
    /// WebSockets (full duplex).
    WebSockets,
    /// Server-Sent Events for receiving, HTTP POST for sending (text only).
    ServerSentEvents,
    /// HTTP long polling for receiving, HTTP POST for sending.
    LongPolling,
}

impl TransportType {
    /// Every transport, in the order servers list them.
    pub const ALL: [TransportType; 3] = [
        TransportType::WebSockets,
        TransportType::ServerSentEvents,
        TransportType::LongPolling,
    ];

    /// `"WebSockets"`, `"ServerSentEvents"` or `"LongPolling"`.
    pub fn name(self) -> &'static str {
        match self {
            TransportType::WebSockets => "WebSockets",
            TransportType::ServerSentEvents => "ServerSentEvents",
            TransportType::LongPolling => "LongPolling",
        }
    }

    /// The transfer formats the transport can carry (SSE is text only).
    pub fn transfer_formats(self) -> Vec<TransferFormat> {
        match self {
            TransportType::ServerSentEvents => vec![TransferFormat::Text],
            TransportType::WebSockets | TransportType::LongPolling => {
                vec![TransferFormat::Text, TransferFormat::Binary]
            }
        }
    }
}

impl std::fmt::Display for TransportType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of `availableTransports`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailableTransport {
    /// The transport.
    pub transport: TransportType,
    /// The transfer formats it supports.
    pub transfer_formats: Vec<TransferFormat>,
}

impl AvailableTransport {
    /// The entry for `transport` with all the formats it can carry.
    pub fn new(transport: TransportType) -> Self {
        AvailableTransport {
            transport,
            transfer_formats: transport.transfer_formats(),
        }
    }
}

/// A successful negotiate response. Field order is the wire order written by .NET.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NegotiateResponse {
    /// Written only when true: only if the client asked for stateful reconnect and it is allowed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_stateful_reconnect: bool,
    /// The selected negotiate version (always written, even 0).
    pub negotiate_version: u32,
    /// The public connection id.
    pub connection_id: String,
    /// The secret connection token (negotiate version ≥ 1 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_token: Option<String>,
    /// Transports in the order the client should try them.
    pub available_transports: Vec<AvailableTransport>,
    /// Seconds until the caller's token expires, written only when the server allows
    /// authentication refresh and the token has an expiry (ASP.NET Core 11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_lifetime_seconds: Option<u64>,
}

/// The success answer of `POST {hub}/refresh` (ASP.NET Core 11 authentication refresh):
/// `{"tokenLifetimeSeconds":n}`, or `{}` when the new token has no expiry. Failures are
/// `{"error":"<code>"}` ([`NegotiateError`]'s shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshResponse {
    /// Seconds until the new token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_lifetime_seconds: Option<u64>,
}

/// A redirect response (Azure SignalR Service style): negotiate again at `url`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NegotiateRedirect {
    /// Where to negotiate next.
    pub url: String,
    /// Bearer token to use from now on.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub access_token: Option<String>,
}

/// A negotiate failure, returned with HTTP 200 (`{"error":"…"}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NegotiateError {
    /// The error text shown by clients.
    pub error: String,
}

/// Selects the negotiate version from the `negotiateVersion` query value.
///
/// Absent → 0; not an integer → `"The client requested a non-integer protocol version."`;
/// below `minimum` → `"The client requested version '{n}', but the server does not support
/// this version."`; above 1 → clamped to 1.
pub fn select_negotiate_version(requested: Option<&str>, minimum: u32) -> Result<u32, String> {
    let requested = match requested {
        None => 0,
        Some(text) => {
            let text = text.trim();
            let text = text.strip_prefix('+').unwrap_or(text);
            text.parse::<i32>()
                .map_err(|_| "The client requested a non-integer protocol version.".to_owned())?
        }
    };
    if i64::from(requested) < i64::from(minimum) {
        return Err(format!(
            "The client requested version '{requested}', but the server does not support this version."
        ));
    }
    Ok(u32::try_from(requested)
        .unwrap_or(0)
        .min(MAX_NEGOTIATE_VERSION))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_transports() -> Vec<AvailableTransport> {
        TransportType::ALL
            .into_iter()
            .map(AvailableTransport::new)
            .collect()
    }

    #[test]
    fn response_v1_wire_form() {
        let response = NegotiateResponse {
            use_stateful_reconnect: false,
            negotiate_version: 1,
            connection_id: "id".into(),
            connection_token: Some("token".into()),
            available_transports: all_transports(),
            token_lifetime_seconds: None,
        };
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"negotiateVersion":1,"connectionId":"id","connectionToken":"token","availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]},{"transport":"ServerSentEvents","transferFormats":["Text"]},{"transport":"LongPolling","transferFormats":["Text","Binary"]}]}"#
        );
    }

    #[test]
    fn response_v0_and_stateful() {
        let response = NegotiateResponse {
            use_stateful_reconnect: true,
            negotiate_version: 0,
            connection_id: "id".into(),
            connection_token: None,
            available_transports: vec![AvailableTransport::new(TransportType::WebSockets)],
            token_lifetime_seconds: None,
        };
        let text = serde_json::to_string(&response).unwrap();
        assert_eq!(
            text,
            r#"{"useStatefulReconnect":true,"negotiateVersion":0,"connectionId":"id","availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]}]}"#
        );
        let back: NegotiateResponse = serde_json::from_str(&text).unwrap();
        assert!(back.use_stateful_reconnect);
        assert_eq!(back.connection_token, None);
        // unknown properties are ignored, optional ones default
        let back: NegotiateResponse = serde_json::from_str(
            r#"{"negotiateVersion":1,"connectionId":"a","connectionToken":"b","availableTransports":[],"x":1}"#,
        )
        .unwrap();
        assert!(!back.use_stateful_reconnect);
    }

    #[test]
    fn token_lifetime_and_refresh_wire_form() {
        let response = NegotiateResponse {
            use_stateful_reconnect: false,
            negotiate_version: 1,
            connection_id: "id".into(),
            connection_token: Some("token".into()),
            available_transports: vec![],
            token_lifetime_seconds: Some(3600),
        };
        let text = serde_json::to_string(&response).unwrap();
        assert_eq!(
            text,
            r#"{"negotiateVersion":1,"connectionId":"id","connectionToken":"token","availableTransports":[],"tokenLifetimeSeconds":3600}"#
        );
        let back: NegotiateResponse = serde_json::from_str(&text).unwrap();
        assert_eq!(back.token_lifetime_seconds, Some(3600));
        let refreshed = RefreshResponse {
            token_lifetime_seconds: Some(60),
        };
        assert_eq!(
            serde_json::to_string(&refreshed).unwrap(),
            r#"{"tokenLifetimeSeconds":60}"#
        );
        assert_eq!(
            serde_json::to_string(&RefreshResponse::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn redirect_and_error() {
        let redirect = NegotiateRedirect {
            url: "https://x/chat".into(),
            access_token: None,
        };
        assert_eq!(
            serde_json::to_string(&redirect).unwrap(),
            r#"{"url":"https://x/chat"}"#
        );
        let redirect = NegotiateRedirect {
            url: "u".into(),
            access_token: Some("t".into()),
        };
        assert_eq!(
            serde_json::to_string(&redirect).unwrap(),
            r#"{"url":"u","accessToken":"t"}"#
        );
        let error = NegotiateError {
            error: "bad".into(),
        };
        assert_eq!(serde_json::to_string(&error).unwrap(), r#"{"error":"bad"}"#);
    }

    #[test]
    fn transport_names() {
        for t in TransportType::ALL {
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.name())
            );
            assert_eq!(t.to_string(), t.name());
        }
    }

    #[test]
    fn version_selection() {
        assert_eq!(select_negotiate_version(None, 0), Ok(0));
        assert_eq!(select_negotiate_version(Some("0"), 0), Ok(0));
        assert_eq!(select_negotiate_version(Some("1"), 0), Ok(1));
        assert_eq!(select_negotiate_version(Some("7"), 0), Ok(1));
        assert_eq!(select_negotiate_version(Some(" 1 "), 1), Ok(1));
        assert_eq!(
            select_negotiate_version(Some("abc"), 0),
            Err("The client requested a non-integer protocol version.".to_owned())
        );
        assert_eq!(
            select_negotiate_version(Some(""), 0),
            Err("The client requested a non-integer protocol version.".to_owned())
        );
        assert_eq!(
            select_negotiate_version(Some("0"), 1),
            Err(
                "The client requested version '0', but the server does not support this version."
                    .to_owned()
            )
        );
        assert_eq!(
            select_negotiate_version(None, 1),
            Err(
                "The client requested version '0', but the server does not support this version."
                    .to_owned()
            )
        );
        assert_eq!(
            select_negotiate_version(Some("-1"), 0),
            Err(
                "The client requested version '-1', but the server does not support this version."
                    .to_owned()
            )
        );
    }
}
