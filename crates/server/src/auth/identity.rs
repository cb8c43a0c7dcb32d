//! Who is calling: validates bearer tokens (locally issued ones, and those of the configured
//! OpenID Connect issuer), maps a token's principal to a local user name, and checks that the
//! sign-in still stands (the account exists and is enabled, the session was not ended). REST
//! routes and the hub go through the same checks, so a token gets the same answer on both.

use futures_util::future::BoxFuture;
use http::HeaderMap;
use serde_json::Value;
use signalbox::auth::{AuthError, AuthRequest, bearer_token};
use signalbox::{JwtAuth, Principal};

use crate::auth::accounts::{Accounts, NewUser, validate_name};
use crate::auth::oidc::OidcVerifier;
use crate::auth::sessions::{SessionError, Sessions};
use crate::db::{Db, StoreError};

/// An authenticated caller of a REST route.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The local user name.
    pub user: String,
    /// The token's principal (claims).
    pub principal: Principal,
}

/// Why a caller is not authenticated. Safe to log; the token never is.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Missing or invalid token.
    #[error("invalid bearer token: {0}")]
    Token(#[from] AuthError),
    /// The token is valid but names no local user.
    #[error("the token does not map to a local user")]
    NoLocalUser,
    /// The token maps a user by an e-mail address the issuer has not verified.
    #[error("the issuer has not verified the e-mail address")]
    UnverifiedEmail,
    /// The account was disabled or the session ended (sign-out, reused refresh token).
    #[error("the session has ended")]
    Revoked,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SessionError> for IdentityError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::UnknownUser => IdentityError::NoLocalUser,
            SessionError::Revoked => IdentityError::Revoked,
            SessionError::Store(e) => IdentityError::Store(e),
        }
    }
}

/// Validates tokens and resolves local users.
#[derive(Debug, Clone)]
pub struct Authenticator {
    local: JwtAuth,
    oidc: Option<OidcVerifier>,
    db: Db,
    sessions: Sessions,
}

impl Authenticator {
    /// An authenticator accepting tokens `local` validates and, if given, the OIDC issuer's;
    /// sign-ins are checked against `sessions`.
    pub fn new(local: JwtAuth, oidc: Option<OidcVerifier>, db: Db, sessions: Sessions) -> Self {
        Self {
            local,
            oidc,
            db,
            sessions,
        }
    }

    /// The sessions sign-ins are checked against.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The external issuer's verifier, if configured.
    pub fn oidc(&self) -> Option<&OidcVerifier> {
        self.oidc.as_ref()
    }

    /// Authenticates a REST request from its `Authorization: Bearer` header (never the query).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, IdentityError> {
        let token = bearer_token(headers, None).ok_or(AuthError::Missing)?;
        self.authenticate_token(&token).await
    }

    /// Validates a bearer token, maps it to its local user and checks that the sign-in still
    /// stands.
    pub async fn authenticate_token(&self, token: &str) -> Result<Identity, IdentityError> {
        let principal = self.validate(token).await?;
        let user = self.resolve(&principal).await?;
        let session = principal.claim("sid").and_then(Value::as_str);
        self.sessions.check(&user, session).await?;
        Ok(Identity { user, principal })
    }

    /// Checks a token's signature and claims (the local issuer's, else the external one's).
    async fn validate(&self, token: &str) -> Result<Principal, IdentityError> {
        Ok(match self.local.validate(token) {
            Ok(principal) => principal,
            Err(local_error) => match &self.oidc {
                Some(oidc) => oidc.validate(token).await.map_err(|oidc_error| {
                    tracing::debug!(local = %local_error, oidc = %oidc_error, "token refused");
                    oidc_error
                })?,
                None => return Err(local_error.into()),
            },
        })
    }

    /// The local user of a principal: `sub` for local tokens; for the external issuer's tokens
    /// the configured claim, creating the account on first sight when allowed.
    pub async fn resolve(&self, principal: &Principal) -> Result<String, IdentityError> {
        if let Some(oidc) = &self.oidc
            && oidc.issued(principal)
        {
            let name = oidc
                .local_name(principal)
                .ok_or(IdentityError::NoLocalUser)?;
            if oidc.maps_by_email() && !email_verified(principal) {
                return Err(IdentityError::UnverifiedEmail);
            }
            if validate_name(&name).is_err() {
                return Err(IdentityError::NoLocalUser);
            }
            if self.db.user(&name).await?.is_some() {
                return Ok(name);
            }
            if !oidc.auto_create_users() {
                return Err(IdentityError::NoLocalUser);
            }
            let accounts = Accounts::new(self.db.clone());
            match accounts
                .create(NewUser {
                    name: name.clone(),
                    ..NewUser::default()
                })
                .await
            {
                Ok(_) => tracing::info!(user = %name, "account created for external identity"),
                Err(crate::auth::accounts::AccountError::NameTaken) => {}
                Err(crate::auth::accounts::AccountError::Store(e)) => return Err(e.into()),
                Err(_) => return Err(IdentityError::NoLocalUser),
            }
            return Ok(name);
        }
        principal
            .user_id()
            .map(str::to_owned)
            .ok_or(IdentityError::NoLocalUser)
    }
}

/// The `reason` labels of `signalbox_auth_failures_total` this service's authenticator adds to
/// the library's ([`signalbox::metrics::AUTH_FAILURE_REASONS`]).
pub const AUTH_FAILURE_REASONS: &[&str] = &[EMAIL_UNVERIFIED, STORE_FAILURE];

const EMAIL_UNVERIFIED: &str = "email_unverified";
const STORE_FAILURE: &str = "store";

impl IdentityError {
    /// The library's error for a refused hub request (its `reason()` labels the metric).
    fn to_auth_error(&self) -> AuthError {
        match self {
            IdentityError::Token(error) => error.clone(),
            IdentityError::NoLocalUser => AuthError::UnknownUser,
            IdentityError::UnverifiedEmail => AuthError::Rejected(EMAIL_UNVERIFIED),
            IdentityError::Revoked => AuthError::Revoked,
            IdentityError::Store(_) => AuthError::Rejected(STORE_FAILURE),
        }
    }
}

/// The hub's authenticator is the REST API's: the same token gets the same answer and the same
/// local user on both. The principal the hub sees names the local user (`Caller::user_id`, user
/// targets, logs), with the token's claims.
impl signalbox::auth::Authenticator for Authenticator {
    fn authenticate<'a>(
        &'a self,
        request: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, AuthError>> {
        Box::pin(async move {
            let token = request.bearer_token().ok_or(AuthError::Missing)?;
            match self.authenticate_token(&token).await {
                Ok(identity) => Ok(Principal::with_user_id(
                    identity.principal.claims().clone(),
                    identity.user,
                )),
                Err(error) => {
                    if let IdentityError::Store(cause) = &error {
                        tracing::error!(error = %cause, "storage failure while authenticating a hub request");
                    } else {
                        tracing::debug!(%error, "hub request refused");
                    }
                    Err(error.to_auth_error())
                }
            }
        })
    }
}

/// Whether the issuer says it verified the principal's e-mail address (`email_verified`, a
/// boolean or, as some issuers send it, the string `"true"`). A missing claim is not a
/// verification.
pub fn email_verified(principal: &Principal) -> bool {
    match principal.claim("email_verified") {
        Some(Value::Bool(verified)) => *verified,
        Some(Value::String(verified)) => verified.eq_ignore_ascii_case("true"),
        _ => false,
    }
}
