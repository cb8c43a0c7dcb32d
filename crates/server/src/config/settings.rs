//! The registry: every setting, declared once. Loading (file < environment < flags),
//! validation messages, `signalbox config` and the settings table of `docs/configuration.md`
//! all follow from these declarations; rules that involve several settings live with the part
//! of the configuration they build (`auth.rs`, `cluster.rs`, …).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::setting::{Declared, Setting};
use super::{
    LogFormat, PresenceBroadcast, SigningAlgorithm, azure, cluster, cors, limits, oidc, ops,
    storage,
};
use crate::client_ip::IpBlock;

pub(crate) static LISTEN: Setting<SocketAddr> = Setting::new(
    "listen",
    "SIGNALBOX_LISTEN",
    "Address to listen on; port 0 picks a free port. The URL is printed as `Now listening on: http://ADDR`.",
)
    .default(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080))
    .flag("--listen ADDR");

pub(crate) static DATA_DIR: Setting<PathBuf> = Setting::new(
    "data_dir",
    "SIGNALBOX_DATA_DIR",
    "The data directory: the SQLite database (unless `database` names another) and, when no signing secret or key is configured, the generated secret (`jwt-secret`, mode 0600) that `serve` and `token issue` reuse. Created on first start. A cluster's nodes need an explicit shared secret instead.",
)
    .default(storage::DEFAULT_DATA_DIR)
    .flag("--data-dir DIR")
    .check(storage::check_data_dir);

pub(crate) static REQUIRE_CONFIG: Setting<bool> = Setting::new(
    "require_config",
    "SIGNALBOX_REQUIRE_CONFIG",
    "Production: refuse to start without an explicitly configured signing secret or key (no generated secret).",
)
    .default(false)
    .flag("--require-config");

pub(crate) static DATABASE: Setting<String> = Setting::new(
    "database",
    "SIGNALBOX_DATABASE",
    "`sqlite://PATH` (file created with its schema on first start) or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`. Migrations are applied at start.",
)
    .computed("`sqlite://DATA_DIR/signalbox.db`", storage::database_in_data_dir)
    .flag("--database URL")
    .url()
    .check(storage::check_database);

pub(crate) static NODE_ID: Setting<String> = Setting::new(
    "node_id",
    "SIGNALBOX_NODE_ID",
    "This process's id in presence rows, node heartbeats and the backplane; unique in the cluster. 1–128 letters, digits, `-`, `_`, `.`.",
)
    .computed(
        "the host name and 8 random hex digits, new at every start",
        cluster::generated_node_id,
    )
    .alias("node", "SIGNALBOX_NODE")
    .flag("--node-id ID")
    .check(cluster::check_node_id);

pub(crate) static BACKPLANE: Setting<String> = Setting::new(
    "backplane",
    "SIGNALBOX_BACKPLANE",
    "`redis://[USER:PASSWORD@]HOST:PORT[/DB]` (also `rediss://`) or `nats://HOST:PORT` (several comma-separated; also `tls://`): the pub/sub server joining the nodes of a cluster (see [Running several nodes](#running-several-nodes)). `none` is the default. `serve` prints `Backplane: redis (redis://…) node=ID`.",
)
    .unset("none: in-memory, one node")
    .flag("--backplane URL")
    .url()
    .check(cluster::check_backplane);

pub(crate) static CONNECTION_TOKEN_SECRET: Setting<String> = Setting::new(
    "connection_token_secret",
    "SIGNALBOX_CONNECTION_TOKEN_SECRET",
    "Required with a backplane; the same on every node, at least 32 bytes. Connection tokens from negotiate are signed with it, so a WebSocket may connect to any node.",
)
    .flag("--connection-token-secret SECRET")
    .secret()
    .check(cluster::check_connection_token_secret);

pub(crate) static HEARTBEAT_INTERVAL: Setting<Duration> = Setting::new(
    "cluster.heartbeat_interval",
    "SIGNALBOX_HEARTBEAT_INTERVAL",
    "How often each node records its heartbeat (in the database, also without a backplane) and looks for dead nodes.",
)
    .default(Duration::from_secs(5));

pub(crate) static NODE_TIMEOUT: Setting<Duration> = Setting::new(
    "cluster.node_timeout",
    "SIGNALBOX_NODE_TIMEOUT",
    "A node silent this long is dead: the others remove its connections, and its users who have no other connection go offline (one `PresenceChanged` each). At least two heartbeat intervals.",
)
    .default(Duration::from_secs(15));

pub(crate) static CHANNEL_PREFIX: Setting<String> = Setting::new(
    "cluster.channel_prefix",
    "SIGNALBOX_CHANNEL_PREFIX",
    "Prefix of the backplane's channels. Clusters (or environments) sharing one Redis or NATS server need different prefixes. Letters, digits, `-`, `_`, `:`.",
)
    .default("signalbox")
    .check(cluster::check_channel_prefix);

pub(crate) static ADVERTISE_URL: Setting<String> = Setting::new(
    "cluster.advertise_url",
    "SIGNALBOX_ADVERTISE_URL",
    "The `http://HOST:PORT` at which the other nodes reach this one (recorded with its heartbeat). A request of Server-Sent Events or long polling that reaches a node other than the one holding its connection is forwarded there, so no transport needs sticky sessions (with `connection_token_secret`). Set it when `listen` is `0.0.0.0`/`[::]` or behind address translation.",
)
    .unset("`http://LISTEN` when `listen` is a concrete address (after binding, for port 0); with `0.0.0.0` or `[::]`, none: such requests must reach the node holding the connection")
    .flag("--advertise-url URL")
    .check(cluster::check_advertise_url);

pub(crate) static JWT_SECRET: Setting<String> = Setting::new(
    "auth.jwt_secret",
    "SIGNALBOX_JWT_SECRET",
    "HS256 secret, at least 32 bytes (`openssl rand -base64 48`). Without one (and without `auth.jwt_private_key`), a secret is generated once into `DATA_DIR/jwt-secret` (mode 0600) and reused by every start and by `token issue`; `require_config` refuses to start without an explicit one. Several nodes need one explicit shared secret.",
)
    .flag("--jwt-secret SECRET")
    .secret();

pub(crate) static JWT_ALGORITHM: Setting<SigningAlgorithm> = Setting::new(
    "auth.jwt_algorithm",
    "SIGNALBOX_JWT_ALGORITHM",
    "`HS256`, `RS256` or `ES256`. The last two need `jwt_private_key`; their public key is served at `/.well-known/jwks.json`.",
)
    .default(SigningAlgorithm::HS256);

pub(crate) static JWT_PRIVATE_KEY: Setting<PathBuf> = Setting::new(
    "auth.jwt_private_key",
    "SIGNALBOX_JWT_PRIVATE_KEY",
    "Path of a PEM private key (RSA for RS256, P-256 for ES256; PKCS#8 or traditional).",
);

pub(crate) static JWT_KEY_ID: Setting<String> = Setting::new(
    "auth.jwt_key_id",
    "SIGNALBOX_JWT_KEY_ID",
    "`kid` of issued tokens and of the published key.",
)
.unset("`signalbox-1` with a private key, none with HS256");

pub(crate) static ISSUER: Setting<String> = Setting::new(
    "auth.issuer",
    "SIGNALBOX_JWT_ISSUER",
    "`iss` of issued tokens; local tokens must carry it.",
)
.default("signalbox");

pub(crate) static AUDIENCE: Setting<String> = Setting::new(
    "auth.audience",
    "SIGNALBOX_JWT_AUDIENCE",
    "`aud` of issued tokens; required on tokens when set.",
)
.unset("none (the issuer when OIDC is on)");

pub(crate) static ACCESS_TOKEN_TTL: Setting<Duration> = Setting::new(
    "auth.access_token_ttl",
    "SIGNALBOX_ACCESS_TOKEN_TTL",
    "Lifetime of access tokens (`expires_in`).",
)
.default(Duration::from_secs(15 * 60));

pub(crate) static REFRESH_TOKEN_TTL: Setting<Duration> = Setting::new(
    "auth.refresh_token_ttl",
    "SIGNALBOX_REFRESH_TOKEN_TTL",
    "Lifetime of refresh tokens. Each refresh rotates the token; its session lives on while it is used.",
)
    .default(Duration::from_secs(30 * 86_400));

pub(crate) static REGISTRATION: Setting<bool> = Setting::new(
    "auth.registration",
    "SIGNALBOX_REGISTRATION",
    "Whether `POST /api/auth/register` is open. Once an administrator sets the switch on the dashboard, the stored value wins (until it is handed back to this setting).",
)
.default(false);

pub(crate) static PERMISSION_CLAIM: Setting<String> = Setting::new(
    "auth.permission_claim",
    "SIGNALBOX_PERMISSION_CLAIM",
    "The claim carrying permissions.",
)
.default("permission");

pub(crate) static NOTIFY_PERMISSION: Setting<String> = Setting::new(
    "auth.notify_permission",
    "SIGNALBOX_NOTIFY_PERMISSION",
    "The value of that claim needed to send notifications (hub `SendNotification`, `POST /api/notifications`, group management).",
)
    .default("notify");

pub(crate) static CORS_ORIGINS: Setting<Vec<String>> = Setting::new(
    "cors.allowed_origins",
    "SIGNALBOX_CORS_ORIGINS",
    "Origins allowed to call the API and the hub from a browser, e.g. `[\"https://app.example.com\"]`. Empty: no cross-origin access. `*` only without credentials.",
)
    .env_note("comma-separated")
    .check(cors::check_origins);

pub(crate) static CORS_CREDENTIALS: Setting<bool> = Setting::new(
    "cors.allow_credentials",
    "SIGNALBOX_CORS_CREDENTIALS",
    "Whether browsers may send credentials cross-origin (needed by the SignalR client, which sends cookies and `Authorization`).",
)
    .default(true);

pub(crate) static CORS_CHECK_ORIGIN: Setting<bool> = Setting::new(
    "cors.check_origin",
    "SIGNALBOX_CORS_CHECK_ORIGIN",
    "Refuse hub requests (negotiate, WebSocket upgrade, Server-Sent Events, long polling) whose `Origin` header is neither the service's own (same host and port as the request's `Host`) nor in `cors.allowed_origins`, with 403. Requests without `Origin` (non-browser clients) pass; `*` among the allowed origins lets every origin through.",
)
    .default(true);

pub(crate) static TRUSTED_PROXIES: Setting<Vec<IpBlock>> = Setting::new(
    "trusted_proxies",
    "SIGNALBOX_TRUSTED_PROXIES",
    "Reverse proxies (addresses or blocks such as `10.0.0.0/8`, `fd00::/8`) whose `X-Forwarded-For` names the client for the rate limits: from such a peer, the nearest address in the header that is not itself a trusted proxy is the client. Empty: the header is ignored and the TCP peer is the client (behind a proxy, every client then shares the proxy's limits).",
)
    .env_note("comma-separated");

pub(crate) static RATE_LIMIT: Setting<bool> = Setting::new(
    "rate_limit.enabled",
    "SIGNALBOX_RATE_LIMIT",
    "Whether the rate limits below apply. Refused requests get `429 Too Many Requests` with `Retry-After` (seconds) and `{\"error\":\"rate_limited\",\"message\":…}`, and are counted in `signalbox_rate_limited_total{endpoint}`.",
)
    .default(true);

pub(crate) static AUTH_BURST: Setting<u32> = Setting::new(
    "rate_limit.auth_burst",
    "SIGNALBOX_RATE_LIMIT_AUTH_BURST",
    "Per client IP (IPv6: per /64): requests to `POST /api/auth/login`, `/register`, `/refresh` and `/external` (one bucket shared by the four) allowed in a burst. `0` turns this limit off.",
)
    .default(20);

pub(crate) static AUTH_PER_SECOND: Setting<f64> = Setting::new(
    "rate_limit.auth_per_second",
    "SIGNALBOX_RATE_LIMIT_AUTH_PER_SECOND",
    "How fast that bucket refills (requests per second; fractions allowed, at least 1/3600).",
)
.default(1.0)
.check(limits::check_rate);

pub(crate) static NEGOTIATE_BURST: Setting<u32> = Setting::new(
    "rate_limit.negotiate_burst",
    "SIGNALBOX_RATE_LIMIT_NEGOTIATE_BURST",
    "Per client IP: hub negotiate requests (`POST /hubs/…/negotiate`) allowed in a burst. `0` turns this limit off.",
)
    .default(60);

pub(crate) static NEGOTIATE_PER_SECOND: Setting<f64> = Setting::new(
    "rate_limit.negotiate_per_second",
    "SIGNALBOX_RATE_LIMIT_NEGOTIATE_PER_SECOND",
    "How fast the negotiate bucket refills.",
)
.default(20.0)
.check(limits::check_rate);

pub(crate) static LOGIN_FAILURES: Setting<u32> = Setting::new(
    "rate_limit.login_failures",
    "SIGNALBOX_RATE_LIMIT_LOGIN_FAILURES",
    "Failed logins of one user name (from any address) after which further logins for it are refused for `login_backoff`, doubling with each further failure up to `login_backoff_max`; a successful login resets the count, and failures are forgotten after an hour without one. `0` turns the backoff off.",
)
    .default(5);

pub(crate) static LOGIN_BACKOFF: Setting<Duration> = Setting::new(
    "rate_limit.login_backoff",
    "SIGNALBOX_RATE_LIMIT_LOGIN_BACKOFF",
    "The first backoff.",
)
.default(Duration::from_secs(1));

pub(crate) static LOGIN_BACKOFF_MAX: Setting<Duration> = Setting::new(
    "rate_limit.login_backoff_max",
    "SIGNALBOX_RATE_LIMIT_LOGIN_BACKOFF_MAX",
    "The longest backoff: an attacker can slow a user's sign-in down to one attempt per this interval, never lock the account.",
)
    .default(Duration::from_secs(300));

pub(crate) static INBOX_RETENTION: Setting<Duration> = Setting::new(
    "inbox.retention",
    "SIGNALBOX_INBOX_RETENTION",
    "Notifications older than this are deleted (checked at start and hourly); expired refresh tokens are deleted at the same time.",
)
    .default(Duration::from_secs(30 * 86_400));

pub(crate) static PRESENCE_BROADCAST: Setting<PresenceBroadcast> = Setting::new(
    "presence.broadcast",
    "SIGNALBOX_PRESENCE_BROADCAST",
    "Who receives `PresenceChanged` when a user goes online or offline: `watchers` (the connections that called `WatchPresence` for that user or for everyone), `all` (every connection of the hub; a storm of N users then costs N²/2 frames) or `off` (presence is recorded but not pushed).",
)
    .default(PresenceBroadcast::Watchers);

pub(crate) static OIDC_ISSUER: Setting<String> = Setting::new(
    "oidc.issuer",
    "SIGNALBOX_OIDC_ISSUER",
    "An external OpenID Connect issuer whose ID/access tokens are accepted, e.g. `https://accounts.google.com`.",
)
    .unset("none (off)");

pub(crate) static OIDC_DISCOVERY_URL: Setting<String> = Setting::new(
    "oidc.discovery_url",
    "SIGNALBOX_OIDC_DISCOVERY_URL",
    "Where the discovery document (and its `jwks_uri`) is read.",
)
.unset("`{issuer}/.well-known/openid-configuration`");

pub(crate) static OIDC_JWKS_URL: Setting<String> = Setting::new(
    "oidc.jwks_url",
    "SIGNALBOX_OIDC_JWKS_URL",
    "The issuer's key set; skips discovery when set.",
)
.unset("from discovery");

pub(crate) static OIDC_AUDIENCE: Setting<String> = Setting::new(
    "oidc.audience",
    "SIGNALBOX_OIDC_AUDIENCE",
    "Required `aud` (your client id). Set it: without it, tokens the issuer made for any client are accepted, and a warning is logged.",
);

pub(crate) static OIDC_USER_CLAIM: Setting<String> = Setting::new(
    "oidc.user_claim",
    "SIGNALBOX_OIDC_USER_CLAIM",
    "The claim whose value is the local user name.",
)
.default("email");

pub(crate) static OIDC_AUTO_CREATE_USERS: Setting<bool> = Setting::new(
    "oidc.auto_create_users",
    "SIGNALBOX_OIDC_AUTO_CREATE_USERS",
    "Create a local account (without password) on first sign-in instead of refusing unknown users.",
)
.default(false);

pub(crate) static OIDC_JWKS_CACHE_TTL: Setting<Duration> = Setting::new(
    "oidc.jwks_cache_ttl",
    "SIGNALBOX_OIDC_JWKS_CACHE_TTL",
    "How long fetched keys are used before a refetch. A token with an unknown `kid` also triggers a refetch (at most every `jwks_min_refresh_interval`), so key rotation needs no restart on the REST API.",
)
    .default(Duration::from_secs(3600));

pub(crate) static OIDC_JWKS_MIN_REFRESH_INTERVAL: Setting<Duration> = Setting::new(
    "oidc.jwks_min_refresh_interval",
    "SIGNALBOX_OIDC_JWKS_MIN_REFRESH_INTERVAL",
    "Shortest interval between refetches caused by an unknown `kid`.",
)
.default(Duration::from_secs(30));

pub(crate) static OIDC_CLIENT_ID: Setting<String> = Setting::new(
    "oidc.client_id",
    "SIGNALBOX_OIDC_CLIENT_ID",
    "The client id the web page (`/`) uses for its \"Sign in with …\" button (authorization code with PKCE, in the browser). Register `https://YOUR-HOST/` as its redirect URI. Without a client id the page offers no external sign-in.",
)
    .unset("`oidc.audience`");

pub(crate) static OIDC_SCOPES: Setting<String> = Setting::new(
    "oidc.scopes",
    "SIGNALBOX_OIDC_SCOPES",
    "Scopes the web page asks the provider for.",
)
.default("openid email profile");

pub(crate) static OIDC_PROVIDER_NAME: Setting<String> = Setting::new(
    "oidc.provider_name",
    "SIGNALBOX_OIDC_PROVIDER_NAME",
    "The provider's name on the page's sign-in button.",
)
.unset("`Google` for Google's issuer, otherwise the issuer's host");

pub(crate) static OIDC_CLIENT_SECRET: Setting<String> = Setting::new(
    "oidc.client_secret",
    "SIGNALBOX_OIDC_CLIENT_SECRET",
    "The client secret of `oidc.client_id` at the provider. When set, the page's \"Sign in with …\" button goes through the service (`/api/auth/oidc/start` → provider → `/api/auth/oidc/callback`), which exchanges the code with client authentication (`client_secret_basic`, or `client_secret_post` when the provider lists only that) and PKCE; needed for Google \"Web application\" clients, Entra ID and Keycloak confidential clients. Never logged, never sent to the browser, shown as `[redacted]`. Prefer the environment variable or the file below to the configuration file. See [sign-in.md](sign-in.md).",
)
    .secret();

pub(crate) static OIDC_CLIENT_SECRET_FILE: Setting<PathBuf> = Setting::new(
    "oidc.client_secret_file",
    "SIGNALBOX_OIDC_CLIENT_SECRET_FILE",
    "A file holding the client secret (surrounding whitespace trimmed), e.g. a container secret. Setting both this and `oidc.client_secret` is an error.",
);

pub(crate) static OIDC_REDIRECT_URL: Setting<String> = Setting::new(
    "oidc.redirect_url",
    "SIGNALBOX_OIDC_REDIRECT_URL",
    "The callback URL registered at the provider for the server-side sign-in. Set it in production, to exactly the registered URL; it must be on the same origin as the page (the sign-in cookies are bound to it).",
)
    .unset(
        "derived from each request: `{scheme}://{host}/api/auth/oidc/callback` (`https` and the host from `X-Forwarded-Proto` / `X-Forwarded-Host` only when the request comes from one of `trusted_proxies`, else `http` and `Host`)",
    )
    .check(oidc::check_redirect_url);

pub(crate) static LOG_FORMAT: Setting<LogFormat> = Setting::new(
    "log.format",
    "SIGNALBOX_LOG_FORMAT",
    "`human`: readable lines; `json`: one JSON object per line with the fields of the enclosing spans (`request_id`, `connection_id`, …).",
)
    .default(LogFormat::Human)
    .flag("--log-format FORMAT");

pub(crate) static METRICS_PUBLIC: Setting<bool> = Setting::new(
    "metrics.public",
    "SIGNALBOX_METRICS_PUBLIC",
    "Serve `GET /metrics` without authentication (only behind a private network).",
)
.default(false);

pub(crate) static METRICS_TOKEN: Setting<String> = Setting::new(
    "metrics.token",
    "SIGNALBOX_METRICS_TOKEN",
    "A static bearer token (at least 16 characters) that may read `/metrics`, for Prometheus' `authorization` setting. Admin access tokens are accepted too.",
)
    .secret()
    .check(ops::check_metrics_token);

pub(crate) static ADMIN_ROLE: Setting<String> = Setting::new(
    "admin.role",
    "SIGNALBOX_ADMIN_ROLE",
    "The role (`role` claim, `signalbox user add --role`) that grants the admin dashboard, the admin API and `/metrics`.",
)
    .default("admin");

pub(crate) static AZURE_ACCESS_KEYS: Setting<Vec<String>> = Setting::new(
    "azure.access_keys",
    "SIGNALBOX_AZURE_ACCESS_KEYS",
    "Turns on Azure SignalR Service compatibility: the `AccessKey` values of the connection strings back ends use (`Endpoint=http://HOST:PORT;AccessKey=KEY;Version=1.0;`), primary first, each at least 32 characters (Azure's are 44). Client tokens and REST tokens signed (HS256/HS512, key as UTF-8 bytes) with any of them are accepted; clients connect at `/client/?hub=NAME`, back ends call `/api/hubs/…`. Unset: off, none of these routes exist.",
)
    .unset("none (off)")
    .env_note("comma-separated")
    .secret()
    .check(azure::check_access_keys);

pub(crate) static AZURE_CLIENT_ENDPOINT: Setting<String> = Setting::new(
    "azure.client_endpoint",
    "SIGNALBOX_AZURE_CLIENT_ENDPOINT",
    "The public URL of the Azure-compatible endpoint, e.g. `https://signalr.example.com`: the `Endpoint` of the connection string `serve` prints at start (`Azure SignalR: Endpoint=…;AccessKey=…;Version=1.0;`), which back ends also hand to their clients.",
)
    .unset("none: `http://LISTEN`")
    .check(azure::check_client_endpoint);

pub(crate) static AZURE_UPSTREAM: Setting<Vec<super::upstream::UpstreamTemplate>> = Setting::new(
    "azure.upstream",
    "SIGNALBOX_AZURE_UPSTREAM",
    "The serverless upstream: `[[azure.upstream]]` tables `{url_template, hub_pattern, category_pattern, event_pattern}` (also Azure's `UrlTemplate`, `HubPattern`, …), in order; each event (category `connections` with `connected`/`disconnected`, or `messages` with the invocation's target) is POSTed to the first template whose three patterns match (`*`, `a,b` or an exact name, case-sensitive; a missing pattern is `*`), `{hub}`, `{category}` and `{event}` replaced by the percent-encoded values; no match: not sent. Each URL must be absolute `http://` or `https://`; query values are never shown.",
)
    .env_note("a JSON array of the same objects")
    .unset("none (invocations answer `Invocation failed, no upstream is configured`)");

pub(crate) static AZURE_UPSTREAM_URL_TEMPLATE: Setting<super::upstream::UrlTemplate> = Setting::new(
    "azure.upstream_url_template",
    "SIGNALBOX_AZURE_UPSTREAM_URL_TEMPLATE",
    "One more upstream template, after those of `azure.upstream`, that matches every event, e.g. `http://localhost:7071/runtime/webhooks/signalr` for Azure Functions.",
);

pub(crate) static AZURE_UPSTREAM_TIMEOUT: Setting<Duration> = Setting::new(
    "azure.upstream_timeout",
    "SIGNALBOX_AZURE_UPSTREAM_TIMEOUT",
    "How long one upstream request may take; an invocation whose request times out is answered with the error `Invocation failed, error: …`.",
)
    .default(Duration::from_secs(30));

pub(crate) static AZURE_UPSTREAM_RETRIES: Setting<u32> = Setting::new(
    "azure.upstream_retries",
    "SIGNALBOX_AZURE_UPSTREAM_RETRIES",
    "Retries of a failed `connected` or `disconnected` request (transport errors, timeouts, `408`, `429`, `5xx`), after 1 s, then doubling (with jitter) up to 30 s; they run in the background, the connection does not wait for them. Invocations are never retried.",
)
    .default(3);

pub(crate) static AZURE_UPSTREAM_REFUSE_CONNECTIONS: Setting<bool> = Setting::new(
    "azure.upstream_refuse_connections",
    "SIGNALBOX_AZURE_UPSTREAM_REFUSE_CONNECTIONS",
    "Whether a `401` or `403` answer to `connected` refuses the connection (the client gets a Close message with the error, `allowReconnect` false); the connection then waits for the first `connected` attempt. Off: the upstream is only told, as Azure's emulator does; transport errors never refuse.",
)
    .default(false);

pub(crate) static WEBHOOKS_URL: Setting<String> = Setting::new(
    "webhooks.url",
    "SIGNALBOX_WEBHOOKS_URL",
    "Turns on lifecycle webhooks: every event (`user.online`, `user.offline`, `connection.connected`, `connection.disconnected`) is stored, then POSTed as JSON to this `http://` or `https://` URL, signed with `webhooks.secret`, and retried until the receiver answers `2xx` (at least once, also across restarts; see [webhooks.md](webhooks.md)).",
)
    .unset("none (off)")
    .url()
    .check(super::webhooks::check_url);

pub(crate) static WEBHOOKS_SECRET: Setting<String> = Setting::new(
    "webhooks.secret",
    "SIGNALBOX_WEBHOOKS_SECRET",
    "Required with `webhooks.url`, at least 32 bytes (`openssl rand -hex 32`): the HMAC-SHA256 key of each request's `X-Signalbox-Signature: sha256=HEX` over `TIMESTAMP.BODY`, which the receiver checks. Never logged, shown as `[redacted]`.",
)
    .secret()
    .check(super::webhooks::check_secret);

pub(crate) static WEBHOOKS_EVENTS: Setting<Vec<String>> = Setting::new(
    "webhooks.events",
    "SIGNALBOX_WEBHOOKS_EVENTS",
    "The events sent, some of `user.online`, `user.offline`, `connection.connected`, `connection.disconnected`.",
)
    .default(crate::webhooks::EventType::NAMES)
    .env_note("comma-separated")
    .check(super::webhooks::check_events);

pub(crate) static WEBHOOKS_DEBOUNCE: Setting<Duration> = Setting::new(
    "webhooks.debounce",
    "SIGNALBOX_WEBHOOKS_DEBOUNCE",
    "`user.offline` is sent only when the user stayed offline this long: a user who comes back within it (a page reload) causes neither `user.offline` nor `user.online`. `user.online` is sent at once otherwise.",
)
    .default(Duration::from_secs(3));

pub(crate) static WEBHOOKS_TIMEOUT: Setting<Duration> = Setting::new(
    "webhooks.timeout",
    "SIGNALBOX_WEBHOOKS_TIMEOUT",
    "How long one attempt waits for the receiver's answer.",
)
.default(Duration::from_secs(10));

pub(crate) static WEBHOOKS_MAX_ATTEMPTS: Setting<u32> = Setting::new(
    "webhooks.max_attempts",
    "SIGNALBOX_WEBHOOKS_MAX_ATTEMPTS",
    "Attempts per event, the first included. Transport errors, timeouts, `408`, `429` and `5xx` are retried; other answers fail the event at once. A failed event stays in the delivery log (admin dashboard), from where it can be sent again.",
)
    .default(12)
    .check(super::webhooks::check_max_attempts);

pub(crate) static WEBHOOKS_BACKOFF: Setting<Duration> = Setting::new(
    "webhooks.backoff",
    "SIGNALBOX_WEBHOOKS_BACKOFF",
    "Delay before the first retry; each further retry doubles it (with jitter: between half and all of it).",
)
    .default(Duration::from_secs(1));

pub(crate) static WEBHOOKS_BACKOFF_MAX: Setting<Duration> = Setting::new(
    "webhooks.backoff_max",
    "SIGNALBOX_WEBHOOKS_BACKOFF_MAX",
    "The longest delay between two attempts.",
)
.default(Duration::from_secs(600));

pub(crate) static WEBHOOKS_RETENTION: Setting<Duration> = Setting::new(
    "webhooks.retention",
    "SIGNALBOX_WEBHOOKS_RETENTION",
    "How long delivered and failed events stay in the delivery log (at most 10000 of them are kept). Pending events are kept until they are delivered or fail.",
)
    .default(Duration::from_secs(7 * 86_400));

/// Every setting, in the order of the docs table.
pub static SETTINGS: &[&dyn Declared] = &[
    &LISTEN,
    &DATA_DIR,
    &REQUIRE_CONFIG,
    &DATABASE,
    &NODE_ID,
    &BACKPLANE,
    &CONNECTION_TOKEN_SECRET,
    &HEARTBEAT_INTERVAL,
    &NODE_TIMEOUT,
    &CHANNEL_PREFIX,
    &ADVERTISE_URL,
    &JWT_SECRET,
    &JWT_ALGORITHM,
    &JWT_PRIVATE_KEY,
    &JWT_KEY_ID,
    &ISSUER,
    &AUDIENCE,
    &ACCESS_TOKEN_TTL,
    &REFRESH_TOKEN_TTL,
    &REGISTRATION,
    &PERMISSION_CLAIM,
    &NOTIFY_PERMISSION,
    &CORS_ORIGINS,
    &CORS_CREDENTIALS,
    &CORS_CHECK_ORIGIN,
    &TRUSTED_PROXIES,
    &RATE_LIMIT,
    &AUTH_BURST,
    &AUTH_PER_SECOND,
    &NEGOTIATE_BURST,
    &NEGOTIATE_PER_SECOND,
    &LOGIN_FAILURES,
    &LOGIN_BACKOFF,
    &LOGIN_BACKOFF_MAX,
    &INBOX_RETENTION,
    &PRESENCE_BROADCAST,
    &OIDC_ISSUER,
    &OIDC_DISCOVERY_URL,
    &OIDC_JWKS_URL,
    &OIDC_AUDIENCE,
    &OIDC_USER_CLAIM,
    &OIDC_AUTO_CREATE_USERS,
    &OIDC_JWKS_CACHE_TTL,
    &OIDC_JWKS_MIN_REFRESH_INTERVAL,
    &OIDC_CLIENT_ID,
    &OIDC_SCOPES,
    &OIDC_PROVIDER_NAME,
    &OIDC_CLIENT_SECRET,
    &OIDC_CLIENT_SECRET_FILE,
    &OIDC_REDIRECT_URL,
    &LOG_FORMAT,
    &METRICS_PUBLIC,
    &METRICS_TOKEN,
    &ADMIN_ROLE,
    &WEBHOOKS_URL,
    &WEBHOOKS_SECRET,
    &WEBHOOKS_EVENTS,
    &WEBHOOKS_DEBOUNCE,
    &WEBHOOKS_TIMEOUT,
    &WEBHOOKS_MAX_ATTEMPTS,
    &WEBHOOKS_BACKOFF,
    &WEBHOOKS_BACKOFF_MAX,
    &WEBHOOKS_RETENTION,
    &AZURE_ACCESS_KEYS,
    &AZURE_CLIENT_ENDPOINT,
    &AZURE_UPSTREAM,
    &AZURE_UPSTREAM_URL_TEMPLATE,
    &AZURE_UPSTREAM_TIMEOUT,
    &AZURE_UPSTREAM_RETRIES,
    &AZURE_UPSTREAM_REFUSE_CONNECTIONS,
];
