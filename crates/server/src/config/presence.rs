//! Presence: who is told when a user goes online or offline.

use figment::value::Value;

use super::ConfigError;
use super::setting::Kind;
use super::settings as s;
use super::values::Values;

/// Which connections receive `PresenceChanged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PresenceBroadcast {
    /// Only the connections that asked (`WatchPresence`) for the user, or for everyone (default).
    #[default]
    Watchers,
    /// Every connection of the hub, whether it asked or not.
    All,
    /// Nobody: presence is still recorded (REST, `GetOnlineUsers`, webhooks) but not pushed.
    Off,
}

impl PresenceBroadcast {
    /// Parses `watchers`, `all` or `off`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "watchers" => Some(Self::Watchers),
            "all" => Some(Self::All),
            "off" | "none" => Some(Self::Off),
            _ => None,
        }
    }
}

impl Kind for PresenceBroadcast {
    type Literal = Self;
    const ZERO: Self = Self::Watchers;
    const NAME: &'static str = "presence broadcast";
    fn from_literal(literal: Self) -> Self {
        literal
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        let text = value.as_str().unwrap_or_default();
        Self::parse(text).ok_or_else(|| format!("{text:?} is not one of watchers, all, off"))
    }
    fn show(&self) -> String {
        match self {
            Self::Watchers => "watchers",
            Self::All => "all",
            Self::Off => "off",
        }
        .to_owned()
    }
}

/// Presence.
#[derive(Debug, Clone, Copy, Default)]
pub struct PresenceConfig {
    /// Who receives `PresenceChanged`. Default `watchers`.
    pub broadcast: PresenceBroadcast,
}

/// The presence settings.
pub(super) fn resolve(values: &Values) -> Result<PresenceConfig, ConfigError> {
    Ok(PresenceConfig {
        broadcast: values.value(&s::PRESENCE_BROADCAST)?,
    })
}
