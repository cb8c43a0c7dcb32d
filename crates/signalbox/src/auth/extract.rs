//! The axum extractor that authenticates the caller of any route with the application's
//! [`SharedAuthenticator`].

use axum::body::Body;
use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::header::WWW_AUTHENTICATE;
use http::request::Parts;
use http::{HeaderValue, StatusCode};

use super::authenticator::{AuthRequest, SharedAuthenticator};
use super::jwt::AuthError;
use super::principal::Principal;

/// The authenticated caller of a route, authenticated by the [`SharedAuthenticator`] of the
/// router's state (`SharedAuthenticator: FromRef<S>`) from the `Authorization: Bearer` header
/// only: the `access_token` query parameter is never read (hub routes only accept it).
///
/// Rejects with [`AuthRejection`]: `401` with an empty body and `WWW-Authenticate: Bearer` when no
/// credentials were sent, `Bearer error="invalid_token"` when they were refused.
///
/// `Option<Authenticated>` accepts anonymous callers (`None`) but still rejects a presented token
/// that is refused, rather than treating its sender as anonymous.
///
/// ```
/// use axum::{Router, extract::FromRef, routing::get};
/// use signalbox::JwtAuth;
/// use signalbox::auth::{Authenticated, SharedAuthenticator};
///
/// #[derive(Clone)]
/// struct AppState {
///     auth: SharedAuthenticator,
/// }
///
/// impl FromRef<AppState> for SharedAuthenticator {
///     fn from_ref(state: &AppState) -> Self {
///         state.auth.clone()
///     }
/// }
///
/// async fn me(Authenticated(principal): Authenticated) -> String {
///     principal.user_id().unwrap_or_default().to_owned()
/// }
///
/// async fn hello(caller: Option<Authenticated>) -> String {
///     match caller {
///         Some(Authenticated(principal)) => format!("hello {:?}", principal.user_id()),
///         None => "hello stranger".to_owned(),
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let auth = SharedAuthenticator::from(JwtAuth::hs256("a secret of at least thirty-two bytes!")?);
/// let app: Router = Router::new()
///     .route("/me", get(me))
///     .route("/hello", get(hello))
///     .with_state(AppState { auth });
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// Why [`Authenticated`] refused a request: `401` with an empty body and a `WWW-Authenticate`
/// challenge (`Bearer` when no credentials were sent, `Bearer error="invalid_token"` otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRejection {
    error: AuthError,
}

impl AuthRejection {
    /// The refusal.
    pub fn error(&self) -> &AuthError {
        &self.error
    }
}

impl From<AuthError> for AuthRejection {
    fn from(error: AuthError) -> Self {
        Self { error }
    }
}

impl std::fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for AuthRejection {}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let challenge = if self.error == AuthError::Missing {
            HeaderValue::from_static("Bearer")
        } else {
            HeaderValue::from_static("Bearer error=\"invalid_token\"")
        };
        (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, challenge)],
            Body::empty(),
        )
            .into_response()
    }
}

async fn authenticate<S>(parts: &Parts, state: &S) -> Result<Principal, AuthError>
where
    SharedAuthenticator: FromRef<S>,
{
    let auth = SharedAuthenticator::from_ref(state);
    auth.authenticate(AuthRequest::new(&parts.headers)).await
}

fn reject(error: AuthError) -> AuthRejection {
    crate::metrics::auth_failure(error.reason());
    tracing::debug!(target: "signalbox::auth", reason = error.reason(), "request not authenticated");
    error.into()
}

impl<S> FromRequestParts<S> for Authenticated
where
    SharedAuthenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await.map(Self).map_err(reject)
    }
}

impl<S> OptionalFromRequestParts<S> for Authenticated
where
    SharedAuthenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match authenticate(parts, state).await {
            Ok(principal) => Ok(Some(Self(principal))),
            Err(AuthError::Missing) => Ok(None),
            Err(error) => Err(reject(error)),
        }
    }
}
