//! Configuration: a TOML file, then `SIGNALBOX_…` environment variables, then command-line
//! flags, each overriding the one before (merged with `figment`); validated once at start.
//!
//! Every setting is declared once, in [`settings`]: its file key, variable, flag, default,
//! rules and one-line doc. The loader, the messages, `signalbox config` and the settings table
//! of `docs/configuration.md` (see [`docs::settings_table`]) follow from those declarations.

mod auth;
mod azure;
mod cluster;
mod cors;
pub mod docs;
mod env;
mod limits;
mod oidc;
mod ops;
mod presence;
pub mod report;
pub mod setting;
pub mod settings;
mod storage;
mod upstream;
mod values;
mod webhooks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use auth::{AuthConfig, MIN_SECRET_LENGTH, SigningAlgorithm, check_secret};
pub use azure::{AzureConfig, MIN_ACCESS_KEY_LENGTH};
pub use cluster::ClusterConfig;
pub use cors::CorsConfig;
pub use env::{OTHER_VARIABLES, UnknownVariable, report_unknown_env, unknown_variables};
pub use limits::RateLimitConfig;
pub use oidc::{ClientSecret, OidcClientConfig, OidcConfig};
pub use ops::{AdminConfig, LogConfig, LogFormat, MetricsConfig};
pub use presence::{PresenceBroadcast, PresenceConfig};
pub use storage::{DEFAULT_DATA_DIR, InboxConfig, default_database};
pub use upstream::{
    UPSTREAM_INITIAL_BACKOFF, UPSTREAM_MAX_BACKOFF, UpstreamConfig, UpstreamTemplate,
    redact_upstream_url, replace_ignore_case,
};
pub use values::{Origin, Overrides, Values};
pub use webhooks::WebhooksConfig;

use crate::client_ip::IpBlock;
use crate::clock::format_duration;
use settings as s;

/// A configuration that cannot be used, with a message saying what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// One setting has an invalid value.
    #[error("invalid value for {name}: {message}")]
    Invalid {
        /// The setting (file key / environment variable).
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The JWT secret is too short or too simple.
    #[error(
        "the JWT secret (SIGNALBOX_JWT_SECRET / auth.jwt_secret) is too weak: {0}; use at least {MIN_SECRET_LENGTH} random bytes, e.g. `openssl rand -base64 48`"
    )]
    WeakSecret(String),
    /// Subcommands that sign tokens need a configured key.
    #[error(
        "no JWT secret or signing key is configured: set SIGNALBOX_JWT_SECRET (or auth.jwt_secret / --jwt-secret), the same one the server uses"
    )]
    MissingSecret,
    /// `*` as an allowed origin together with credentials.
    #[error(
        "CORS: the origin \"*\" cannot be combined with credentials (cors.allow_credentials / SIGNALBOX_CORS_CREDENTIALS); list the allowed origins explicitly"
    )]
    WildcardWithCredentials,
}

/// The service configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The data directory: the SQLite database (unless `database` says otherwise) and, when no
    /// signing secret or key is configured, the generated one. Default `./signalbox-data`.
    pub data_dir: PathBuf,
    /// Refuse to start without an explicitly configured signing secret or key (production).
    /// Default false.
    pub require_config: bool,
    /// Database URL. Default `sqlite://{data_dir}/signalbox.db`.
    pub database: String,
    /// This process's node id: in presence rows, node heartbeats and the backplane. Default: the
    /// host name and a random suffix, new at every start.
    pub node: String,
    /// The backplane joining the nodes of a cluster (`redis://…`, `nats://…`); `None` = a single
    /// node, in-memory.
    pub backplane: Option<String>,
    /// The secret every node signs connection tokens with (required with a backplane), so a
    /// WebSocket may connect to any node.
    pub connection_token_secret: Option<String>,
    /// Node heartbeats and the removal of dead nodes' connections.
    pub cluster: ClusterConfig,
    /// Tokens and accounts.
    pub auth: AuthConfig,
    /// Cross-origin requests.
    pub cors: CorsConfig,
    /// The durable inbox.
    pub inbox: InboxConfig,
    /// Presence: who is told about users going online and offline.
    pub presence: PresenceConfig,
    /// An external OpenID Connect issuer whose tokens are accepted.
    pub oidc: Option<OidcConfig>,
    /// The page's sign-in as a confidential client of that issuer (`oidc.client_secret`,
    /// `oidc.redirect_url`): kept apart from [`OidcConfig`] so that it can be left out.
    pub oidc_client: OidcClientConfig,
    /// Logging.
    pub log: LogConfig,
    /// The Prometheus endpoint `/metrics`.
    pub metrics: MetricsConfig,
    /// The admin dashboard and API.
    pub admin: AdminConfig,
    /// Rate limits on sign-in and negotiate.
    pub rate_limit: RateLimitConfig,
    /// Reverse proxies whose `X-Forwarded-For` gives the client address (addresses or blocks
    /// such as `10.0.0.0/8`). Empty (default): the header is ignored.
    pub trusted_proxies: Vec<IpBlock>,
    /// Lifecycle webhooks; off unless a URL is configured.
    pub webhooks: WebhooksConfig,
    /// Azure SignalR Service compatibility; off unless access keys are configured.
    pub azure: AzureConfig,
    /// The webhooks of the Azure-compatible serverless hubs; off unless a template is configured.
    pub upstream: UpstreamConfig,
}

impl Default for Config {
    /// The declared defaults (a generated node id, the database in the default data directory).
    fn default() -> Self {
        let data_dir = s::DATA_DIR.fallback();
        Self {
            listen: s::LISTEN.fallback(),
            database: default_database(&data_dir),
            data_dir,
            require_config: s::REQUIRE_CONFIG.fallback(),
            node: cluster::generated_node(),
            backplane: None,
            connection_token_secret: None,
            cluster: ClusterConfig::default(),
            auth: AuthConfig::default(),
            cors: CorsConfig::declared(),
            inbox: InboxConfig::default(),
            presence: PresenceConfig::default(),
            oidc: None,
            oidc_client: OidcClientConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            admin: AdminConfig::default(),
            rate_limit: RateLimitConfig::default(),
            trusted_proxies: Vec::new(),
            webhooks: WebhooksConfig::default(),
            azure: AzureConfig::default(),
            upstream: UpstreamConfig::default(),
        }
    }
}

impl Config {
    /// Loads the configuration: the file (if any), the process environment, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_from(file, |name| std::env::var(name).ok(), overrides)
    }

    /// Like [`Config::load`], with the environment given as a lookup function.
    pub fn load_from(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        Self::resolve(&Values::load(file, &env, overrides)?)
    }

    /// Builds and validates the configuration from the merged layers.
    pub fn resolve(values: &Values) -> Result<Self, ConfigError> {
        // Every value is checked, also those of a part that is off (`oidc.*` without an issuer).
        for setting in settings::SETTINGS {
            setting.effective(values)?;
        }
        let (data_dir, database, inbox) = storage::resolve(values)?;
        let (node, backplane, connection_token_secret, cluster) = cluster::resolve(values)?;
        let (oidc, oidc_client) = oidc::resolve(values)?;
        let (log, metrics, admin) = ops::resolve(values)?;
        let (rate_limit, trusted_proxies) = limits::resolve(values)?;
        Ok(Self {
            listen: values.value(&s::LISTEN)?,
            data_dir,
            require_config: values.value(&s::REQUIRE_CONFIG)?,
            database,
            node,
            backplane,
            connection_token_secret,
            cluster,
            auth: auth::resolve(values)?,
            cors: cors::resolve(values)?,
            inbox,
            presence: presence::resolve(values)?,
            oidc,
            oidc_client,
            log,
            metrics,
            admin,
            rate_limit,
            trusted_proxies,
            webhooks: webhooks::resolve(values)?,
            azure: azure::resolve(values)?,
            upstream: upstream::resolve(values)?,
        })
    }

    /// A short human summary of the effective settings (no secrets).
    pub fn summary(&self) -> String {
        format!(
            "listen={} database={} node={} backplane={} alg={:?} access_ttl={} refresh_ttl={} registration={} cors_origins={:?} retention={} oidc={} oidc_client_secret={} azure_keys={}",
            self.listen,
            crate::db::redact_url(&self.database),
            self.node,
            self.backplane
                .as_deref()
                .map_or_else(|| "in-memory".to_owned(), report::redact_urls),
            self.auth.jwt_algorithm,
            format_duration(self.auth.access_token_ttl),
            format_duration(self.auth.refresh_token_ttl),
            self.auth.registration,
            self.cors.allowed_origins,
            format_duration(self.inbox.retention),
            self.oidc.as_ref().map_or("off", |o| o.issuer.as_str()),
            if self.oidc_client.client_secret.is_some() {
                "set"
            } else {
                "none"
            },
            self.azure.access_keys.len(),
        )
    }
}

#[cfg(test)]
mod tests;
