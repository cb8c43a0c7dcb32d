//! Hubs: methods clients invoke, lifecycle hooks, and the per-connection loop
//! (HubProtocol.md; SignalR's `Hub`, `HubConnectionHandler` and `DefaultHubDispatcher`).

mod args;
mod caller;
mod clients;
mod dispatcher;
pub(crate) mod endpoint;
mod error;
mod fallback;
pub(crate) mod handler;
mod heartbeat;
pub(crate) mod method;
mod rate_limit;
mod upload;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::{BoxFuture, FutureExt};
use serde::Serialize;

pub use args::{ArgumentBinder, BindError, FromArgument, HubArgs, IntoArguments};
pub use caller::Caller;
pub use clients::{CallerClients, ClientProxy, Groups, HubClients};
pub use error::HubError;
pub(crate) use fallback::FallbackHandler;
pub use fallback::{InvocationReply, UnknownInvocation};
pub(crate) use method::{Arguments, InvokeError, MethodDescriptor, MethodKind};
pub use rate_limit::RateLimit;
pub(crate) use upload::UploadEvent;
pub use upload::UploadStream;

use crate::auth::{Authenticator, Policy, Principal, SharedAuthenticator};
use crate::connection::endpoint::NegotiateRedirectHook;
use crate::context::HubContext;
use crate::lifetime::{HubLifetimeManager, LocalLifetimeManager};
use crate::options::{ConnectionOptions, HubOptions};

type LifecycleHook = Arc<dyn Fn(Caller) -> BoxFuture<'static, Result<(), HubError>> + Send + Sync>;

/// Names the groups a new connection joins before its handshake is answered.
pub(crate) type InitialGroups =
    Arc<dyn Fn(Option<Principal>) -> BoxFuture<'static, Vec<String>> + Send + Sync>;

/// A hub: a named set of methods, its options, authentication and policies. Mount it with
/// [`HubRouterExt::map_hub`](crate::HubRouterExt::map_hub). Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

pub(crate) struct HubInner {
    pub(crate) name: String,
    pub(crate) methods: HashMap<String, MethodDescriptor>,
    /// Handles invocations of undeclared methods.
    pub(crate) fallback: Option<FallbackHandler>,
    pub(crate) on_connected: Option<LifecycleHook>,
    pub(crate) on_disconnected: Option<LifecycleHook>,
    pub(crate) initial_groups: Option<InitialGroups>,
    pub(crate) options: HubOptions,
    pub(crate) connection_options: ConnectionOptions,
    pub(crate) policy: Policy,
    pub(crate) auth: Option<SharedAuthenticator>,
    pub(crate) context: HubContext,
    pub(crate) negotiate_redirect: Option<NegotiateRedirectHook>,
    /// Pings, client timeouts, token expiry and shutdown for all of the hub's connections.
    pub(crate) heartbeat: heartbeat::Heartbeat,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut methods: Vec<&String> = self.inner.methods.keys().collect();
        methods.sort();
        f.debug_struct("Hub")
            .field("name", &self.inner.name)
            .field("methods", &methods)
            .field("fallback", &self.inner.fallback.is_some())
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Starts declaring a hub.
    pub fn builder(name: impl Into<String>) -> HubBuilder {
        HubBuilder::new(name.into())
    }

    /// The hub's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A handle for sending to this hub's clients from outside hub methods.
    pub fn context(&self) -> HubContext {
        self.inner.context.clone()
    }

    /// The hub's options.
    pub fn options(&self) -> &HubOptions {
        &self.inner.options
    }
}

/// Declares a hub.
///
/// ```
/// use signalbox::{Caller, Hub, HubError, Policy};
///
/// let hub = Hub::builder("chat")
///     .authorize(Policy::authenticated())
///     .method("Send", |caller: Caller, (message,): (String,)| async move {
///         let user = caller.user_id().unwrap_or("anonymous").to_owned();
///         caller.clients().all().send("ReceiveMessage", (user, message)).await?;
///         Ok::<_, HubError>(())
///     })
///     .build();
/// assert_eq!(hub.name(), "chat");
/// ```
pub struct HubBuilder {
    name: String,
    methods: HashMap<String, MethodDescriptor>,
    fallback: Option<FallbackHandler>,
    on_connected: Option<LifecycleHook>,
    on_disconnected: Option<LifecycleHook>,
    initial_groups: Option<InitialGroups>,
    options: HubOptions,
    connection_options: ConnectionOptions,
    policy: Policy,
    auth: Option<SharedAuthenticator>,
    lifetime: Option<Arc<dyn HubLifetimeManager>>,
    negotiate_redirect: Option<NegotiateRedirectHook>,
}

impl std::fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl HubBuilder {
    fn new(name: String) -> Self {
        Self {
            name,
            methods: HashMap::new(),
            fallback: None,
            on_connected: None,
            on_disconnected: None,
            initial_groups: None,
            options: HubOptions::default(),
            connection_options: ConnectionOptions::default(),
            policy: Policy::anonymous(),
            auth: None,
            lifetime: None,
            negotiate_redirect: None,
        }
    }

    /// Adds a method clients can invoke. Names are matched case-insensitively; the handler takes the
    /// [`Caller`] and its arguments as a tuple (`()` for none) and returns a serialisable result
    /// (`()` sends `result: null`).
    pub fn method<A, R, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        F: Fn(Caller, A) -> Fut + Send + Sync + 'static,
        A: HubArgs,
        Fut: Future<Output = Result<R, HubError>> + Send + 'static,
        R: Serialize + Send + Sync + 'static,
    {
        self.methods
            .insert(name.to_lowercase(), MethodDescriptor::unary(handler));
        self
    }

    /// Adds a streaming method (server to client): the handler returns a stream of items, sent as
    /// StreamItem messages and ended with a Completion. The client cancelling the stream drops it;
    /// [`Caller::cancellation_token`] tells the method.
    pub fn stream<A, T, S, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        F: Fn(Caller, A) -> Fut + Send + Sync + 'static,
        A: HubArgs,
        Fut: Future<Output = Result<S, HubError>> + Send + 'static,
        S: futures_util::Stream<Item = Result<T, HubError>> + Send + 'static,
        T: Serialize + Send + Sync + 'static,
    {
        self.methods
            .insert(name.to_lowercase(), MethodDescriptor::stream(handler));
        self
    }

    /// Handles Invocation messages whose target matches no declared method (serverless hubs,
    /// where another service answers them). The handler gets the [`Caller`] and the invocation
    /// as received, its arguments unbound ([`UnknownInvocation::arguments`]), and its
    /// [`InvocationReply`] becomes the Completion: `Result` with the value, `Void` with neither
    /// result nor error, `Error` with the text verbatim. Non-blocking invocations (no id) get no
    /// reply.
    ///
    /// Like a declared method, it runs for connections the hub's policy admitted, counts towards
    /// [`HubOptions::invocation_rate_limit`] and
    /// [`HubOptions::maximum_parallel_invocations_per_client`], and is recorded in the
    /// invocation metrics under method [`FALLBACK_METHOD`](crate::metrics::FALLBACK_METHOD).
    /// Declared methods always win. StreamInvocation messages and invocations carrying upload
    /// streams are not handed to it: an unknown target still gets the "Unknown hub method"
    /// error. Installing a fallback again replaces the previous one.
    ///
    /// ```
    /// use signalbox::protocol::Payload;
    /// use signalbox::{Caller, Hub, InvocationReply, UnknownInvocation};
    ///
    /// let hub = Hub::builder("serverless")
    ///     .fallback(|caller: Caller, invocation: UnknownInvocation| async move {
    ///         match invocation.target.to_lowercase().as_str() {
    ///             // Echo the first argument back, in the form the client sent it.
    ///             "echo" => match invocation.arguments.into_iter().next() {
    ///                 Some(first) => InvocationReply::Result(first),
    ///                 None => InvocationReply::Result(Payload::null()),
    ///             },
    ///             "whoami" => InvocationReply::result(caller.connection_id().to_owned()),
    ///             "ping" => InvocationReply::Void,
    ///             _ => InvocationReply::error(format!("No handler for '{}'.", invocation.target)),
    ///         }
    ///     })
    ///     .build();
    /// assert_eq!(hub.name(), "serverless");
    /// ```
    pub fn fallback<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Caller, UnknownInvocation) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = InvocationReply> + Send + 'static,
    {
        self.fallback = Some(Arc::new(move |caller, invocation| {
            handler(caller, invocation).boxed()
        }));
        self
    }

    /// Requires `policy` for method `name` (declared before or after), on top of the hub's policy.
    /// A caller that fails it gets an error completion; the connection stays open.
    pub fn method_policy(mut self, name: &str, policy: Policy) -> Self {
        if let Some(method) = self.methods.get_mut(&name.to_lowercase()) {
            method.policy = Some(policy);
        } else {
            tracing::warn!(target: "signalbox::hub", method = name, "policy for an undeclared method ignored");
        }
        self
    }

    /// Runs when a connection has completed its handshake. An error closes the connection.
    pub fn on_connected<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Caller) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HubError>> + Send + 'static,
    {
        self.on_connected = Some(Arc::new(move |caller| hook(caller).boxed()));
        self
    }

    /// Names groups each new connection joins before its handshake is answered: when the
    /// client's `start()` resolves, messages to those groups already reach it (groups joined in
    /// [`on_connected`](Self::on_connected) are joined after the client sees the connection
    /// open). The hook gets the connection's principal; it should be quick (it delays the
    /// handshake), and a group it cannot join is logged and skipped.
    ///
    /// ```
    /// use signalbox::Hub;
    ///
    /// let hub = Hub::builder("chat")
    ///     .initial_groups(|principal| async move {
    ///         match principal.and_then(|p| p.user_id().map(str::to_owned)) {
    ///             Some(user) => vec![format!("user-{user}"), "everyone".to_owned()],
    ///             None => vec!["everyone".to_owned()],
    ///         }
    ///     })
    ///     .build();
    /// # let _ = hub;
    /// ```
    pub fn initial_groups<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Option<Principal>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<String>> + Send + 'static,
    {
        self.initial_groups = Some(Arc::new(move |principal| hook(principal).boxed()));
        self
    }

    /// Runs when a connection has ended.
    pub fn on_disconnected<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Caller) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HubError>> + Send + 'static,
    {
        self.on_disconnected = Some(Arc::new(move |caller| hook(caller).boxed()));
        self
    }

    /// Requires `policy` to negotiate and connect (like `[Authorize]` on the hub class).
    pub fn authorize(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Authenticates the requests of this hub's routes with `auth`: a [`JwtAuth`](crate::JwtAuth),
    /// a [`SharedAuthenticator`] (to share one with REST routes) or any [`Authenticator`]. The
    /// `access_token` query parameter is accepted on hub routes.
    pub fn authentication(mut self, auth: impl Authenticator) -> Self {
        self.auth = Some(SharedAuthenticator::new(auth));
        self
    }

    /// Replaces the hub options.
    pub fn options(mut self, options: HubOptions) -> Self {
        self.options = options;
        self
    }

    /// Replaces the connection (transport) options.
    pub fn connection_options(mut self, options: ConnectionOptions) -> Self {
        self.connection_options = options;
        self
    }

    /// Uses another lifetime manager (for example a backplane). Defaults to
    /// [`LocalLifetimeManager`].
    pub fn lifetime_manager(mut self, lifetime: Arc<dyn HubLifetimeManager>) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// Answers negotiate requests with a redirect (`{"url": …, "accessToken": …}`) when `hook`
    /// returns one, as Azure SignalR Service does; the client then negotiates at that URL.
    pub fn negotiate_redirect<F>(mut self, hook: F) -> Self
    where
        F: Fn(&crate::HttpRequestInfo) -> Option<signalbox_protocol::NegotiateRedirect>
            + Send
            + Sync
            + 'static,
    {
        self.negotiate_redirect = Some(Arc::new(hook));
        self
    }

    /// Finishes the hub.
    pub fn build(self) -> Hub {
        let lifetime = self
            .lifetime
            .unwrap_or_else(|| Arc::new(LocalLifetimeManager::new()));
        let context = HubContext::new(lifetime);
        let heartbeat = heartbeat::Heartbeat::new(
            self.options.keep_alive_interval,
            self.options.client_timeout_interval,
            self.connection_options.close_on_authentication_expiration,
            context.shutdown_token().clone(),
        );
        Hub {
            inner: Arc::new(HubInner {
                name: self.name,
                methods: self.methods,
                fallback: self.fallback,
                on_connected: self.on_connected,
                on_disconnected: self.on_disconnected,
                initial_groups: self.initial_groups,
                options: self.options,
                connection_options: self.connection_options,
                policy: self.policy,
                auth: self.auth,
                context,
                negotiate_redirect: self.negotiate_redirect,
                heartbeat,
            }),
        }
    }
}
