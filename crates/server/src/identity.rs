//! Who is calling: validates bearer tokens on REST routes (locally issued ones, and those of the
//! configured OpenID Connect issuer) and maps a token's principal to a local user name.

use http::HeaderMap;
use signalbox::auth::{AuthError, bearer_token};
use signalbox::{JwtAuth, Principal};

use crate::accounts::{Accounts, NewUser, validate_name};
use crate::db::{Db, StoreError};
use crate::oidc::OidcVerifier;

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
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Validates tokens and resolves local users.
#[derive(Debug, Clone)]
pub struct Authenticator {
    local: JwtAuth,
    oidc: Option<OidcVerifier>,
    db: Db,
}

impl Authenticator {
    /// An authenticator accepting tokens `local` validates and, if given, the OIDC issuer's.
    pub fn new(local: JwtAuth, oidc: Option<OidcVerifier>, db: Db) -> Self {
        Self { local, oidc, db }
    }

    /// The external issuer's verifier, if configured.
    pub fn oidc(&self) -> Option<&OidcVerifier> {
        self.oidc.as_ref()
    }

    /// Authenticates a REST request from its `Authorization: Bearer` header (never the query).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, IdentityError> {
        let token = bearer_token(headers, None).ok_or(AuthError::Missing)?;
        let principal = match self.local.validate(&token) {
            Ok(principal) => principal,
            Err(local_error) => match &self.oidc {
                Some(oidc) => oidc.validate(&token).await.map_err(|oidc_error| {
                    tracing::debug!(local = %local_error, oidc = %oidc_error, "token refused");
                    oidc_error
                })?,
                None => return Err(local_error.into()),
            },
        };
        let user = self.resolve(&principal).await?;
        Ok(Identity { user, principal })
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
                Err(crate::accounts::AccountError::NameTaken) => {}
                Err(crate::accounts::AccountError::Store(e)) => return Err(e.into()),
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
