//! Operating the service: the log format, the metrics endpoint and the admin role.

use figment::value::Value;

use super::ConfigError;
use super::setting::Kind;
use super::settings as s;
use super::values::Values;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event (default).
    #[default]
    Human,
    /// One JSON object per line, with the fields of the enclosing spans.
    Json,
}

impl LogFormat {
    /// Parses `human` or `json`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "human" | "text" => Some(Self::Human),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

impl Kind for LogFormat {
    type Literal = Self;
    const ZERO: Self = Self::Human;
    const NAME: &'static str = "log format";
    fn from_literal(literal: Self) -> Self {
        literal
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        let text = value.as_str().unwrap_or_default();
        Self::parse(text).ok_or_else(|| format!("{text:?} is not one of human, json"))
    }
    fn show(&self) -> String {
        match self {
            Self::Human => "human",
            Self::Json => "json",
        }
        .to_owned()
    }
}

/// Logging.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// `human` (default) or `json`.
    pub format: LogFormat,
}

/// The Prometheus endpoint `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// Serve `/metrics` without authentication. Default false.
    pub public: bool,
    /// A static bearer token that may read `/metrics` (for scrapers), besides admin tokens.
    pub token: Option<String>,
}

/// The admin dashboard and API.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The role (`role` claim) that grants access. Default `admin`.
    pub role: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            role: s::ADMIN_ROLE.fallback(),
        }
    }
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_metrics_token(token: &String) -> Result<(), String> {
    if token.len() < 16 {
        return Err("use at least 16 random characters, e.g. `openssl rand -hex 24`".to_owned());
    }
    Ok(())
}

/// The logging, metrics and admin settings.
pub(super) fn resolve(
    values: &Values,
) -> Result<(LogConfig, MetricsConfig, AdminConfig), ConfigError> {
    let log = LogConfig {
        format: values.value(&s::LOG_FORMAT)?,
    };
    let metrics = MetricsConfig {
        public: values.value(&s::METRICS_PUBLIC)?,
        token: values.get(&s::METRICS_TOKEN)?,
    };
    // A blank role would grant nothing: it means the default.
    let role = values.value(&s::ADMIN_ROLE)?;
    let admin = AdminConfig {
        role: if role.trim().is_empty() {
            s::ADMIN_ROLE.fallback()
        } else {
            role
        },
    };
    Ok((log, metrics, admin))
}
