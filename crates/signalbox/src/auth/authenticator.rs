//! The authentication seam: anything that turns the parts of a request into a [`Principal`].
//!
//! [`JwtAuth`] is one implementation; an application implements [`Authenticator`] to add its own
//! checks (a session table, an account lookup, several issuers) and passes it to
//! [`HubBuilder::authentication`](crate::HubBuilder::authentication),
//! [`ConnectionEndpoint::authentication`](crate::ConnectionEndpoint::authentication) and, through
//! [`SharedAuthenticator`] in its axum state, to the [`Authenticated`](super::Authenticated)
//! extractor of its REST routes, so that hubs and REST routes share one authenticator.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use futures_util::future::{BoxFuture, FutureExt};
use http::HeaderMap;

use super::jwt::{AuthError, JwtAuth, bearer_token};
use super::principal::Principal;

/// The parts of a request an [`Authenticator`] looks at.
///
/// `query` is `Some` only on hub routes (negotiate, connect, send, delete), where the
/// `access_token` query parameter is accepted because browsers cannot set headers on WebSocket and
/// EventSource requests. REST routes never pass it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AuthRequest<'a> {
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw query string, on hub routes only.
    pub query: Option<&'a str>,
}

impl<'a> AuthRequest<'a> {
    /// A request whose token may only come from the `Authorization` header (REST routes).
    pub fn new(headers: &'a HeaderMap) -> Self {
        Self {
            headers,
            query: None,
        }
    }

    /// Also accepts the `access_token` parameter of `query` when there is no `Authorization`
    /// header (hub routes only).
    pub fn with_query(mut self, query: Option<&'a str>) -> Self {
        self.query = query;
        self
    }

    /// The bearer token: the `Authorization: Bearer` header, else the `access_token` query
    /// parameter when a query was given.
    pub fn bearer_token(&self) -> Option<String> {
        bearer_token(self.headers, self.query)
    }
}

/// Authenticates requests: request parts in, a [`Principal`] or an [`AuthError`] out.
///
/// Return [`AuthError::Missing`] when the request carries no credentials at all (anonymous
/// callers may still pass an anonymous policy) and another [`AuthError`] when credentials were
/// presented but refused (the caller gets `401` with `WWW-Authenticate: Bearer
/// error="invalid_token"`). Never log the token.
///
/// Object safe: hubs hold it as `Arc<dyn Authenticator>` ([`SharedAuthenticator`]).
///
/// ```
/// use futures_util::future::{BoxFuture, FutureExt};
/// use signalbox::auth::{AuthError, AuthRequest, Authenticator, Principal};
///
/// /// Accepts one fixed API key, for the user `robot`.
/// struct ApiKey(String);
///
/// impl Authenticator for ApiKey {
///     fn authenticate<'a>(
///         &'a self,
///         request: AuthRequest<'a>,
///     ) -> BoxFuture<'a, Result<Principal, AuthError>> {
///         async move {
///             let token = request.bearer_token().ok_or(AuthError::Missing)?;
///             if token != self.0 {
///                 return Err(AuthError::Rejected("api_key"));
///             }
///             let claims = serde_json::json!({"sub": "robot"});
///             let serde_json::Value::Object(claims) = claims else {
///                 return Err(AuthError::InvalidClaims);
///             };
///             Ok(Principal::new(claims, "sub"))
///         }
///         .boxed()
///     }
/// }
///
/// let hub = signalbox::Hub::builder("robots")
///     .authentication(ApiKey("let-me-in".to_owned()))
///     .build();
/// ```
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one request.
    fn authenticate<'a>(
        &'a self,
        request: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, AuthError>>;
}

impl Authenticator for JwtAuth {
    /// Reads the bearer token (header, or `access_token` when the request has a query) and
    /// validates it with [`JwtAuth::validate_async`], which consults key sets.
    fn authenticate<'a>(
        &'a self,
        request: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, AuthError>> {
        let token = request.bearer_token();
        async move {
            let token = token.ok_or(AuthError::Missing)?;
            self.validate_async(&token).await
        }
        .boxed()
    }
}

impl<A: Authenticator + ?Sized> Authenticator for Arc<A> {
    fn authenticate<'a>(
        &'a self,
        request: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, AuthError>> {
        (**self).authenticate(request)
    }
}

/// A cheap-to-clone, type-erased [`Authenticator`] (`Arc<dyn Authenticator>`).
///
/// Put one in the axum state of REST routes (with `FromRef`) for the
/// [`Authenticated`](super::Authenticated) extractor, and pass a clone to the hubs so both use
/// the same authenticator.
#[derive(Clone)]
pub struct SharedAuthenticator(Arc<dyn Authenticator>);

impl SharedAuthenticator {
    /// Wraps an authenticator. Wrapping a `SharedAuthenticator` returns a clone of it rather than
    /// adding a layer.
    pub fn new<A: Authenticator>(authenticator: A) -> Self {
        if let Some(shared) = (&authenticator as &dyn Any).downcast_ref::<SharedAuthenticator>() {
            return shared.clone();
        }
        Self(Arc::new(authenticator))
    }

    /// Authenticates one request (the same as [`Authenticator::authenticate`]).
    pub fn authenticate<'a>(
        &'a self,
        request: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, AuthError>> {
        self.0.authenticate(request)
    }
}

impl Authenticator for SharedAuthenticator {
    fn authenticate<'a>(
        &'a self,
        request: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, AuthError>> {
        self.0.authenticate(request)
    }
}

impl fmt::Debug for SharedAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedAuthenticator")
            .field(&format_args!("dyn Authenticator"))
            .finish()
    }
}

impl From<JwtAuth> for SharedAuthenticator {
    fn from(auth: JwtAuth) -> Self {
        Self::new(auth)
    }
}

impl From<Arc<dyn Authenticator>> for SharedAuthenticator {
    fn from(auth: Arc<dyn Authenticator>) -> Self {
        Self(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Authenticator for Fixed {
        fn authenticate<'a>(
            &'a self,
            request: AuthRequest<'a>,
        ) -> BoxFuture<'a, Result<Principal, AuthError>> {
            let token = request.bearer_token();
            async move {
                match token.as_deref() {
                    None => Err(AuthError::Missing),
                    Some("good") => Ok(Principal::new(
                        serde_json::Map::from_iter([("sub".to_owned(), "u".into())]),
                        "sub",
                    )),
                    Some(_) => Err(AuthError::Revoked),
                }
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn shared_authenticator_delegates_and_does_not_nest() {
        let shared = SharedAuthenticator::new(Fixed);
        let again = SharedAuthenticator::new(shared.clone());
        assert!(Arc::ptr_eq(&shared.0, &again.0));
        let mut headers = HeaderMap::new();
        assert_eq!(
            again.authenticate(AuthRequest::new(&headers)).await,
            Err(AuthError::Missing)
        );
        // The query is only read when passed (hub routes).
        let request = AuthRequest::new(&headers).with_query(Some("access_token=good"));
        assert!(again.authenticate(request).await.is_ok());
        headers.insert(http::header::AUTHORIZATION, "Bearer bad".parse().unwrap());
        assert_eq!(
            shared.authenticate(AuthRequest::new(&headers)).await,
            Err(AuthError::Revoked)
        );
        assert!(format!("{shared:?}").contains("SharedAuthenticator"));
    }
}
