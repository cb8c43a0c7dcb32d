//! The lifecycle events a webhook receiver is told about, and the JSON body of each request.

use serde::Serialize;

/// The kind of a lifecycle event (the body's `type` and the `X-Signalbox-Event` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    /// A user went from no live connection to one (on any node).
    UserOnline,
    /// A user's last live connection closed (sent after the debounce).
    UserOffline,
    /// A connection to the notification hub completed its handshake.
    ConnectionConnected,
    /// A connection to the notification hub closed.
    ConnectionDisconnected,
}

impl EventType {
    /// Every event type, in the order of the docs.
    pub const ALL: [Self; 4] = [
        Self::UserOnline,
        Self::UserOffline,
        Self::ConnectionConnected,
        Self::ConnectionDisconnected,
    ];

    /// The names of every event type.
    pub const NAMES: &'static [&'static str] = &[
        "user.online",
        "user.offline",
        "connection.connected",
        "connection.disconnected",
    ];

    /// The name on the wire: `user.online`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserOnline => "user.online",
            Self::UserOffline => "user.offline",
            Self::ConnectionConnected => "connection.connected",
            Self::ConnectionDisconnected => "connection.disconnected",
        }
    }

    /// The event type named `name` (case-insensitive, surrounding blanks ignored).
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether it is one of the user's presence events (`user.*`), which are delivered in order
    /// per user.
    pub fn is_presence(self) -> bool {
        matches!(self, Self::UserOnline | Self::UserOffline)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of a webhook request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventBody {
    /// The event id: the same in every attempt (`X-Signalbox-Delivery`), for deduplication.
    pub id: String,
    /// The event type (`user.online`, …).
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// When it happened (RFC 3339, UTC, milliseconds).
    pub occurred_at: String,
    /// The user.
    pub user: String,
    /// The connection, for `connection.*` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    /// The node that recorded the event.
    pub node: String,
}

impl EventBody {
    /// The body as sent: a JSON object, fields in declaration order (`connection_id` only for
    /// `connection.*` events).
    pub fn to_json(&self) -> String {
        // Serialising strings cannot fail; the same object, keys sorted, if it ever did.
        serde_json::to_string(self).unwrap_or_else(|_| self.to_value().to_string())
    }

    fn to_value(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "id": self.id,
            "type": self.event_type,
            "occurred_at": self.occurred_at,
            "user": self.user,
            "node": self.node,
        });
        if let (Some(id), Some(object)) = (&self.connection_id, body.as_object_mut()) {
            object.insert("connection_id".to_owned(), id.clone().into());
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (t, name) in EventType::ALL.into_iter().zip(EventType::NAMES) {
            assert_eq!(t.as_str(), *name);
            assert_eq!(EventType::parse(name), Some(t));
            assert_eq!(
                EventType::parse(&format!(" {} ", name.to_uppercase())),
                Some(t)
            );
        }
        assert_eq!(EventType::parse("user.away"), None);
    }

    #[test]
    fn body_shape() {
        let body = EventBody {
            id: "e1".to_owned(),
            event_type: EventType::UserOnline.as_str(),
            occurred_at: "2026-01-01T00:00:00Z".to_owned(),
            user: "alice".to_owned(),
            connection_id: None,
            node: "n1".to_owned(),
        };
        let json: serde_json::Value = serde_json::from_str(&body.to_json()).unwrap_or_default();
        assert_eq!(json["type"], "user.online");
        assert_eq!(json["user"], "alice");
        assert!(json.get("connection_id").is_none());
        let with_connection = EventBody {
            connection_id: Some("c1".to_owned()),
            ..body.clone()
        };
        let json: serde_json::Value =
            serde_json::from_str(&with_connection.to_json()).unwrap_or_default();
        assert_eq!(json["connection_id"], "c1");
        assert_eq!(with_connection.to_value(), json);
        assert!(
            body.to_json()
                .starts_with(r#"{"id":"e1","type":"user.online","#)
        );
    }
}
