//! What the generator and the servers agree on: server kinds, URLs, tokens and the `Msg` payload.

use serde::{Deserialize, Serialize};

/// The hub path on every target.
pub const HUB_PATH: &str = "/hubs/bench";
/// The client method every published message invokes.
pub const MSG_TARGET: &str = "Msg";
/// The notification hub of the service (`signalbox serve`).
pub const SERVICE_HUB_PATH: &str = "/hubs/notifications";
/// The client method the service delivers notifications with.
pub const NOTIFICATION_TARGET: &str = "Notification";
/// The issuer the service expects on its own tokens (its default `auth.issuer`).
pub const SERVICE_ISSUER: &str = "signalbox";
/// The `typ` header the service requires on its own access tokens.
pub const SERVICE_TOKEN_TYPE: &str = "at+jwt";
/// Text of the notifications stored before a storm, delivered by the inbox replay.
pub const REPLAY_MESSAGE: &str = "replay";

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `bench-target --mode signalbox`: the library, authenticated hub.
    Signalbox,
    /// `bench-target --mode bare-ws`: tokio-tungstenite broadcast, no SignalR (the floor).
    BareWs,
    /// `baselines/aiosignalr_server.py`: the Python aiosignalr server from PyPI.
    Aiosignalr,
    /// `signalbox serve`: the notification service (storm and cluster scenarios only).
    #[value(skip)]
    Service,
}

impl Kind {
    /// Whether the target speaks SignalR (handshake, hub messages, pings).
    pub fn is_signalr(self) -> bool {
        !matches!(self, Kind::BareWs)
    }

    /// The hub path the generator connects to.
    pub fn hub_path(self) -> &'static str {
        if self == Kind::Service {
            SERVICE_HUB_PATH
        } else {
            HUB_PATH
        }
    }

    /// Short label for tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Signalbox => "signalbox",
            Kind::BareWs => "bare-ws",
            Kind::Aiosignalr => "aiosignalr",
            Kind::Service => "service",
        }
    }
}

/// Hub protocol used by the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// `json`.
    Json,
    /// `messagepack`.
    Messagepack,
}

impl Proto {
    /// The protocol implementation.
    pub fn protocol(self) -> signalbox_protocol::Protocol {
        match self {
            Proto::Json => signalbox_protocol::Protocol::Json,
            Proto::Messagepack => signalbox_protocol::Protocol::MessagePack,
        }
    }
}

/// The user id of connection number `index`.
pub fn user_of(index: usize) -> String {
    format!("u{index}")
}

/// The group of connection number `index` when there are `groups` groups.
pub fn group_of(index: usize, groups: usize) -> String {
    format!("g{}", index % groups.max(1))
}

/// An HS256 token for `user`, valid for two hours.
pub fn token(secret: &str, user: &str) -> anyhow::Result<String> {
    let now = crate::sys::now_us() / 1_000_000;
    let claims = serde_json::json!({"sub": user, "iat": now, "exp": now + 7200});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())?;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )?)
}

/// An access token as the service (`signalbox serve`) issues them: HS256 with `typ: at+jwt`,
/// its issuer, `sub` and `extra` claims (e.g. `role`, `permission`), valid for two hours.
pub fn service_token(
    secret: &str,
    user: &str,
    extra: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<String> {
    let now = crate::sys::now_us() / 1_000_000;
    let mut claims = extra.clone();
    claims.insert("sub".into(), user.into());
    claims.insert("iss".into(), SERVICE_ISSUER.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + 7200).into());
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some(SERVICE_TOKEN_TYPE.to_owned());
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// The text of a measured notification: `bench T PHASE SEQ` (T: publish time, µs since the
/// Unix epoch).
pub fn bench_message(t: u64, phase: u64, seq: u64) -> String {
    format!("bench {t} {phase} {seq}")
}

/// `(t, phase, seq)` from a measured notification's text.
pub fn parse_bench_message(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.strip_prefix("bench ")?.split(' ');
    let t = parts.next()?.parse().ok()?;
    let phase = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some((t, phase, seq))
}

/// Body of `POST /broadcast`, `/group` and `/publish` on every target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publish {
    /// Recipient user (`/publish`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Recipient group (`/group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Publish time, microseconds since the Unix epoch.
    pub t: u64,
    /// Measurement phase (messages of older phases are ignored by receivers).
    pub phase: u64,
    /// Sequence number within the phase.
    pub seq: u64,
    /// Padding to reach the payload size.
    #[serde(default)]
    pub pad: String,
}

impl Publish {
    /// The bare-WebSocket text form: `t phase seq pad`.
    pub fn bare_text(&self) -> String {
        format!("{} {} {} {}", self.t, self.phase, self.seq, self.pad)
    }
}

/// `(t, phase)` from a bare-WebSocket text frame.
pub fn parse_bare(text: &[u8]) -> Option<(u64, u64)> {
    let mut parts = text.split(|b| *b == b' ');
    let t = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let phase = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    Some((t, phase))
}
