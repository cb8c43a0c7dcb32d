//! Configuration: a TOML file, then `SIGNALBOX_…` environment variables, then command-line
//! flags, each overriding the one before; validated once at start. Every option, its default
//! and its variable are listed in `docs/configuration.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client_ip::IpBlock;
use crate::clock::{format_duration, parse_duration};

/// Minimum length of an HMAC secret, in bytes.
pub const MIN_SECRET_LENGTH: usize = 32;

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

/// Algorithm used to sign access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlgorithm {
    /// HMAC-SHA256 with `jwt_secret` (default).
    HS256,
    /// RSA PKCS#1 v1.5 SHA-256 with `jwt_private_key`.
    RS256,
    /// ECDSA P-256 SHA-256 with `jwt_private_key`.
    ES256,
}

impl SigningAlgorithm {
    fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_uppercase().as_str() {
            "HS256" => Some(Self::HS256),
            "RS256" => Some(Self::RS256),
            "ES256" => Some(Self::ES256),
            _ => None,
        }
    }
}

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
}

/// Rate limits (see [`crate::rate_limit`]).
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Whether any limit applies. Default true.
    pub enabled: bool,
    /// Per-IP burst of the sign-in endpoints (login, register, refresh, external), shared by
    /// the four; 0 turns the limit off. Default 20.
    pub auth_burst: u32,
    /// Tokens per second refilled into each sign-in bucket. Default 1.
    pub auth_per_second: f64,
    /// Per-IP burst of hub negotiate requests; 0 turns the limit off. Default 60.
    pub negotiate_burst: u32,
    /// Tokens per second refilled into each negotiate bucket. Default 20.
    pub negotiate_per_second: f64,
    /// Failed logins of one account before it backs off; 0 turns the backoff off. Default 5.
    pub login_failures: u32,
    /// The first backoff; doubled with each further failure. Default 1 second.
    pub login_backoff: Duration,
    /// The longest backoff. Default 5 minutes.
    pub login_backoff_max: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            auth_burst: 20,
            auth_per_second: 1.0,
            negotiate_burst: 60,
            negotiate_per_second: 20.0,
            login_failures: 5,
            login_backoff: Duration::from_secs(1),
            login_backoff_max: Duration::from_secs(300),
        }
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

/// Tokens and accounts.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// HMAC secret for HS256. `None` = a development secret is generated at start.
    pub jwt_secret: Option<String>,
    /// Whether `jwt_secret` was generated (development only).
    pub jwt_secret_generated: bool,
    /// Signing algorithm. Default HS256.
    pub jwt_algorithm: SigningAlgorithm,
    /// PEM private key for RS256/ES256.
    pub jwt_private_key: Option<PathBuf>,
    /// `kid` of the signing key. Default: none for HS256, `signalbox-1` otherwise.
    pub jwt_key_id: Option<String>,
    /// `iss` of issued tokens (and required on local tokens). Default `signalbox`.
    pub issuer: String,
    /// `aud` of issued tokens, if any.
    pub audience: Option<String>,
    /// Access token lifetime. Default 15 minutes.
    pub access_token_ttl: Duration,
    /// Refresh token lifetime. Default 30 days.
    pub refresh_token_ttl: Duration,
    /// Whether `POST /api/auth/register` is open. Default false.
    pub registration: bool,
    /// The claim that carries permissions. Default `permission`.
    pub permission_claim: String,
    /// The permission needed to send notifications. Default `notify`.
    pub notify_permission: String,
}

/// Cross-origin requests.
#[derive(Debug, Clone, Default)]
pub struct CorsConfig {
    /// Allowed origins (`https://app.example.com`); empty = no cross-origin access.
    pub allowed_origins: Vec<String>,
    /// Whether credentials (cookies, `Authorization`) may be sent. Default true.
    pub allow_credentials: bool,
    /// Refuse hub requests (negotiate, WebSocket, SSE, long polling) whose `Origin` is neither
    /// the service's own nor an allowed origin (see [`crate::origin`]). Default true.
    pub check_origin: bool,
}

/// The durable inbox.
#[derive(Debug, Clone)]
pub struct InboxConfig {
    /// How long notifications are kept. Default 30 days.
    pub retention: Duration,
}

/// Node heartbeats: each node records a heartbeat every `heartbeat_interval`; a node silent for
/// `node_timeout` is dead, and its connections are removed (its users go offline).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How often this node records its heartbeat. Default 5 seconds.
    pub heartbeat_interval: Duration,
    /// How long a node may be silent before it is considered dead. Default 15 seconds.
    pub node_timeout: Duration,
    /// Prefix of the backplane's channels; clusters sharing one Redis or NATS server need
    /// different prefixes. Default `signalbox`.
    pub channel_prefix: String,
}

/// An external OpenID Connect issuer.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer (`iss`), e.g. `https://accounts.google.com`.
    pub issuer: String,
    /// Discovery document URL. Default `{issuer}/.well-known/openid-configuration`.
    pub discovery_url: Option<String>,
    /// JWKS URL; skips discovery when set.
    pub jwks_url: Option<String>,
    /// Required `aud` (the client id).
    pub audience: Option<String>,
    /// The claim naming the local user. Default `email`.
    pub user_claim: String,
    /// Create a local account (no password) on first sign-in. Default false.
    pub auto_create_users: bool,
    /// How long fetched keys are trusted before a refresh. Default 1 hour.
    pub jwks_cache_ttl: Duration,
    /// Shortest interval between refetches caused by an unknown `kid`. Default 30 seconds.
    pub jwks_min_refresh_interval: Duration,
    /// The client id the web page's sign-in button uses (authorization code + PKCE). Default
    /// `audience`; without either the page shows no external sign-in.
    pub client_id: Option<String>,
    /// Scopes the web page asks for. Default `openid email profile`.
    pub scopes: String,
    /// The provider's name on the page's button. Default `Google` for Google's issuer, else
    /// the issuer's host.
    pub provider_name: Option<String>,
}

/// A client secret: its `Debug` never shows it; read it with [`ClientSecret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the token request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// The service's own client registration at the OpenID Connect issuer, for the server-side
/// authorization code flow (`/api/auth/oidc/start` → `/api/auth/oidc/callback`).
#[derive(Debug, Clone, Default)]
pub struct OidcClientConfig {
    /// The client secret (`oidc.client_secret` or the trimmed contents of
    /// `oidc.client_secret_file`). When set, the page signs in through the service (a
    /// confidential client) instead of running the code flow in the browser.
    pub client_secret: Option<ClientSecret>,
    /// The callback URL registered at the provider. Default: derived from each request,
    /// `{scheme}://{host}/api/auth/oidc/callback` (scheme `https` when a trusted proxy says
    /// `X-Forwarded-Proto: https`).
    pub redirect_url: Option<String>,
}

impl OidcConfig {
    /// The settings for `issuer` with every other setting at its default (no audience, users
    /// mapped by a verified `email`, no accounts created, keys trusted for an hour, refetched
    /// at most every 30 seconds for an unknown `kid`).
    pub fn new(issuer: &str) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            discovery_url: None,
            jwks_url: None,
            audience: None,
            user_claim: "email".to_owned(),
            auto_create_users: false,
            jwks_cache_ttl: Duration::from_secs(3600),
            jwks_min_refresh_interval: Duration::from_secs(30),
            client_id: None,
            scopes: "openid email profile".to_owned(),
            provider_name: None,
        }
    }

    /// The client id of the web page: `client_id`, else `audience`.
    pub fn browser_client_id(&self) -> Option<&str> {
        self.client_id.as_deref().or(self.audience.as_deref())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            require_config: false,
            database: default_database(Path::new(DEFAULT_DATA_DIR)),
            node: default_node(),
            backplane: None,
            connection_token_secret: None,
            cluster: ClusterConfig {
                heartbeat_interval: Duration::from_secs(5),
                node_timeout: Duration::from_secs(15),
                channel_prefix: "signalbox".to_owned(),
            },
            auth: AuthConfig {
                jwt_secret: None,
                jwt_secret_generated: false,
                jwt_algorithm: SigningAlgorithm::HS256,
                jwt_private_key: None,
                jwt_key_id: None,
                issuer: "signalbox".to_owned(),
                audience: None,
                access_token_ttl: Duration::from_secs(15 * 60),
                refresh_token_ttl: Duration::from_secs(30 * 86_400),
                registration: false,
                permission_claim: "permission".to_owned(),
                notify_permission: "notify".to_owned(),
            },
            cors: CorsConfig {
                allowed_origins: Vec::new(),
                allow_credentials: true,
                check_origin: true,
            },
            inbox: InboxConfig {
                retention: Duration::from_secs(30 * 86_400),
            },
            oidc: None,
            oidc_client: OidcClientConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            admin: AdminConfig {
                role: "admin".to_owned(),
            },
            rate_limit: RateLimitConfig::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// The host name and 8 random hex digits: unique per process, readable in presence rows.
fn default_node() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "signalbox".to_owned());
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = std::process::id().to_be_bytes();
    }
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}-{suffix}")
}

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "./signalbox-data";

/// The SQLite database in `data_dir`.
pub fn default_database(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("signalbox.db").display())
}

/// The settings that can be given as flags (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<String>,
    /// `--require-config`.
    pub require_config: bool,
    /// `--database`.
    pub database: Option<String>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--jwt-secret`.
    pub jwt_secret: Option<String>,
    /// `--backplane`.
    pub backplane: Option<String>,
    /// `--node-id`.
    pub node_id: Option<String>,
    /// `--connection-token-secret`.
    pub connection_token_secret: Option<String>,
    /// `--log-format`.
    pub log_format: Option<String>,
}

/// The configuration file's shape; every key is optional.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<String>,
    require_config: Option<bool>,
    database: Option<String>,
    node: Option<String>,
    node_id: Option<String>,
    backplane: Option<String>,
    connection_token_secret: Option<String>,
    cluster: FileCluster,
    auth: FileAuth,
    cors: FileCors,
    inbox: FileInbox,
    oidc: FileOidc,
    log: FileLog,
    metrics: FileMetrics,
    admin: FileAdmin,
    rate_limit: FileRateLimit,
    trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct FileRateLimit {
    enabled: Option<bool>,
    auth_burst: Option<u32>,
    auth_per_second: Option<f64>,
    negotiate_burst: Option<u32>,
    negotiate_per_second: Option<f64>,
    login_failures: Option<u32>,
    login_backoff: Option<String>,
    login_backoff_max: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct FileAuth {
    jwt_secret: Option<String>,
    jwt_algorithm: Option<String>,
    jwt_private_key: Option<String>,
    jwt_key_id: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    access_token_ttl: Option<String>,
    refresh_token_ttl: Option<String>,
    registration: Option<bool>,
    permission_claim: Option<String>,
    notify_permission: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct FileCors {
    allowed_origins: Option<Vec<String>>,
    allow_credentials: Option<bool>,
    check_origin: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct FileCluster {
    heartbeat_interval: Option<String>,
    node_timeout: Option<String>,
    channel_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct FileInbox {
    retention: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct FileOidc {
    issuer: Option<String>,
    discovery_url: Option<String>,
    jwks_url: Option<String>,
    audience: Option<String>,
    user_claim: Option<String>,
    auto_create_users: Option<bool>,
    jwks_cache_ttl: Option<String>,
    jwks_min_refresh_interval: Option<String>,
    client_id: Option<String>,
    scopes: Option<String>,
    provider_name: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    redirect_url: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct FileLog {
    format: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct FileMetrics {
    public: Option<bool>,
    token: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct FileAdmin {
    role: Option<String>,
}

/// Every key the configuration file accepts (`auth.jwt_secret`, …), sorted; the test of
/// `docs/configuration.md` checks that each is documented.
pub fn file_keys() -> Vec<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    let key = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&key, value, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut keys = Vec::new();
    if let Ok(value) = serde_json::to_value(FileConfig::default()) {
        walk("", &value, &mut keys);
    }
    keys.sort();
    keys
}

/// Environment variables read, with the file key each overrides.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("SIGNALBOX_LISTEN", "listen"),
    ("SIGNALBOX_DATA_DIR", "data_dir"),
    ("SIGNALBOX_REQUIRE_CONFIG", "require_config"),
    ("SIGNALBOX_DATABASE", "database"),
    ("SIGNALBOX_NODE_ID", "node_id"),
    ("SIGNALBOX_NODE", "node (an alias of node_id)"),
    ("SIGNALBOX_BACKPLANE", "backplane"),
    (
        "SIGNALBOX_CONNECTION_TOKEN_SECRET",
        "connection_token_secret",
    ),
    ("SIGNALBOX_HEARTBEAT_INTERVAL", "cluster.heartbeat_interval"),
    ("SIGNALBOX_NODE_TIMEOUT", "cluster.node_timeout"),
    ("SIGNALBOX_CHANNEL_PREFIX", "cluster.channel_prefix"),
    ("SIGNALBOX_JWT_SECRET", "auth.jwt_secret"),
    ("SIGNALBOX_JWT_ALGORITHM", "auth.jwt_algorithm"),
    ("SIGNALBOX_JWT_PRIVATE_KEY", "auth.jwt_private_key"),
    ("SIGNALBOX_JWT_KEY_ID", "auth.jwt_key_id"),
    ("SIGNALBOX_JWT_ISSUER", "auth.issuer"),
    ("SIGNALBOX_JWT_AUDIENCE", "auth.audience"),
    ("SIGNALBOX_ACCESS_TOKEN_TTL", "auth.access_token_ttl"),
    ("SIGNALBOX_REFRESH_TOKEN_TTL", "auth.refresh_token_ttl"),
    ("SIGNALBOX_REGISTRATION", "auth.registration"),
    ("SIGNALBOX_PERMISSION_CLAIM", "auth.permission_claim"),
    ("SIGNALBOX_NOTIFY_PERMISSION", "auth.notify_permission"),
    ("SIGNALBOX_CORS_ORIGINS", "cors.allowed_origins"),
    ("SIGNALBOX_CORS_CREDENTIALS", "cors.allow_credentials"),
    ("SIGNALBOX_CORS_CHECK_ORIGIN", "cors.check_origin"),
    ("SIGNALBOX_INBOX_RETENTION", "inbox.retention"),
    ("SIGNALBOX_OIDC_ISSUER", "oidc.issuer"),
    ("SIGNALBOX_OIDC_DISCOVERY_URL", "oidc.discovery_url"),
    ("SIGNALBOX_OIDC_JWKS_URL", "oidc.jwks_url"),
    ("SIGNALBOX_OIDC_AUDIENCE", "oidc.audience"),
    ("SIGNALBOX_OIDC_USER_CLAIM", "oidc.user_claim"),
    ("SIGNALBOX_OIDC_AUTO_CREATE_USERS", "oidc.auto_create_users"),
    ("SIGNALBOX_OIDC_JWKS_CACHE_TTL", "oidc.jwks_cache_ttl"),
    (
        "SIGNALBOX_OIDC_JWKS_MIN_REFRESH_INTERVAL",
        "oidc.jwks_min_refresh_interval",
    ),
    ("SIGNALBOX_OIDC_CLIENT_ID", "oidc.client_id"),
    ("SIGNALBOX_OIDC_SCOPES", "oidc.scopes"),
    ("SIGNALBOX_OIDC_PROVIDER_NAME", "oidc.provider_name"),
    ("SIGNALBOX_OIDC_CLIENT_SECRET", "oidc.client_secret"),
    (
        "SIGNALBOX_OIDC_CLIENT_SECRET_FILE",
        "oidc.client_secret_file",
    ),
    ("SIGNALBOX_OIDC_REDIRECT_URL", "oidc.redirect_url"),
    ("SIGNALBOX_LOG_FORMAT", "log.format"),
    ("SIGNALBOX_METRICS_PUBLIC", "metrics.public"),
    ("SIGNALBOX_METRICS_TOKEN", "metrics.token"),
    ("SIGNALBOX_ADMIN_ROLE", "admin.role"),
    ("SIGNALBOX_RATE_LIMIT", "rate_limit.enabled"),
    ("SIGNALBOX_RATE_LIMIT_AUTH_BURST", "rate_limit.auth_burst"),
    (
        "SIGNALBOX_RATE_LIMIT_AUTH_PER_SECOND",
        "rate_limit.auth_per_second",
    ),
    (
        "SIGNALBOX_RATE_LIMIT_NEGOTIATE_BURST",
        "rate_limit.negotiate_burst",
    ),
    (
        "SIGNALBOX_RATE_LIMIT_NEGOTIATE_PER_SECOND",
        "rate_limit.negotiate_per_second",
    ),
    (
        "SIGNALBOX_RATE_LIMIT_LOGIN_FAILURES",
        "rate_limit.login_failures",
    ),
    (
        "SIGNALBOX_RATE_LIMIT_LOGIN_BACKOFF",
        "rate_limit.login_backoff",
    ),
    (
        "SIGNALBOX_RATE_LIMIT_LOGIN_BACKOFF_MAX",
        "rate_limit.login_backoff_max",
    ),
    ("SIGNALBOX_TRUSTED_PROXIES", "trusted_proxies"),
];

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
        let mut raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
                    path: path.to_owned(),
                    cause,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.message().to_owned(),
                })?
            }
            None => FileConfig::default(),
        };
        apply_env(&mut raw, &env)?;
        if let Some(data_dir) = &overrides.data_dir {
            raw.data_dir = Some(data_dir.clone());
        }
        if overrides.require_config {
            raw.require_config = Some(true);
        }
        if let Some(database) = &overrides.database {
            raw.database = Some(database.clone());
        }
        if let Some(listen) = &overrides.listen {
            raw.listen = Some(listen.clone());
        }
        if let Some(secret) = &overrides.jwt_secret {
            raw.auth.jwt_secret = Some(secret.clone());
        }
        if let Some(backplane) = &overrides.backplane {
            raw.backplane = Some(backplane.clone());
        }
        if let Some(node_id) = &overrides.node_id {
            raw.node_id = Some(node_id.clone());
        }
        if let Some(secret) = &overrides.connection_token_secret {
            raw.connection_token_secret = Some(secret.clone());
        }
        if let Some(format) = &overrides.log_format {
            raw.log.format = Some(format.clone());
        }
        resolve(raw)
    }

    /// Fills in a generated development secret when HS256 is used without one. Returns `true`
    /// when it did (the caller must warn loudly).
    pub fn ensure_secret(&mut self) -> bool {
        if self.auth.jwt_algorithm != SigningAlgorithm::HS256 || self.auth.jwt_secret.is_some() {
            return false;
        }
        let mut bytes = [0u8; 48];
        if getrandom::fill(&mut bytes).is_err() {
            // No randomness: leave the secret unset; building the token service reports it.
            return false;
        }
        use base64::Engine as _;
        self.auth.jwt_secret = Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        self.auth.jwt_secret_generated = true;
        true
    }

    /// A short human summary of the effective settings (no secrets).
    pub fn summary(&self) -> String {
        format!(
            "listen={} database={} node={} backplane={} alg={:?} access_ttl={} refresh_ttl={} registration={} cors_origins={:?} retention={} oidc={} oidc_client_secret={}",
            self.listen,
            crate::db::redact_url(&self.database),
            self.node,
            self.backplane
                .as_deref()
                .map_or_else(|| "in-memory".to_owned(), crate::db::redact_url),
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
        )
    }
}

fn apply_env(
    raw: &mut FileConfig,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let set = |slot: &mut Option<String>, name: &str| {
        if let Some(value) = get(name) {
            *slot = Some(value);
        }
    };
    set(&mut raw.listen, "SIGNALBOX_LISTEN");
    set(&mut raw.data_dir, "SIGNALBOX_DATA_DIR");
    if let Some(v) = get("SIGNALBOX_REQUIRE_CONFIG") {
        raw.require_config = Some(parse_bool("SIGNALBOX_REQUIRE_CONFIG", &v)?);
    }
    set(&mut raw.database, "SIGNALBOX_DATABASE");
    set(&mut raw.node, "SIGNALBOX_NODE");
    set(&mut raw.node_id, "SIGNALBOX_NODE_ID");
    set(&mut raw.backplane, "SIGNALBOX_BACKPLANE");
    set(
        &mut raw.connection_token_secret,
        "SIGNALBOX_CONNECTION_TOKEN_SECRET",
    );
    set(
        &mut raw.cluster.heartbeat_interval,
        "SIGNALBOX_HEARTBEAT_INTERVAL",
    );
    set(&mut raw.cluster.node_timeout, "SIGNALBOX_NODE_TIMEOUT");
    set(&mut raw.cluster.channel_prefix, "SIGNALBOX_CHANNEL_PREFIX");
    set(&mut raw.auth.jwt_secret, "SIGNALBOX_JWT_SECRET");
    set(&mut raw.auth.jwt_algorithm, "SIGNALBOX_JWT_ALGORITHM");
    set(&mut raw.auth.jwt_private_key, "SIGNALBOX_JWT_PRIVATE_KEY");
    set(&mut raw.auth.jwt_key_id, "SIGNALBOX_JWT_KEY_ID");
    set(&mut raw.auth.issuer, "SIGNALBOX_JWT_ISSUER");
    set(&mut raw.auth.audience, "SIGNALBOX_JWT_AUDIENCE");
    set(&mut raw.auth.access_token_ttl, "SIGNALBOX_ACCESS_TOKEN_TTL");
    set(
        &mut raw.auth.refresh_token_ttl,
        "SIGNALBOX_REFRESH_TOKEN_TTL",
    );
    set(&mut raw.auth.permission_claim, "SIGNALBOX_PERMISSION_CLAIM");
    set(
        &mut raw.auth.notify_permission,
        "SIGNALBOX_NOTIFY_PERMISSION",
    );
    set(&mut raw.inbox.retention, "SIGNALBOX_INBOX_RETENTION");
    set(&mut raw.oidc.issuer, "SIGNALBOX_OIDC_ISSUER");
    set(&mut raw.oidc.discovery_url, "SIGNALBOX_OIDC_DISCOVERY_URL");
    set(&mut raw.oidc.jwks_url, "SIGNALBOX_OIDC_JWKS_URL");
    set(&mut raw.oidc.audience, "SIGNALBOX_OIDC_AUDIENCE");
    set(&mut raw.oidc.user_claim, "SIGNALBOX_OIDC_USER_CLAIM");
    set(
        &mut raw.oidc.jwks_cache_ttl,
        "SIGNALBOX_OIDC_JWKS_CACHE_TTL",
    );
    set(
        &mut raw.oidc.jwks_min_refresh_interval,
        "SIGNALBOX_OIDC_JWKS_MIN_REFRESH_INTERVAL",
    );
    set(&mut raw.oidc.client_id, "SIGNALBOX_OIDC_CLIENT_ID");
    set(&mut raw.oidc.scopes, "SIGNALBOX_OIDC_SCOPES");
    set(&mut raw.oidc.provider_name, "SIGNALBOX_OIDC_PROVIDER_NAME");
    set(&mut raw.oidc.client_secret, "SIGNALBOX_OIDC_CLIENT_SECRET");
    set(
        &mut raw.oidc.client_secret_file,
        "SIGNALBOX_OIDC_CLIENT_SECRET_FILE",
    );
    set(&mut raw.oidc.redirect_url, "SIGNALBOX_OIDC_REDIRECT_URL");
    set(&mut raw.log.format, "SIGNALBOX_LOG_FORMAT");
    set(&mut raw.metrics.token, "SIGNALBOX_METRICS_TOKEN");
    set(&mut raw.admin.role, "SIGNALBOX_ADMIN_ROLE");
    if let Some(v) = get("SIGNALBOX_METRICS_PUBLIC") {
        raw.metrics.public = Some(parse_bool("SIGNALBOX_METRICS_PUBLIC", &v)?);
    }
    if let Some(v) = get("SIGNALBOX_REGISTRATION") {
        raw.auth.registration = Some(parse_bool("SIGNALBOX_REGISTRATION", &v)?);
    }
    if let Some(v) = get("SIGNALBOX_CORS_CREDENTIALS") {
        raw.cors.allow_credentials = Some(parse_bool("SIGNALBOX_CORS_CREDENTIALS", &v)?);
    }
    if let Some(v) = get("SIGNALBOX_OIDC_AUTO_CREATE_USERS") {
        raw.oidc.auto_create_users = Some(parse_bool("SIGNALBOX_OIDC_AUTO_CREATE_USERS", &v)?);
    }
    if let Some(v) = get("SIGNALBOX_CORS_CHECK_ORIGIN") {
        raw.cors.check_origin = Some(parse_bool("SIGNALBOX_CORS_CHECK_ORIGIN", &v)?);
    }
    apply_rate_limit_env(&mut raw.rate_limit, &get)?;
    if let Some(v) = get("SIGNALBOX_TRUSTED_PROXIES") {
        raw.trusted_proxies = Some(comma_list(&v));
    }
    if let Some(v) = get("SIGNALBOX_CORS_ORIGINS") {
        raw.cors.allowed_origins = Some(
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        );
    }
    Ok(())
}

/// The comma-separated items of a variable.
fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn apply_rate_limit_env(
    raw: &mut FileRateLimit,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let Some(v) = get("SIGNALBOX_RATE_LIMIT") {
        raw.enabled = Some(parse_bool("SIGNALBOX_RATE_LIMIT", &v)?);
    }
    let whole = |slot: &mut Option<u32>, name: &str| -> Result<(), ConfigError> {
        if let Some(v) = get(name) {
            *slot =
                Some(v.trim().parse().map_err(|_| {
                    invalid(name, format!("{v:?} is not a whole number such as 20"))
                })?);
        }
        Ok(())
    };
    whole(&mut raw.auth_burst, "SIGNALBOX_RATE_LIMIT_AUTH_BURST")?;
    whole(
        &mut raw.negotiate_burst,
        "SIGNALBOX_RATE_LIMIT_NEGOTIATE_BURST",
    )?;
    whole(
        &mut raw.login_failures,
        "SIGNALBOX_RATE_LIMIT_LOGIN_FAILURES",
    )?;
    let rate = |slot: &mut Option<f64>, name: &str| -> Result<(), ConfigError> {
        if let Some(v) = get(name) {
            *slot = Some(
                v.trim()
                    .parse()
                    .map_err(|_| invalid(name, format!("{v:?} is not a number such as 0.5")))?,
            );
        }
        Ok(())
    };
    rate(
        &mut raw.auth_per_second,
        "SIGNALBOX_RATE_LIMIT_AUTH_PER_SECOND",
    )?;
    rate(
        &mut raw.negotiate_per_second,
        "SIGNALBOX_RATE_LIMIT_NEGOTIATE_PER_SECOND",
    )?;
    if let Some(v) = get("SIGNALBOX_RATE_LIMIT_LOGIN_BACKOFF") {
        raw.login_backoff = Some(v);
    }
    if let Some(v) = get("SIGNALBOX_RATE_LIMIT_LOGIN_BACKOFF_MAX") {
        raw.login_backoff_max = Some(v);
    }
    Ok(())
}

/// The rate limits and the trusted proxies.
fn resolve_rate_limit(
    raw: FileRateLimit,
    proxies: Option<Vec<String>>,
) -> Result<(RateLimitConfig, Vec<IpBlock>), ConfigError> {
    let d = RateLimitConfig::default();
    let per_second = |name: &str, value: Option<f64>, default: f64| match value {
        None => Ok(default),
        // At least one token an hour, so that a wait is always finite and short enough to say.
        Some(v) if v.is_finite() && v >= 1.0 / 3600.0 => Ok(v),
        Some(v) => Err(invalid(
            name,
            format!("{v} is not a positive rate (tokens per second, at least 1/3600)"),
        )),
    };
    let config = RateLimitConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        auth_burst: raw.auth_burst.unwrap_or(d.auth_burst),
        auth_per_second: per_second(
            "rate_limit.auth_per_second (SIGNALBOX_RATE_LIMIT_AUTH_PER_SECOND)",
            raw.auth_per_second,
            d.auth_per_second,
        )?,
        negotiate_burst: raw.negotiate_burst.unwrap_or(d.negotiate_burst),
        negotiate_per_second: per_second(
            "rate_limit.negotiate_per_second (SIGNALBOX_RATE_LIMIT_NEGOTIATE_PER_SECOND)",
            raw.negotiate_per_second,
            d.negotiate_per_second,
        )?,
        login_failures: raw.login_failures.unwrap_or(d.login_failures),
        login_backoff: duration(
            "rate_limit.login_backoff (SIGNALBOX_RATE_LIMIT_LOGIN_BACKOFF)",
            raw.login_backoff,
            d.login_backoff,
        )?,
        login_backoff_max: duration(
            "rate_limit.login_backoff_max (SIGNALBOX_RATE_LIMIT_LOGIN_BACKOFF_MAX)",
            raw.login_backoff_max,
            d.login_backoff_max,
        )?,
    };
    if config.login_backoff_max < config.login_backoff {
        return Err(invalid(
            "rate_limit.login_backoff_max (SIGNALBOX_RATE_LIMIT_LOGIN_BACKOFF_MAX)",
            format!(
                "{} is shorter than rate_limit.login_backoff ({})",
                format_duration(config.login_backoff_max),
                format_duration(config.login_backoff)
            ),
        ));
    }
    let proxies = proxies
        .unwrap_or_default()
        .iter()
        .map(|text| {
            text.parse::<IpBlock>()
                .map_err(|e| invalid("trusted_proxies (SIGNALBOX_TRUSTED_PROXIES)", e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((config, proxies))
}

fn invalid(name: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_owned(),
        message: message.into(),
    }
}

fn parse_bool(name: &str, text: &str) -> Result<bool, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(
            name,
            format!("{text:?} is not a boolean (true/false)"),
        )),
    }
}

fn duration(name: &str, text: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(text) = text else {
        return Ok(default);
    };
    match parse_duration(&text) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(invalid(
            name,
            format!("{text:?} is not a positive duration such as 90s, 15m, 12h or 30d"),
        )),
    }
}

/// Checks that an HMAC secret is long and varied enough.
pub fn check_secret(secret: &str) -> Result<(), ConfigError> {
    let len = secret.len();
    if len < MIN_SECRET_LENGTH {
        return Err(ConfigError::WeakSecret(format!(
            "it is {len} bytes long, at least {MIN_SECRET_LENGTH} are required"
        )));
    }
    let mut distinct: Vec<u8> = secret.bytes().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 8 {
        return Err(ConfigError::WeakSecret(format!(
            "it uses only {} distinct characters",
            distinct.len()
        )));
    }
    Ok(())
}

fn resolve(raw: FileConfig) -> Result<Config, ConfigError> {
    let defaults = Config::default();
    let listen = match raw.listen {
        Some(text) => text.trim().parse().map_err(|_| {
            invalid(
                "listen (SIGNALBOX_LISTEN)",
                format!("{text:?} is not an address such as 127.0.0.1:8080"),
            )
        })?,
        None => defaults.listen,
    };
    let data_dir = match raw.data_dir.as_deref().map(str::trim) {
        Some("") => {
            return Err(invalid(
                "data_dir (SIGNALBOX_DATA_DIR)",
                "must not be empty",
            ));
        }
        Some(dir) => PathBuf::from(dir),
        None => defaults.data_dir,
    };
    let require_config = raw.require_config.unwrap_or(defaults.require_config);
    let database = raw.database.unwrap_or_else(|| default_database(&data_dir));
    if !(database.starts_with("sqlite:")
        || database.starts_with("postgres://")
        || database.starts_with("postgresql://"))
    {
        return Err(invalid(
            "database (SIGNALBOX_DATABASE)",
            format!(
                "{:?} is not supported: use sqlite://PATH or postgres://USER@HOST/DB",
                crate::db::redact_url(&database)
            ),
        ));
    }

    let a = raw.auth;
    let d = defaults.auth;
    let jwt_algorithm = match a.jwt_algorithm {
        Some(text) => SigningAlgorithm::parse(&text).ok_or_else(|| {
            invalid(
                "auth.jwt_algorithm (SIGNALBOX_JWT_ALGORITHM)",
                format!("{text:?} is not one of HS256, RS256, ES256"),
            )
        })?,
        None => d.jwt_algorithm,
    };
    let jwt_private_key = a.jwt_private_key.map(PathBuf::from);
    match (jwt_algorithm, &jwt_private_key) {
        (SigningAlgorithm::HS256, Some(_)) => {
            return Err(invalid(
                "auth.jwt_private_key (SIGNALBOX_JWT_PRIVATE_KEY)",
                "a private key needs auth.jwt_algorithm RS256 or ES256",
            ));
        }
        (SigningAlgorithm::RS256 | SigningAlgorithm::ES256, None) => {
            return Err(invalid(
                "auth.jwt_private_key (SIGNALBOX_JWT_PRIVATE_KEY)",
                format!("{jwt_algorithm:?} needs the path of a PEM private key"),
            ));
        }
        _ => {}
    }
    if let Some(secret) = &a.jwt_secret {
        check_secret(secret)?;
    }
    let auth = AuthConfig {
        jwt_secret: a.jwt_secret,
        jwt_secret_generated: false,
        jwt_algorithm,
        jwt_private_key,
        jwt_key_id: a.jwt_key_id,
        issuer: a.issuer.unwrap_or(d.issuer),
        audience: a.audience,
        access_token_ttl: duration(
            "auth.access_token_ttl (SIGNALBOX_ACCESS_TOKEN_TTL)",
            a.access_token_ttl,
            d.access_token_ttl,
        )?,
        refresh_token_ttl: duration(
            "auth.refresh_token_ttl (SIGNALBOX_REFRESH_TOKEN_TTL)",
            a.refresh_token_ttl,
            d.refresh_token_ttl,
        )?,
        registration: a.registration.unwrap_or(d.registration),
        permission_claim: a.permission_claim.unwrap_or(d.permission_claim),
        notify_permission: a.notify_permission.unwrap_or(d.notify_permission),
    };

    let cors = CorsConfig {
        allowed_origins: raw.cors.allowed_origins.unwrap_or_default(),
        allow_credentials: raw
            .cors
            .allow_credentials
            .unwrap_or(defaults.cors.allow_credentials),
        check_origin: raw.cors.check_origin.unwrap_or(defaults.cors.check_origin),
    };
    for origin in &cors.allowed_origins {
        if origin == "*" {
            if cors.allow_credentials {
                return Err(ConfigError::WildcardWithCredentials);
            }
        } else if !(origin.starts_with("http://") || origin.starts_with("https://"))
            || origin.trim_end_matches('/') != origin
            || http::HeaderValue::from_str(origin).is_err()
        {
            return Err(invalid(
                "cors.allowed_origins (SIGNALBOX_CORS_ORIGINS)",
                format!("{origin:?} is not an origin such as https://app.example.com"),
            ));
        }
    }

    let inbox = InboxConfig {
        retention: duration(
            "inbox.retention (SIGNALBOX_INBOX_RETENTION)",
            raw.inbox.retention,
            defaults.inbox.retention,
        )?,
    };

    let mut o = raw.oidc;
    let oidc_client = resolve_oidc_client(&mut o)?;
    let oidc = match o.issuer {
        Some(issuer) => Some(OidcConfig {
            issuer: issuer.trim_end_matches('/').to_owned(),
            discovery_url: o.discovery_url,
            jwks_url: o.jwks_url,
            audience: o.audience,
            user_claim: o.user_claim.unwrap_or_else(|| "email".to_owned()),
            auto_create_users: o.auto_create_users.unwrap_or(false),
            jwks_cache_ttl: duration(
                "oidc.jwks_cache_ttl (SIGNALBOX_OIDC_JWKS_CACHE_TTL)",
                o.jwks_cache_ttl,
                Duration::from_secs(3600),
            )?,
            jwks_min_refresh_interval: duration(
                "oidc.jwks_min_refresh_interval (SIGNALBOX_OIDC_JWKS_MIN_REFRESH_INTERVAL)",
                o.jwks_min_refresh_interval,
                Duration::from_secs(30),
            )?,
            client_id: o.client_id,
            scopes: o
                .scopes
                .unwrap_or_else(|| "openid email profile".to_owned()),
            provider_name: o.provider_name,
        }),
        None if o.discovery_url.is_some()
            || o.jwks_url.is_some()
            || o.audience.is_some()
            || o.client_id.is_some()
            || oidc_client.client_secret.is_some()
            || oidc_client.redirect_url.is_some() =>
        {
            return Err(invalid(
                "oidc.issuer (SIGNALBOX_OIDC_ISSUER)",
                "the other oidc settings need oidc.issuer",
            ));
        }
        None => None,
    };
    if oidc_client.client_secret.is_some()
        && oidc
            .as_ref()
            .is_some_and(|o| o.browser_client_id().is_none())
    {
        return Err(invalid(
            "oidc.client_secret (SIGNALBOX_OIDC_CLIENT_SECRET)",
            "a client secret needs oidc.client_id (or oidc.audience): the client it belongs to",
        ));
    }

    let node = match raw.node_id.or(raw.node) {
        Some(node) => {
            let node = node.trim().to_owned();
            if node.is_empty()
                || node.len() > 128
                || !node
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(invalid(
                    "node_id (SIGNALBOX_NODE_ID / --node-id)",
                    format!("{node:?} is not 1 to 128 letters, digits, '-', '_' or '.'"),
                ));
            }
            node
        }
        None => defaults.node,
    };
    let backplane = match raw.backplane.map(|b| b.trim().to_owned()) {
        None => None,
        Some(b) if b.is_empty() || b == "none" || b == "memory" => None,
        Some(b) => {
            if crate::backplane::Kind::of(&b).is_none() {
                return Err(invalid(
                    "backplane (SIGNALBOX_BACKPLANE / --backplane)",
                    format!(
                        "{:?} is not supported: use redis://HOST:PORT, rediss://…, nats://HOST:PORT or none",
                        crate::db::redact_url(&b)
                    ),
                ));
            }
            Some(b)
        }
    };
    let connection_token_secret = raw.connection_token_secret;
    if let Some(secret) = &connection_token_secret {
        check_secret(secret).map_err(|e| {
            invalid(
                "connection_token_secret (SIGNALBOX_CONNECTION_TOKEN_SECRET)",
                e.to_string().replace(
                    "the JWT secret (SIGNALBOX_JWT_SECRET / auth.jwt_secret) is too weak: ",
                    "too weak: ",
                ),
            )
        })?;
    } else if backplane.is_some() {
        return Err(invalid(
            "connection_token_secret (SIGNALBOX_CONNECTION_TOKEN_SECRET)",
            "a backplane needs a connection token secret shared by every node (at least 32 random bytes, e.g. `openssl rand -base64 48`), so WebSockets may connect to any node",
        ));
    }
    let cluster = ClusterConfig {
        heartbeat_interval: duration(
            "cluster.heartbeat_interval (SIGNALBOX_HEARTBEAT_INTERVAL)",
            raw.cluster.heartbeat_interval,
            defaults.cluster.heartbeat_interval,
        )?,
        node_timeout: duration(
            "cluster.node_timeout (SIGNALBOX_NODE_TIMEOUT)",
            raw.cluster.node_timeout,
            defaults.cluster.node_timeout,
        )?,
        channel_prefix: raw
            .cluster
            .channel_prefix
            .map(|p| p.trim().to_owned())
            .unwrap_or(defaults.cluster.channel_prefix),
    };
    if cluster.channel_prefix.is_empty()
        || !cluster
            .channel_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':'))
    {
        return Err(invalid(
            "cluster.channel_prefix (SIGNALBOX_CHANNEL_PREFIX)",
            format!(
                "{:?} is not letters, digits, '-', '_' or ':'",
                cluster.channel_prefix
            ),
        ));
    }
    if cluster.node_timeout < cluster.heartbeat_interval * 2 {
        return Err(invalid(
            "cluster.node_timeout (SIGNALBOX_NODE_TIMEOUT)",
            format!(
                "{} is shorter than two heartbeat intervals ({} each)",
                format_duration(cluster.node_timeout),
                format_duration(cluster.heartbeat_interval)
            ),
        ));
    }
    let (log, metrics, admin) = resolve_ops(raw.log, raw.metrics, raw.admin)?;
    let (rate_limit, trusted_proxies) = resolve_rate_limit(raw.rate_limit, raw.trusted_proxies)?;

    Ok(Config {
        listen,
        data_dir,
        require_config,
        database,
        node,
        backplane,
        connection_token_secret,
        cluster,
        auth,
        cors,
        inbox,
        oidc,
        oidc_client,
        log,
        metrics,
        admin,
        rate_limit,
        trusted_proxies,
    })
}

/// The confidential-client settings: the client secret (inline or from a file, not both) and
/// the redirect URL. Taken out of `o`, so that the secret's text is not kept around.
fn resolve_oidc_client(o: &mut FileOidc) -> Result<OidcClientConfig, ConfigError> {
    const SECRET: &str = "oidc.client_secret (SIGNALBOX_OIDC_CLIENT_SECRET)";
    const SECRET_FILE: &str = "oidc.client_secret_file (SIGNALBOX_OIDC_CLIENT_SECRET_FILE)";
    let client_secret = match (o.client_secret.take(), o.client_secret_file.take()) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                SECRET_FILE,
                "set either oidc.client_secret or oidc.client_secret_file, not both",
            ));
        }
        (Some(secret), None) => Some(secret.trim().to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path.trim())
                .map_err(|cause| invalid(SECRET_FILE, format!("cannot read {path:?}: {cause}")))?;
            Some(text.trim().to_owned())
        }
        (None, None) => None,
    };
    if client_secret.as_ref().is_some_and(String::is_empty) {
        return Err(invalid(SECRET, "the client secret is empty"));
    }
    let redirect_url = match o.redirect_url.take() {
        Some(text) => {
            let text = text.trim().to_owned();
            let valid = reqwest::Url::parse(&text).is_ok_and(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.host_str().is_some()
                    && url.fragment().is_none()
            });
            if !valid {
                return Err(invalid(
                    "oidc.redirect_url (SIGNALBOX_OIDC_REDIRECT_URL)",
                    format!(
                        "{text:?} is not a URL such as https://notify.example.com/api/auth/oidc/callback"
                    ),
                ));
            }
            Some(text)
        }
        None => None,
    };
    Ok(OidcClientConfig {
        client_secret: client_secret.map(ClientSecret),
        redirect_url,
    })
}

/// The logging, metrics and admin settings.
fn resolve_ops(
    log: FileLog,
    metrics: FileMetrics,
    admin: FileAdmin,
) -> Result<(LogConfig, MetricsConfig, AdminConfig), ConfigError> {
    let log = LogConfig {
        format: match log.format {
            Some(text) => LogFormat::parse(&text).ok_or_else(|| {
                invalid(
                    "log.format (SIGNALBOX_LOG_FORMAT)",
                    format!("{text:?} is not one of human, json"),
                )
            })?,
            None => LogFormat::default(),
        },
    };
    if let Some(token) = &metrics.token
        && token.len() < 16
    {
        return Err(invalid(
            "metrics.token (SIGNALBOX_METRICS_TOKEN)",
            "use at least 16 random characters, e.g. `openssl rand -hex 24`",
        ));
    }
    let metrics = MetricsConfig {
        public: metrics.public.unwrap_or(false),
        token: metrics.token,
    };
    let admin = AdminConfig {
        role: admin
            .role
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "admin".to_owned()),
    };
    Ok((log, metrics, admin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(
        file: Option<&str>,
        env: &[(&str, &str)],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let dir = std::env::temp_dir().join(format!("signalbox-config-{}", uuid::Uuid::now_v7()));
        let path = dir.join("signalbox.toml");
        if let Some(text) = file {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, text).unwrap();
        }
        let result = Config::load_from(
            file.map(|_| path.as_path()),
            |k| env.get(k).cloned(),
            overrides,
        );
        let _ = std::fs::remove_dir_all(&dir); // best effort cleanup of a temp dir
        result
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef-xyz";

    #[test]
    fn defaults() {
        let config = load(None, &[], &Overrides::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database, "sqlite://./signalbox-data/signalbox.db");
        assert_eq!(config.data_dir, std::path::Path::new("./signalbox-data"));
        assert!(!config.require_config);
        assert_eq!(config.auth.access_token_ttl, Duration::from_secs(900));
        assert!(config.auth.jwt_secret.is_none());
        assert!(!config.auth.registration);
    }

    #[test]
    fn precedence_file_env_flags() {
        let file = "listen = \"127.0.0.1:1\"\ndatabase = \"sqlite://a.db\"\n[auth]\naccess_token_ttl = \"5m\"\nregistration = true\n";
        let config = load(
            Some(file),
            &[
                ("SIGNALBOX_DATABASE", "sqlite://b.db"),
                ("SIGNALBOX_ACCESS_TOKEN_TTL", "1h"),
            ],
            &Overrides {
                listen: Some("127.0.0.1:0".into()),
                jwt_secret: Some(SECRET.into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.database, "sqlite://b.db");
        assert_eq!(config.auth.access_token_ttl, Duration::from_secs(3600));
        assert!(config.auth.registration);
        assert_eq!(config.auth.jwt_secret.as_deref(), Some(SECRET));
    }

    #[test]
    fn clear_errors() {
        let weak = load(
            None,
            &[("SIGNALBOX_JWT_SECRET", "short")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(weak.to_string().contains("too weak"), "{weak}");
        let repeated = load(
            None,
            &[("SIGNALBOX_JWT_SECRET", &"a".repeat(40))],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(matches!(repeated, ConfigError::WeakSecret(_)));
        let wildcard = load(
            None,
            &[("SIGNALBOX_CORS_ORIGINS", "*")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(matches!(wildcard, ConfigError::WildcardWithCredentials));
        let ok = load(
            None,
            &[
                ("SIGNALBOX_CORS_ORIGINS", "*"),
                ("SIGNALBOX_CORS_CREDENTIALS", "false"),
            ],
            &Overrides::default(),
        );
        assert!(ok.is_ok());
        let db = load(
            None,
            &[("SIGNALBOX_DATABASE", "mysql://x")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(db.to_string().contains("SIGNALBOX_DATABASE"), "{db}");
        let unknown = load(Some("nope = 1\n"), &[], &Overrides::default()).unwrap_err();
        assert!(matches!(unknown, ConfigError::Parse { .. }));
        let rs = load(
            None,
            &[("SIGNALBOX_JWT_ALGORITHM", "RS256")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(rs.to_string().contains("private key"), "{rs}");
    }

    #[test]
    fn cluster_settings() {
        let plain = load(None, &[], &Overrides::default()).unwrap();
        assert!(plain.backplane.is_none());
        let other = load(None, &[], &Overrides::default()).unwrap();
        assert_ne!(plain.node, other.node, "node ids are generated per process");
        let missing = load(
            None,
            &[],
            &Overrides {
                backplane: Some("redis://127.0.0.1:6379".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("SIGNALBOX_CONNECTION_TOKEN_SECRET"),
            "{missing}"
        );
        let config = load(
            None,
            &[
                ("SIGNALBOX_CONNECTION_TOKEN_SECRET", SECRET),
                ("SIGNALBOX_NODE_TIMEOUT", "3s"),
                ("SIGNALBOX_HEARTBEAT_INTERVAL", "1s"),
            ],
            &Overrides {
                backplane: Some("nats://127.0.0.1:4222".into()),
                node_id: Some("web-1".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.backplane.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(config.node, "web-1");
        assert_eq!(config.cluster.node_timeout, Duration::from_secs(3));
        assert!(config.summary().contains("backplane=nats://"));
        let none = load(
            None,
            &[("SIGNALBOX_BACKPLANE", "none")],
            &Overrides::default(),
        )
        .unwrap();
        assert!(none.backplane.is_none());
        let bad = load(
            None,
            &[("SIGNALBOX_BACKPLANE", "amqp://x")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(bad.to_string().contains("SIGNALBOX_BACKPLANE"), "{bad}");
        let short = load(
            None,
            &[
                ("SIGNALBOX_NODE_TIMEOUT", "5s"),
                ("SIGNALBOX_HEARTBEAT_INTERVAL", "5s"),
            ],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(short.to_string().contains("node_timeout"), "{short}");
        let weak = load(
            None,
            &[("SIGNALBOX_CONNECTION_TOKEN_SECRET", "short")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            weak.to_string().contains("connection_token_secret"),
            "{weak}"
        );
    }

    #[test]
    fn rate_limits_and_trusted_proxies() {
        let defaults = load(None, &[], &Overrides::default()).unwrap();
        assert!(defaults.rate_limit.enabled);
        assert_eq!(defaults.rate_limit.auth_burst, 20);
        assert!(defaults.trusted_proxies.is_empty());
        assert!(defaults.cors.check_origin);
        let file = "trusted_proxies = [\"10.0.0.0/8\"]\n[rate_limit]\nauth_burst = 3\nlogin_backoff = \"2s\"\n";
        let config = load(
            Some(file),
            &[
                ("SIGNALBOX_RATE_LIMIT_AUTH_PER_SECOND", "0.5"),
                ("SIGNALBOX_RATE_LIMIT_NEGOTIATE_BURST", "0"),
                ("SIGNALBOX_TRUSTED_PROXIES", "127.0.0.2, ::1"),
                ("SIGNALBOX_CORS_CHECK_ORIGIN", "false"),
            ],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.rate_limit.auth_burst, 3);
        assert!((config.rate_limit.auth_per_second - 0.5).abs() < f64::EPSILON);
        assert_eq!(config.rate_limit.negotiate_burst, 0);
        assert_eq!(config.rate_limit.login_backoff, Duration::from_secs(2));
        assert_eq!(config.trusted_proxies.len(), 2);
        assert!(!config.cors.check_origin);
        for (name, value, complaint) in [
            (
                "SIGNALBOX_TRUSTED_PROXIES",
                "example.com",
                "SIGNALBOX_TRUSTED_PROXIES",
            ),
            (
                "SIGNALBOX_RATE_LIMIT_AUTH_PER_SECOND",
                "0",
                "auth_per_second",
            ),
            ("SIGNALBOX_RATE_LIMIT_AUTH_BURST", "-1", "AUTH_BURST"),
            (
                "SIGNALBOX_RATE_LIMIT_LOGIN_BACKOFF_MAX",
                "500ms",
                "LOGIN_BACKOFF_MAX",
            ),
        ] {
            let error = load(None, &[(name, value)], &Overrides::default()).unwrap_err();
            assert!(error.to_string().contains(complaint), "{error}");
        }
    }

    #[test]
    fn oidc_client_secret_inline_or_from_a_file_and_never_shown() {
        let issuer = ("SIGNALBOX_OIDC_ISSUER", "https://accounts.google.com");
        let client = ("SIGNALBOX_OIDC_CLIENT_ID", "web-client");
        let secret = "GOCSPX-very-secret-value";
        let config = load(
            None,
            &[
                issuer,
                client,
                ("SIGNALBOX_OIDC_CLIENT_SECRET", secret),
                (
                    "SIGNALBOX_OIDC_REDIRECT_URL",
                    "https://n.example.com/api/auth/oidc/callback",
                ),
            ],
            &Overrides::default(),
        )
        .unwrap();
        let stored = config.oidc_client.client_secret.as_ref().unwrap();
        assert_eq!(stored.expose(), secret);
        assert_eq!(
            config.oidc_client.redirect_url.as_deref(),
            Some("https://n.example.com/api/auth/oidc/callback")
        );
        assert!(!format!("{config:?}").contains(secret));
        assert!(!config.summary().contains(secret));
        assert!(config.summary().contains("oidc_client_secret=set"));

        let dir = std::env::temp_dir().join(format!("signalbox-secret-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, format!("  {secret}\n")).unwrap();
        let path = file.to_str().unwrap();
        let config = load(
            None,
            &[issuer, client, ("SIGNALBOX_OIDC_CLIENT_SECRET_FILE", path)],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            config.oidc_client.client_secret.as_ref().unwrap().expose(),
            secret
        );

        for (case, env) in [
            (
                "both",
                vec![
                    issuer,
                    client,
                    ("SIGNALBOX_OIDC_CLIENT_SECRET", secret),
                    ("SIGNALBOX_OIDC_CLIENT_SECRET_FILE", path),
                ],
            ),
            (
                "missing file",
                vec![
                    issuer,
                    client,
                    ("SIGNALBOX_OIDC_CLIENT_SECRET_FILE", "/nonexistent/secret"),
                ],
            ),
            (
                "no client id",
                vec![issuer, ("SIGNALBOX_OIDC_CLIENT_SECRET", secret)],
            ),
            ("no issuer", vec![("SIGNALBOX_OIDC_CLIENT_SECRET", secret)]),
            (
                "bad redirect",
                vec![issuer, client, ("SIGNALBOX_OIDC_REDIRECT_URL", "/callback")],
            ),
        ] {
            let error = load(None, &env, &Overrides::default()).unwrap_err();
            let text = error.to_string();
            assert!(text.contains("oidc."), "{case}: {text}");
            assert!(!text.contains(secret), "{case}: {text}");
        }
        let _ = std::fs::remove_dir_all(&dir); // best effort cleanup of a temp dir
    }

    #[test]
    fn generated_secret() {
        let mut config = load(None, &[], &Overrides::default()).unwrap();
        assert!(config.ensure_secret());
        assert!(config.auth.jwt_secret_generated);
        assert!(check_secret(config.auth.jwt_secret.as_deref().unwrap()).is_ok());
        assert!(!config.ensure_secret());
    }
}
