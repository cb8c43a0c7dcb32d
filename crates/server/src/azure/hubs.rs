//! Serverless hubs, as Azure SignalR Service runs them: created on first use under the name the
//! client or the back end gives (case-insensitive; `{application}_{hub}` with an application),
//! with no methods of their own.
//!
//! Each hub is a [`signalbox::Hub`] that
//! * authenticates clients with tokens signed by one of the access keys ([`AccessKeys::verify_client`]),
//!   read from `Authorization: Bearer` or the `access_token` query parameter; the user id is
//!   `asrs.s.uid`, else `nameid`, else `sub`;
//! * closes a connection when its token expires only when the token asks for it
//!   (`asrs.s.coae`, at `asrs.s.aeo` if given, else at `exp`), as the service does;
//! * before answering the handshake, adds the connection to the groups its user was added to
//!   through the REST API ([`AzureStore::groups_of`]); once connected, tells the upstream
//!   (`connections/connected`); an upstream refusal closes the connection with
//!   `allowReconnect: false`;
//! * on disconnect, tells the upstream (`connections/disconnected`) in the background;
//! * hands every client invocation to the upstream (`messages/{target}`), whose answer becomes the
//!   completion. Without an upstream, invocations are answered with the error completion
//!   [`NO_UPSTREAM`] (non-blocking ones are dropped) and the connection stays open: the service
//!   closes such connections, which tells a client less about what is wrong.
//!
//! Hubs are kept until the service stops. With a backplane, each hub's messages travel over it
//! on channels `{cluster.channel_prefix}:azure:{hub}`.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use futures_util::future::{BoxFuture, FutureExt};
use serde_json::{Map, Value};
use signalbox::auth::{AuthError, AuthRequest, Authenticator, DEFAULT_MAX_TOKEN_LENGTH, Principal};
use signalbox::lifetime::{
    BackplaneError, HubLifetimeManager, LocalLifetimeManager, ScaledLifetimeManager,
};
use signalbox::{
    Caller, ConnectionOptions, Hub, HubContext, HubError, HubRouterExt, InvocationReply, Policy,
    UnknownInvocation,
};

use super::keys::{AccessKeys, KeyError, USER_ID_CLAIM};
use super::store::AzureStore;
use super::upstream::{ConnectionInfo, Upstream};
use crate::cluster::backplane::{ClusterBackplane, SharedBackplane};

/// Where each hub's routes are mounted in its own router; requests are rewritten to it.
pub(crate) const CLIENT_PATH: &str = "/client";

/// The error completion of client invocations when no upstream is configured.
pub const NO_UPSTREAM: &str = "Invocation failed, no upstream is configured";

/// Longest hub or application name, in characters (Azure's limit).
pub const MAX_NAME_LENGTH: usize = 128;

/// A request header carrying the client's query string (without `access_token`) to the hub,
/// which keeps it with the connection for the upstream (`X-ASRS-Client-Query`). Set by the
/// client routes; a client's own header of that name is dropped.
pub(crate) const CLIENT_QUERY_HEADER: &str = "x-signalbox-client-query";

/// Claims whose value is the user id, in the order they are looked up.
const USER_ID_CLAIMS: [&str; 3] = [USER_ID_CLAIM, "nameid", "sub"];

/// "Close on authentication expiry" and its instant (unix seconds), set by the SDKs.
const CLOSE_ON_EXPIRY_CLAIM: &str = "asrs.s.coae";
const EXPIRES_ON_CLAIM: &str = "asrs.s.aeo";

/// Why a serverless hub cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureError {
    /// The hub name does not match `^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$`.
    #[error(
        "invalid hub name {0:?}: a hub name starts with a letter and has at most 128 letters, digits, '_', '`', ',', '.', '[' or ']'"
    )]
    InvalidHub(String),
    /// The application name does not match the same pattern.
    #[error(
        "invalid application name {0:?}: an application name starts with a letter and has at most 128 letters, digits, '_', '`', ',', '.', '[' or ']'"
    )]
    InvalidApplication(String),
    /// The hub's backplane channels could not be opened.
    #[error("cannot open the hub's backplane channels: {0}")]
    Backplane(#[from] BackplaneError),
}

/// Whether `name` matches Azure's hub and application pattern, up to `max` characters.
fn is_valid_name(name: &str, max: usize) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= max
        && chars
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '`' | ',' | '.' | '[' | ']'))
}

/// The internal name of hub `hub` of application `application`: both validated against Azure's
/// pattern, lowercased, `{application}_{hub}` with an application.
pub fn internal_hub_name(hub: &str, application: Option<&str>) -> Result<String, AzureError> {
    if !is_valid_name(hub, MAX_NAME_LENGTH) {
        return Err(AzureError::InvalidHub(hub.to_owned()));
    }
    match application.filter(|app| !app.is_empty()) {
        None => Ok(hub.to_ascii_lowercase()),
        Some(app) if is_valid_name(app, MAX_NAME_LENGTH) => Ok(format!(
            "{}_{}",
            app.to_ascii_lowercase(),
            hub.to_ascii_lowercase()
        )),
        Some(app) => Err(AzureError::InvalidApplication(app.to_owned())),
    }
}

/// Checks an internal name (as the `hub` query of a client URL carries it, with any application
/// prefix) and lowercases it.
pub fn client_hub_name(hub: &str) -> Result<String, AzureError> {
    // `{application}_{hub}`: two names and the separator.
    if is_valid_name(hub, 2 * MAX_NAME_LENGTH + 1) {
        Ok(hub.to_ascii_lowercase())
    } else {
        Err(AzureError::InvalidHub(hub.to_owned()))
    }
}

/// A hub's lifetime manager, with this node's connections in it.
#[derive(Clone)]
enum Lifetime {
    /// One node.
    Local(Arc<LocalLifetimeManager>),
    /// Several nodes over a backplane.
    Scaled(Arc<ScaledLifetimeManager<SharedBackplane>>),
}

impl Lifetime {
    fn manager(&self) -> Arc<dyn HubLifetimeManager> {
        match self {
            Lifetime::Local(local) => local.clone(),
            Lifetime::Scaled(scaled) => scaled.clone(),
        }
    }

    fn local(&self) -> &LocalLifetimeManager {
        match self {
            Lifetime::Local(local) => local,
            Lifetime::Scaled(scaled) => scaled.local(),
        }
    }
}

/// One serverless hub. Cheap to clone.
#[derive(Clone)]
pub struct AzureHub {
    inner: Arc<HubEntry>,
}

struct HubEntry {
    name: String,
    context: HubContext,
    lifetime: Lifetime,
    /// The hub's routes at [`CLIENT_PATH`].
    router: Router,
}

impl std::fmt::Debug for AzureHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureHub")
            .field("name", &self.inner.name)
            .field(
                "connections",
                &self.inner.lifetime.local().connection_count(),
            )
            .finish_non_exhaustive()
    }
}

impl AzureHub {
    /// The internal name: lowercased, `{application}_{hub}` with an application.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Sends, groups, client invocations and aborts, across nodes with a backplane.
    pub fn context(&self) -> &HubContext {
        &self.inner.context
    }

    /// This node's connections of the hub.
    pub fn local(&self) -> &LocalLifetimeManager {
        self.inner.lifetime.local()
    }

    /// The hub's routes (`/client/negotiate`, `/client`).
    pub(crate) fn router(&self) -> Router {
        self.inner.router.clone()
    }
}

/// The serverless hubs, created on first use. Cheap to clone.
#[derive(Clone)]
pub struct AzureHubs {
    inner: Arc<HubsInner>,
}

struct HubsInner {
    services: AzureHubServices,
    hubs: RwLock<HashMap<String, AzureHub>>,
    /// Held while a hub is created, so that two requests never create the same one.
    creating: tokio::sync::Mutex<()>,
}

/// What every serverless hub uses.
#[derive(Clone)]
pub struct AzureHubServices {
    /// Verifies client tokens.
    pub keys: AccessKeys,
    /// The webhooks connection events and invocations go to.
    pub upstream: Upstream,
    /// Users' group memberships, applied to their connections.
    pub store: AzureStore,
    /// The backplane, if the service runs several nodes.
    pub backplane: Option<ClusterBackplane>,
    /// The prefix of the backplane's channels (`cluster.channel_prefix`).
    pub channel_prefix: String,
    /// The secret connection tokens are signed with, so a WebSocket may reach any node.
    pub connection_token_secret: Option<String>,
    /// This node and where the others are, so requests of Server-Sent Events and long polling
    /// may reach any node too (forwarded to the one holding the connection).
    pub cluster_node: Option<signalbox::ClusterNode>,
}

impl std::fmt::Debug for AzureHubServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureHubServices")
            .field("keys", &self.keys)
            .field("upstream", &self.upstream.is_enabled())
            .field("scaled", &self.backplane.is_some())
            .field("signed_tokens", &self.connection_token_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AzureHubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hubs = self
            .inner
            .hubs
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("AzureHubs")
            .field("hubs", &hubs.len())
            .field("services", &self.inner.services)
            .finish()
    }
}

impl AzureHubs {
    /// No hub yet.
    pub fn new(services: AzureHubServices) -> Self {
        Self {
            inner: Arc::new(HubsInner {
                services,
                hubs: RwLock::new(HashMap::new()),
                creating: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The access keys client tokens are verified with.
    pub fn keys(&self) -> &AccessKeys {
        &self.inner.services.keys
    }

    /// Gets or creates the serverless hub `name` (the internal name: lowercased, with the
    /// application prefix; it is checked and lowercased again).
    pub async fn hub(&self, name: &str) -> Result<AzureHub, AzureError> {
        let name = client_hub_name(name)?;
        if let Some(hub) = self.existing(&name) {
            return Ok(hub);
        }
        let _creating = self.inner.creating.lock().await;
        if let Some(hub) = self.existing(&name) {
            return Ok(hub);
        }
        let services = &self.inner.services;
        let lifetime = match &services.backplane {
            Some(backplane) => Lifetime::Scaled(
                backplane
                    .hub_lifetime(&format!("{}:azure:{name}", services.channel_prefix))
                    .await?,
            ),
            None => Lifetime::Local(Arc::new(LocalLifetimeManager::new())),
        };
        let hub = build_hub(&name, services, lifetime);
        self.inner
            .hubs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), hub.clone());
        tracing::debug!(target: "signalbox::azure", hub = %name, "serverless hub created");
        Ok(hub)
    }

    /// The hub `name` if it exists (`name` as [`AzureHubs::hub`] takes it).
    pub fn existing(&self, name: &str) -> Option<AzureHub> {
        let hubs = self
            .inner
            .hubs
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match hubs.get(name) {
            Some(hub) => Some(hub.clone()),
            None => hubs.get(&name.to_ascii_lowercase()).cloned(),
        }
    }

    /// Every hub created so far.
    pub fn all(&self) -> Vec<AzureHub> {
        self.inner
            .hubs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Closes the connections of every hub (clients are told they may reconnect), waiting at most
    /// `deadline`; returns how many were still open then.
    pub async fn shutdown(&self, deadline: std::time::Duration) -> usize {
        let hubs = self.all();
        let closing = hubs.iter().map(|hub| hub.context().shutdown(deadline));
        futures_util::future::join_all(closing)
            .await
            .into_iter()
            .sum()
    }
}

/// Builds hub `name` (see the module documentation).
fn build_hub(name: &str, services: &AzureHubServices, lifetime: Lifetime) -> AzureHub {
    let hub_name: Arc<str> = Arc::from(name);
    let on_join = (hub_name.clone(), services.store.clone());
    let on_connect = (hub_name.clone(), services.clone());
    let on_disconnect = (hub_name.clone(), services.upstream.clone());
    let on_invoke = (hub_name.clone(), services.upstream.clone());
    let hub = Hub::builder(name)
        .lifetime_manager(lifetime.manager())
        .connection_options(
            ConnectionOptions::default()
                // Only tokens whose principal kept `exp` (see `principal`) close when it passes.
                .close_on_authentication_expiration(true)
                .connection_token_secret(
                    services
                        .connection_token_secret
                        .as_ref()
                        .map(|secret| Arc::from(secret.as_bytes())),
                )
                .cluster_node(services.cluster_node.clone()),
        )
        .authentication(ClientTokens {
            keys: services.keys.clone(),
            hub: hub_name.clone(),
        })
        .authorize(Policy::authenticated())
        .initial_groups(move |principal| {
            let (hub, store) = on_join.clone();
            async move { stored_groups(&hub, &store, principal).await }
        })
        .on_connected(move |caller: Caller| {
            let (hub, services) = on_connect.clone();
            async move { connected(&hub, &services, &caller).await }
        })
        .on_disconnected(move |caller: Caller| {
            let (hub, upstream) = on_disconnect.clone();
            async move {
                if upstream.is_enabled() {
                    // Sent and retried in the background; the connection's cleanup does not wait.
                    upstream
                        .disconnected(&connection_info(&hub, &caller), None)
                        .await;
                }
                Ok(())
            }
        })
        .fallback(move |caller: Caller, invocation: UnknownInvocation| {
            let (hub, upstream) = on_invoke.clone();
            async move {
                if !upstream.is_enabled() {
                    return InvocationReply::error(NO_UPSTREAM);
                }
                let info = connection_info(&hub, &caller);
                upstream.invoke(&info, caller.protocol(), invocation).await
            }
        })
        .build();
    let router = Router::new().map_hub(CLIENT_PATH, hub.clone());
    AzureHub {
        inner: Arc::new(HubEntry {
            name: name.to_owned(),
            context: hub.context(),
            lifetime,
            router,
        }),
    }
}

/// A new connection: the upstream's `connected` (its user's stored groups were joined before
/// the handshake, see [`stored_groups`]).
async fn connected(
    hub: &str,
    services: &AzureHubServices,
    caller: &Caller,
) -> Result<(), HubError> {
    if services.upstream.is_enabled() {
        let info = connection_info(hub, caller);
        services
            .upstream
            .connected(&info)
            .await
            .map_err(HubError::new)?;
    }
    Ok(())
}

/// The groups the REST API added the connection's user to: joined before the client sees the
/// connection open, so a group send right after `start()` reaches it.
async fn stored_groups(hub: &str, store: &AzureStore, principal: Option<Principal>) -> Vec<String> {
    match principal.as_ref().and_then(Principal::user_id) {
        Some(user) if !user.is_empty() => store.groups_of(hub, user).await,
        _ => Vec::new(),
    }
}

/// What the upstream is told about a connection.
fn connection_info(hub: &str, caller: &Caller) -> ConnectionInfo {
    let mut claims = Vec::new();
    if let Some(principal) = caller.principal() {
        for (claim, value) in principal.claims() {
            match value {
                Value::Array(items) => claims.extend(
                    items
                        .iter()
                        .filter_map(claim_text)
                        .map(|text| (claim.clone(), text)),
                ),
                other => claims.extend(claim_text(other).map(|text| (claim.clone(), text))),
            }
        }
    }
    ConnectionInfo {
        hub: hub.to_owned(),
        connection_id: caller.connection_id().to_owned(),
        user_id: caller
            .user_id()
            .filter(|user| !user.is_empty())
            .map(str::to_owned),
        claims,
        query: caller
            .request()
            .header(CLIENT_QUERY_HEADER)
            .filter(|query| !query.is_empty())
            .map(str::to_owned),
    }
}

/// A claim value as text: strings as they are, numbers and booleans as written in JSON.
fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Whether a claim is set to a true value (`true`, `"true"`, `"True"`, `1`).
fn is_truthy(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(flag)) => *flag,
        Some(Value::String(text)) => {
            let text = text.trim();
            text.eq_ignore_ascii_case("true") || text == "1"
        }
        Some(Value::Number(number)) => number.as_f64().is_some_and(|n| n != 0.0),
        Some(Value::Array(items)) => is_truthy(items.first()),
        _ => false,
    }
}

/// The principal of a verified client token: the user id from the first of
/// [`USER_ID_CLAIMS`] present, and `exp` only when the token asks to be closed at its expiry
/// (`asrs.s.coae`; the instant is `asrs.s.aeo` when given).
fn principal(mut claims: Map<String, Value>) -> Principal {
    let user_id = USER_ID_CLAIMS.iter().find_map(|claim| {
        let value = match claims.get(*claim)? {
            Value::Array(items) => items.first()?,
            value => value,
        };
        claim_text(value).filter(|id| !id.is_empty())
    });
    if is_truthy(claims.get(CLOSE_ON_EXPIRY_CLAIM)) {
        if let Some(expires_on) = claims
            .get(EXPIRES_ON_CLAIM)
            .and_then(|value| match value {
                Value::Number(number) => number.as_f64(),
                Value::String(text) => text.trim().parse().ok(),
                _ => None,
            })
            .filter(|at| at.is_finite() && *at > 0.0)
        {
            claims.insert("exp".to_owned(), Value::from(expires_on));
        }
    } else {
        claims.remove("exp");
    }
    match user_id {
        Some(user) => Principal::with_user_id(claims, user),
        // No user id claim: `Principal::new` finds none.
        None => Principal::new(claims, USER_ID_CLAIM),
    }
}

/// Authenticates the clients of one hub with tokens signed by an access key.
struct ClientTokens {
    keys: AccessKeys,
    hub: Arc<str>,
}

impl Authenticator for ClientTokens {
    fn authenticate<'a>(
        &'a self,
        request: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, AuthError>> {
        let result = verify_client_token(&self.keys, &self.hub, request.bearer_token());
        futures_util::future::ready(result).boxed()
    }
}

/// Verifies the bearer token of a client of hub `hub`.
pub(crate) fn verify_client_token(
    keys: &AccessKeys,
    hub: &str,
    token: Option<String>,
) -> Result<Principal, AuthError> {
    let token = token.ok_or(AuthError::Missing)?;
    if token.len() > DEFAULT_MAX_TOKEN_LENGTH {
        return Err(AuthError::TooLarge);
    }
    keys.verify_client(&token, hub)
        .map(principal)
        .map_err(|error| match error {
            KeyError::Malformed => AuthError::Malformed,
            KeyError::InvalidAlgorithm => AuthError::AlgorithmNotAllowed,
            KeyError::Expired => AuthError::Expired,
            KeyError::NotYetValid => AuthError::NotYetValid,
            KeyError::InvalidAudience => AuthError::InvalidAudience,
            KeyError::MissingClaim(_) => AuthError::InvalidClaims,
            _ => AuthError::InvalidSignature,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn names_are_checked_and_lowercased() {
        assert_eq!(
            internal_hub_name("Chat", None).ok().as_deref(),
            Some("chat")
        );
        assert_eq!(
            internal_hub_name("Chat", Some("MyApp")).ok().as_deref(),
            Some("myapp_chat")
        );
        assert_eq!(
            internal_hub_name("Chat", Some("")).ok().as_deref(),
            Some("chat")
        );
        assert!(internal_hub_name("a`b,c.d[e]_f9", None).is_ok());
        for bad in ["", "9chat", "_chat", "chat room", "chat/x", "chät"] {
            assert!(
                matches!(internal_hub_name(bad, None), Err(AzureError::InvalidHub(_))),
                "{bad}"
            );
        }
        assert!(internal_hub_name(&"a".repeat(128), None).is_ok());
        assert!(internal_hub_name(&"a".repeat(129), None).is_err());
        assert!(matches!(
            internal_hub_name("chat", Some("1app")),
            Err(AzureError::InvalidApplication(_))
        ));
        assert_eq!(
            client_hub_name("MyApp_Chat").ok().as_deref(),
            Some("myapp_chat")
        );
        assert!(client_hub_name(&"a".repeat(257)).is_ok());
        assert!(client_hub_name(&"a".repeat(258)).is_err());
    }

    #[test]
    fn user_id_from_asrs_uid_then_nameid_then_sub() {
        let p = principal(claims(
            json!({"asrs.s.uid": "a", "nameid": "b", "sub": "c"}),
        ));
        assert_eq!(p.user_id(), Some("a"));
        let p = principal(claims(json!({"nameid": ["b", "x"], "sub": "c"})));
        assert_eq!(p.user_id(), Some("b"));
        let p = principal(claims(json!({"sub": "c"})));
        assert_eq!(p.user_id(), Some("c"));
        let p = principal(claims(json!({"aud": "x"})));
        assert_eq!(p.user_id(), None);
    }

    #[test]
    fn expiry_is_kept_only_when_asked_for() {
        let p = principal(claims(json!({"exp": 2_000_000_000u64})));
        assert_eq!(p.expires_at(), None);
        for coae in [json!(true), json!("True"), json!("true"), json!(1)] {
            let p = principal(claims(
                json!({"exp": 2_000_000_000u64, "asrs.s.coae": coae}),
            ));
            assert!(p.expires_at().is_some(), "{coae}");
        }
        let p = principal(claims(
            json!({"exp": 2_000_000_000u64, "asrs.s.coae": "false"}),
        ));
        assert_eq!(p.expires_at(), None);
        let p = principal(claims(
            json!({"exp": 2_000_000_000u64, "asrs.s.coae": "true", "asrs.s.aeo": "1900000000"}),
        ));
        assert_eq!(
            p.expires_at(),
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_900_000_000))
        );
    }
}
