//! signalbox: an ASP.NET Core SignalR compatible server for axum.
//!
//! The official SignalR clients (`@microsoft/signalr` and the .NET, Java and Python clients)
//! connect unchanged. Declare a [`Hub`] with typed async methods, mount it with
//! [`HubRouterExt::map_hub`], and send to clients from anywhere through a [`HubContext`].
//!
//! ## Layout
//!
//! * [`auth`]: the async [`Authenticator`] shared by hubs and routes (the [`Authenticated`]
//!   extractor), JWT bearer tokens ([`JwtAuth`]) with static keys or remote key sets
//!   (`KeySet`, feature `jwks`), the [`Principal`] of a connection, [`Policy`].
//! * `connection`: negotiate, the connection table and the transports (bytes only).
//! * [`hub`]: hubs, methods, the caller, clients and groups, and the per-connection loop.
//! * [`lifetime`]: routing to all, groups, users and connections ([`HubLifetimeManager`]).
//! * [`HubContext`]: sending from outside hub methods.
//!
//! ```no_run
//! use axum::Router;
//! use signalbox::{Caller, Hub, HubError, HubRouterExt, JwtAuth, Policy};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::builder("chat")
//!     .authentication(JwtAuth::hs256("a secret of at least thirty-two bytes!")?)
//!     .authorize(Policy::authenticated())
//!     .method("Send", |caller: Caller, (message,): (String,)| async move {
//!         let user = caller.user_id().unwrap_or_default().to_owned();
//!         caller.clients().all().send("ReceiveMessage", (user, message)).await?;
//!         Ok::<_, HubError>(())
//!     })
//!     .build();
//! let app: Router = Router::new().map_hub("/hubs/chat", hub);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```

pub mod auth;
mod connection;
mod context;
pub mod hub;
pub mod lifetime;
pub mod metrics;
mod options;
mod router;
pub mod trace;

pub use auth::{
    AuthRequest, Authenticated, Authenticator, JwtAuth, Policy, Principal, SharedAuthenticator,
};
#[doc(hidden)]
pub use connection::__fuzz_websocket_frames;
pub use connection::{
    ClusterNode, ConnectionEndpoint, HttpRequestInfo, NodeDirectory, RawConnection, redact_query,
};
pub use context::HubContext;
pub use hub::{Caller, Hub, HubBuilder, HubError, InvocationReply, UnknownInvocation};
pub use lifetime::{
    Backplane, HubLifetimeManager, LocalLifetimeManager, ScaledLifetimeManager, Target,
};
pub use options::{ConnectionOptions, HubOptions};
pub use router::HubRouterExt;
pub use signalbox_protocol as protocol;
pub use signalbox_protocol::{Protocol, TransportType};
