//! The whole app: routes, hubs and the middleware that runs before routing.

use std::convert::Infallible;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::{any, get};
use signalbox::HubRouterExt;
use tower::Service;

use crate::echo::echo_endpoint;
use crate::hubs::{authorized_hub::authorized_hub, test_hub::TestHubs};
use crate::jwt::{TokenIssuer, generate_jwt_token};
use crate::routes::{
    RedirectCounter, bad_negotiate, client_result, deployment, echo_redirect, redirect,
};
use crate::static_files::{BUNDLE_ROUTE, StaticFiles, bundle_file};
use crate::{cors, middleware};

/// Builds the app. The returned service lowercases paths, answers CORS and sets the negotiate
/// cookies before handing requests to the router.
pub(crate) fn app(
    issuer: TokenIssuer,
    auth: signalbox::JwtAuth,
    static_files: StaticFiles,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static
{
    let test_hubs = TestHubs::new();
    let test_hub = test_hubs.all_transports();
    let test_hub_context = test_hub.context();
    let router = Router::new()
        .route(
            "/generatejwttoken",
            get(generate_jwt_token).with_state(issuer),
        )
        .route(
            "/clientresult/{connection_id}",
            get(client_result).with_state(test_hub_context),
        )
        .route(
            &format!("{BUNDLE_ROUTE}/{{file}}"),
            get(bundle_file).with_state(static_files),
        )
        .route("/deployment", get(deployment))
        .route("/redirect", any(redirect))
        .route("/redirect/{*rest}", any(redirect))
        .route("/echoredirect", any(echo_redirect))
        .route("/echoredirect/{*rest}", any(echo_redirect))
        .route("/bad-negotiate", any(bad_negotiate))
        .route("/bad-negotiate/{*rest}", any(bad_negotiate))
        .with_state(RedirectCounter::default())
        .map_hub("/testhub", test_hub)
        .map_hub("/testhub-nowebsockets", test_hubs.without_websockets())
        .map_hub("/authorizedhub", authorized_hub(auth))
        .map_connection("/echo", echo_endpoint());
    // Outermost first: lowercase the path, then CORS (which answers OPTIONS), then cookies.
    let pre_routing = tower::ServiceBuilder::new()
        .layer(axum::middleware::from_fn(middleware::lowercase_path))
        .layer(axum::middleware::from_fn(cors::cors))
        .layer(axum::middleware::from_fn(middleware::negotiate_cookies));
    pre_routing.service(router)
}
