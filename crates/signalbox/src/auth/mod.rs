//! Authentication (JWT bearer tokens) and authorization (policies) for hubs.

mod jwt;
mod policy;
mod principal;

pub use jsonwebtoken::Algorithm;
pub use jwt::{
    AuthError, DEFAULT_MAX_TOKEN_LENGTH, JwtAuth, JwtAuthBuilder, JwtConfigError, bearer_token,
};
pub use policy::Policy;
pub use principal::Principal;
