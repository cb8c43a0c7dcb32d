//! The one-time setup links: issued while no administrator exists, checked by the page, spent by
//! creating the first administrator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::store::{SetupOutcome, SetupTokenState};
use crate::auth::UserRow;
use crate::auth::accounts::{AccountError, MIN_PASSWORD_LENGTH, validate_name};
use crate::auth::passwords::{PasswordError, hash_password};
use crate::auth::refresh::hash_token;
use crate::clock::now_ms;
use crate::db::{Db, StoreError};

/// How long a setup link stays valid.
pub const LINK_TTL: Duration = Duration::from_secs(3600);

/// The page's path; the token follows in the fragment (`/setup#token=…`), which browsers never
/// send to the server, so it stays out of request logs, proxies and `Referer` headers.
pub const SETUP_PATH: &str = "/setup";

/// Why a setup step failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// An administrator exists: setup is over.
    #[error("setup is complete: an administrator exists; sign in instead")]
    Complete,
    /// The token is unknown (mistyped, or spent).
    #[error(
        "this setup link is not valid (it may have been used already); restart `signalbox serve` to print a new one"
    )]
    InvalidLink,
    /// The token expired.
    #[error("this setup link has expired; restart `signalbox serve` to print a new one")]
    Expired,
    /// The name or password is not acceptable, or the name is taken.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing the password failed.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// No randomness for a token.
    #[error("cannot generate a setup token: {0}")]
    Random(String),
}

/// What a link is worth, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    /// The link may create the first administrator.
    Ready,
    /// An administrator exists.
    Complete,
    /// The link expired (and no administrator exists yet).
    Expired,
    /// Unknown or spent (and no administrator exists yet).
    Invalid,
}

impl LinkStatus {
    /// The name the page receives.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Complete => "complete",
            Self::Expired => "expired",
            Self::Invalid => "invalid",
        }
    }
}

/// The first administrator's account as the setup page submits it.
#[derive(Debug, Clone)]
pub struct FirstAdmin {
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
}

/// The setup links over the database.
#[derive(Debug, Clone)]
pub struct SetupLinks {
    db: Db,
    admin_role: String,
    /// Claims the first administrator gets besides the role (the notify permission).
    claims: BTreeMap<String, Vec<String>>,
}

impl SetupLinks {
    /// Setup links on `db`; the first administrator gets `admin_role` and the permission claim
    /// `permission_claim` = `notify_permission`.
    pub fn new(db: Db, admin_role: &str, permission_claim: &str, notify_permission: &str) -> Self {
        let mut claims = BTreeMap::new();
        claims.insert(
            permission_claim.to_owned(),
            vec![notify_permission.to_owned()],
        );
        Self {
            db,
            admin_role: admin_role.to_owned(),
            claims,
        }
    }

    /// Setup links for the service's configuration.
    pub fn for_config(db: Db, config: &crate::config::Config) -> Self {
        Self::new(
            db,
            &config.admin.role,
            &config.auth.permission_claim,
            &config.auth.notify_permission,
        )
    }

    /// Whether setup is still needed (no enabled account has the admin role).
    pub async fn needed(&self) -> Result<bool, StoreError> {
        Ok(!self.db.admin_exists(&self.admin_role).await?)
    }

    /// A new token valid for [`LINK_TTL`] when setup is needed; `None` when an administrator
    /// exists. Only its hash is stored; the token itself is returned once, for the link.
    pub async fn issue(&self) -> Result<Option<String>, SetupError> {
        if !self.needed().await? {
            return Ok(None);
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| SetupError::Random(e.to_string()))?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let now = now_ms();
        let ttl = i64::try_from(LINK_TTL.as_millis()).unwrap_or(i64::MAX);
        self.db
            .insert_setup_token(&hash_token(&token), now, now.saturating_add(ttl))
            .await?;
        Ok(Some(token))
    }

    /// What `token` is worth now.
    pub async fn status(&self, token: &str) -> Result<LinkStatus, StoreError> {
        if !self.needed().await? {
            return Ok(LinkStatus::Complete);
        }
        Ok(
            match self
                .db
                .setup_token_state(&hash_token(token), now_ms())
                .await?
            {
                SetupTokenState::Valid => LinkStatus::Ready,
                SetupTokenState::Expired => LinkStatus::Expired,
                // Spent a moment ago by the submit that created the administrator?
                SetupTokenState::Unknown if !self.needed().await? => LinkStatus::Complete,
                SetupTokenState::Unknown => LinkStatus::Invalid,
            },
        )
    }

    /// Spends `token` and creates the first administrator; at most one caller ever succeeds.
    pub async fn complete(&self, token: &str, admin: FirstAdmin) -> Result<UserRow, SetupError> {
        // Cheap checks first, so that a typo does not cost a password hash.
        match self.status(token).await? {
            LinkStatus::Ready => {}
            LinkStatus::Complete => return Err(SetupError::Complete),
            LinkStatus::Expired => return Err(SetupError::Expired),
            LinkStatus::Invalid => return Err(SetupError::InvalidLink),
        }
        validate_name(&admin.name)?;
        if admin.password.chars().count() < MIN_PASSWORD_LENGTH {
            return Err(AccountError::WeakPassword.into());
        }
        let row = UserRow {
            name: admin.name,
            password_hash: Some(hash_password(admin.password).await?),
            roles: vec![self.admin_role.clone()],
            claims: self.claims.clone(),
            created_at: now_ms(),
            last_connected_at: None,
            last_disconnected_at: None,
        };
        let outcome = self
            .db
            .complete_setup(&hash_token(token), now_ms(), &row, &self.admin_role)
            .await?;
        match outcome {
            SetupOutcome::Created => Ok(row),
            SetupOutcome::NameTaken => Err(AccountError::NameTaken.into()),
            SetupOutcome::Expired => Err(SetupError::Expired),
            SetupOutcome::AlreadyDone => Err(SetupError::Complete),
            SetupOutcome::UnknownToken => {
                // Spent by a concurrent submit a moment ago, most likely.
                if self.needed().await? {
                    Err(SetupError::InvalidLink)
                } else {
                    Err(SetupError::Complete)
                }
            }
        }
    }
}

/// The base URL to print for a listener: an unspecified address (`0.0.0.0`, `::`) becomes
/// `localhost`.
pub fn base_url(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

/// The setup link for `token` on the service at `base` (`http://host:port`).
pub fn link(base: &str, token: &str) -> String {
    format!("{}{SETUP_PATH}#token={token}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links() {
        let addr: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(base_url(addr), "http://localhost:8080");
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(
            link(&base_url(addr), "abc"),
            "http://127.0.0.1:9/setup#token=abc"
        );
    }
}
