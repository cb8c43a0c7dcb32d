//! Putting the service together: storage, tokens, presence, the inbox, the hub and the REST
//! API in one axum router, served until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use signalbox::{ClusterNode, HubRouterExt, Policy};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::auth::accounts::Accounts;
use crate::auth::identity::Authenticator;
use crate::auth::oidc::{OidcError, OidcVerifier};
use crate::auth::refresh::RefreshTokens;
use crate::auth::sessions::Sessions;
use crate::auth::tokens::{TokenError, TokenService};
use crate::client_ip::TrustedProxies;
use crate::cluster::backplane::ClusterBackplane;
use crate::cluster::directory::{AdvertisedUrl, NodeAddresses, advertised_url};
use crate::cluster::{Cluster, ClusterServices};
use crate::config::{Config, ConfigError, CorsConfig};
use crate::db::{Db, StoreError};
use crate::notifications::hub::{HUB_PATH, HubScaling, HubServices, notifications_hub};
use crate::notifications::inbox::Inbox;
use crate::origin::OriginCheck;
use crate::presence::Presence;
use crate::rate_limit::RateLimits;
use crate::state::AppState;

/// How often the retention task runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// How long connections get to close at shutdown.
const HUB_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Token signing could not be set up.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The database is unreachable or the schema could not be applied.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The external issuer is misconfigured.
    #[error(transparent)]
    Oidc(#[from] OidcError),
    /// The backplane driver could not be created.
    #[error("cannot start the backplane: {0}")]
    Backplane(#[from] signalbox::lifetime::BackplaneError),
    /// The webhooks are misconfigured.
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::WebhookError),
}

/// The assembled service, ready to serve.
#[derive(Debug)]
pub struct Service {
    state: AppState,
    router: Router,
    retention: tokio::task::JoinHandle<()>,
    /// Deletes expired refresh tokens.
    refresh_purge: tokio::task::JoinHandle<()>,
    /// Removes expired group memberships of serverless hubs.
    azure_purge: Option<tokio::task::JoinHandle<()>>,
    cluster: Cluster,
    /// The URL at which the other nodes reach this one, once known.
    address: AdvertisedUrl,
    sampler: tokio::task::JoinHandle<()>,
    session_watch: tokio::task::JoinHandle<()>,
    outbox: Option<crate::notifications::outbox::Outbox>,
    webhook_worker: Option<crate::webhooks::WebhookWorker>,
}

/// Builds the service from a validated configuration. A missing HS256 secret must have been
/// filled in (see [`crate::data_dir::resolve_secret`]).
pub async fn build(config: Config) -> Result<Service, StartError> {
    let db = Db::open(&config.database).await?;
    let tokens = Arc::new(TokenService::new(&config.auth)?);
    // Each issuer is trusted with its own audiences: the local validator checks the local
    // issuer (and `auth.audience`), the provider's checks the provider and `oidc.audience`.
    let local = tokens.validator()?;
    let oidc = match &config.oidc {
        Some(oidc_config) => {
            let verifier = OidcVerifier::new(oidc_config.clone())?;
            match verifier.prefetch().await {
                Ok(keys) => {
                    tracing::info!(issuer = %verifier.issuer(), keys, "external issuer keys loaded")
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot load the external issuer's keys yet; will retry on demand")
                }
            }
            if oidc_config.audience.is_none() {
                tracing::warn!(
                    "oidc.audience is not set: tokens the issuer made for any client are accepted"
                );
            }
            Some(verifier)
        }
        None => None,
    };

    let presence = Presence::new(db.clone(), config.node.clone(), config.presence.broadcast);
    let webhooks = crate::webhooks::Webhooks::new(db.clone(), &config.webhooks, &config.node)?;
    presence.attach_webhooks(webhooks.clone());
    let recovered = presence.recover().await?;
    if !recovered.is_empty() {
        tracing::info!(users = recovered.len(), node = %config.node, "stale connections of a previous run removed");
    }
    let backplane = match &config.backplane {
        Some(url) => Some(
            ClusterBackplane::connect(url, &config.cluster.channel_prefix, &config.node).await?,
        ),
        None => None,
    };
    let inbox = Inbox::new(db.clone(), presence.clone()).with_backplane(backplane.clone());
    let sessions = Sessions::new(db.clone());
    let identity = Authenticator::new(local, oidc, db.clone(), sessions.clone());
    let notify = Policy::require_claim_value(
        config.auth.permission_claim.clone(),
        [config.auth.notify_permission.clone()],
    );
    // Where the other nodes are, for requests of connections they hold.
    let cluster_node = ClusterNode::new(
        config.node.as_str(),
        Arc::new(NodeAddresses::new(
            db.clone(),
            config.cluster.node_timeout,
            config.cluster.heartbeat_interval,
        )),
    );
    let hub = notifications_hub(
        identity.clone(),
        notify.clone(),
        HubServices {
            accounts: Accounts::new(db.clone()),
            identity: identity.clone(),
            presence: presence.clone(),
            inbox: inbox.clone(),
        },
        HubScaling {
            lifetime: backplane.as_ref().map(ClusterBackplane::lifetime_manager),
            connection_token_secret: config.connection_token_secret.clone(),
            cluster_node: Some(cluster_node.clone()),
        },
    );
    sessions.attach_hub(hub.context());
    let session_watch = sessions.spawn_watch();
    let address = AdvertisedUrl::new(advertised_url(
        config.cluster.advertise_url.as_deref(),
        config.listen,
    ));
    let cluster = Cluster::start(
        ClusterServices {
            db: db.clone(),
            presence: presence.clone(),
            inbox: inbox.clone(),
            hub: hub.context(),
            backplane: backplane.clone(),
            address: address.clone(),
        },
        &config.cluster,
    )
    .await?;
    let retention = inbox.spawn_retention(config.inbox.retention, RETENTION_INTERVAL);
    inbox
        .broadcasts()
        .start(
            hub.context(),
            backplane.as_ref(),
            &config.cluster.channel_prefix,
        )
        .await?;
    // Transactional publish (PostgreSQL only): requests applications made with signalbox_publish.
    let outbox =
        crate::notifications::outbox::Outbox::start(crate::notifications::outbox::OutboxServices {
            db: db.clone(),
            database_url: config.database.trim().to_owned(),
            node: config.node.clone(),
            inbox: inbox.clone(),
            hub: hub.context(),
        });
    let metrics = crate::ops::metrics::Metrics::new();
    signalbox::metrics::register_hub(&hub);
    let sampler = metrics.spawn_sampler(inbox.clone(), hub.context());
    let readiness = crate::ops::health::Readiness::new(db.clone(), hub.context());
    if let Some(backplane) = &backplane {
        readiness.register(crate::ops::health::BackplaneCheck(backplane.clone()));
    }
    // Azure SignalR Service compatibility, when access keys are configured.
    let azure = crate::azure::Azure::new(&config, &db, backplane.clone(), Some(cluster_node));
    if let (Some(azure), Some(backplane)) = (&azure, &backplane) {
        // Existence checks, member lists and closes by scope ask the other nodes.
        let cluster = crate::azure::cluster::AzureCluster::start(
            backplane,
            &config.cluster.channel_prefix,
            db.clone(),
            config.cluster.node_timeout,
        )
        .await?;
        azure.directory.attach_cluster(cluster);
    }
    let azure_purge = azure
        .as_ref()
        .map(|azure| azure.store.spawn_purge(RETENTION_INTERVAL));
    let limits = RateLimits::new(
        &config.rate_limit,
        TrustedProxies::new(config.trusted_proxies.clone()),
    );
    let origins = OriginCheck::new(&config.cors);
    let state = AppState {
        limits: limits.clone(),
        accounts: Accounts::new(db.clone()),
        refresh: RefreshTokens::new(db.clone(), config.auth.refresh_token_ttl),
        groups: crate::groups::Groups::new(db.clone()),
        config: Arc::new(config),
        db,
        tokens,
        identity,
        presence,
        inbox,
        hub: hub.context(),
        notify,
        backplane,
        metrics,
        readiness,
        webhooks,
        azure,
    };
    let webhook_worker = state.webhooks.start();
    let refresh_purge = state.refresh.spawn_purge(RETENTION_INTERVAL);
    let mut router = crate::api::router(state.clone())
        .merge(crate::setup::router(state.clone()))
        .merge(crate::web::router(state.clone()))
        // Outside the notification hub's origin check and negotiate rate limit (Azure's client
        // endpoint has neither), inside the request logs and metrics.
        .merge(
            state
                .azure
                .clone()
                .map(crate::azure::router)
                .unwrap_or_default(),
        )
        .merge(
            // Innermost first: a foreign origin is refused before it costs a negotiate token.
            Router::new()
                .map_hub(HUB_PATH, hub)
                .layer(axum::middleware::from_fn_with_state(
                    limits,
                    crate::rate_limit::limit_negotiate,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    origins,
                    crate::origin::check_origin,
                )),
        );
    if let Some(cors) = cors_layer(&state.config.cors) {
        router = router.layer(cors);
    }
    let router = router
        .layer(TraceLayer::new_for_http().make_span_with(crate::logging::request_span))
        .layer(axum::middleware::from_fn(crate::logging::request_id))
        // Outermost, so refusals by the other layers are counted too; `Router::layer` wraps each
        // route, so the matched path is known.
        .layer(axum::middleware::from_fn(crate::ops::metrics::track_http));
    Ok(Service {
        state,
        router,
        retention,
        refresh_purge,
        azure_purge,
        cluster,
        address,
        sampler,
        session_watch,
        outbox,
        webhook_worker,
    })
}

/// CORS for the configured origins; `None` when no origin is allowed.
fn cors_layer(config: &CorsConfig) -> Option<CorsLayer> {
    if config.allowed_origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-requested-with"),
            HeaderName::from_static("x-signalr-user-agent"),
        ]);
    if config.allowed_origins.iter().any(|o| o == "*") {
        // Validation refuses `*` with credentials.
        return Some(layer.allow_origin(Any));
    }
    let origins: Vec<HeaderValue> = config
        .allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        layer
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(config.allow_credentials),
    )
}

impl Service {
    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The router (REST API, hub, OpenAPI, Swagger UI).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Records the URL at which the other nodes reach this one, now that the bound address is
    /// known (`http://{bound}` unless `cluster.advertise_url` says otherwise).
    async fn advertise(&self, bound: SocketAddr) {
        let config = &self.state.config;
        if let Some(url) = advertised_url(None, bound)
            && self.address.set_if_unknown(url.clone())
            && let Err(error) =
                crate::cluster::directory::record(&self.state.db, &config.node, &url).await
        {
            tracing::warn!(%error, "cannot record this node's address");
        }
        match self.address.get() {
            Some(url) => tracing::debug!(%url, "the other nodes reach this one at this address"),
            None if config.backplane.is_some() => tracing::warn!(
                "cluster.advertise_url is not set and the listen address is not concrete: \
                 Server-Sent Events and long-polling requests for this node's connections that \
                 reach other nodes cannot be forwarded here (they need sticky sessions)"
            ),
            None => {}
        }
    }

    /// Serves on `listener` until `shutdown` resolves (with each request's TCP peer known, for
    /// the per-IP rate limits). Then the hub closes its connections
    /// (clients are told they may reconnect; presence records them offline), and the rows this
    /// node still holds are removed.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if let Ok(bound) = listener.local_addr() {
            self.advertise(bound).await;
        }
        let hub = self.state.hub.clone();
        let azure = self.state.azure.clone();
        let signal = async move {
            shutdown.await;
            let serverless = async {
                match &azure {
                    Some(azure) => azure.hubs.shutdown(HUB_SHUTDOWN_DEADLINE).await,
                    None => 0,
                }
            };
            let (open, serverless) = tokio::join!(hub.shutdown(HUB_SHUTDOWN_DEADLINE), serverless);
            let open = open + serverless;
            if open > 0 {
                tracing::warn!(open, "connections still open after the shutdown deadline");
            }
        };
        let result = axum::serve(
            listener,
            self.router
                .clone()
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal)
        .await;
        self.retention.abort();
        self.state.inbox.broadcasts().stop();
        self.refresh_purge.abort();
        if let Some(purge) = &self.azure_purge {
            purge.abort();
        }
        self.sampler.abort();
        self.session_watch.abort();
        if let Err(error) = self.state.presence.shutdown().await {
            tracing::warn!(%error, "cannot remove this node's presence rows");
        }
        if let Some(outbox) = self.outbox {
            outbox.stop().await;
        }
        if let Some(worker) = self.webhook_worker {
            worker.stop().await;
        }
        self.cluster.stop().await;
        self.state.db.close().await;
        result
    }
}
