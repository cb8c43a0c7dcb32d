//! Authentication (an async [`Authenticator`]: JWT bearer tokens with static keys or remote key
//! sets, or the application's own) and authorization (policies) for hubs and routes.

mod authenticator;
mod extract;
mod jwt;
#[cfg(feature = "jwks")]
mod key_set;
mod policy;
mod principal;

pub use authenticator::{AuthRequest, Authenticator, SharedAuthenticator};
pub use extract::{AuthRejection, Authenticated};
pub use jsonwebtoken::Algorithm;
pub use jwt::{
    AuthError, DEFAULT_MAX_TOKEN_LENGTH, JwtAuth, JwtAuthBuilder, JwtConfigError, bearer_token,
};
#[cfg(feature = "jwks")]
pub use key_set::{
    DEFAULT_HTTP_TIMEOUT, DEFAULT_MIN_REFRESH_INTERVAL, DEFAULT_TTL, KeySet, KeySetBuilder,
    KeySetError, MAX_DOCUMENT_LENGTH, MAX_TTL, ProviderMetadata, PublishedKey,
};
pub use policy::Policy;
pub use principal::Principal;
