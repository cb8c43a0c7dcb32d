//! Refresh tokens: opaque random strings, stored only as SHA-256 hashes, rotated on every use.
//! Each login starts a family; presenting a token that was already spent revokes its whole
//! family (the token was stolen, or the client replayed it), so both holders must sign in again.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::store::{AuthEvent, RefreshTokenRow, RefreshTokenState};
use crate::clock::{duration_ms, now_ms};
use crate::db::{Db, StoreError};

/// Why a refresh token was refused.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Unknown or expired.
    #[error("invalid or expired refresh token")]
    Invalid,
    /// Already spent: the family is now revoked.
    #[error("refresh token reuse detected; the session has been revoked")]
    Reused,
    /// Randomness was unavailable.
    #[error("cannot generate a token: {0}")]
    Random(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// SHA-256 of a token, base64url (what is stored).
pub fn hash_token(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

fn random_token() -> Result<String, RefreshError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| RefreshError::Random(e.to_string()))?;
    Ok(format!("sbr_{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// A new refresh token and the session (family) it belongs to.
#[derive(Debug, Clone)]
pub struct IssuedRefreshToken {
    /// The opaque token for the client.
    pub token: String,
    /// The session: the family id, also the `sid` claim of the session's access tokens.
    pub family: String,
}

/// Issues, rotates and revokes refresh tokens.
#[derive(Debug, Clone)]
pub struct RefreshTokens {
    db: Db,
    ttl: Duration,
}

impl RefreshTokens {
    /// Refresh tokens in `db`, valid for `ttl`.
    pub fn new(db: Db, ttl: Duration) -> Self {
        Self { db, ttl }
    }

    /// Deletes expired refresh tokens, now and then every `interval`, until the returned task is
    /// aborted.
    pub fn spawn_purge(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let db = self.db.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                if let Err(error) = db.purge_refresh_tokens(now_ms()).await {
                    tracing::warn!(%error, "refresh token cleanup failed");
                }
            }
        })
    }

    /// Issues a token for `user`, in `family` (a new family when `None`: a new login).
    pub async fn issue(
        &self,
        user: &str,
        family: Option<String>,
    ) -> Result<IssuedRefreshToken, RefreshError> {
        let token = random_token()?;
        let now = now_ms();
        let family = family.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let row = RefreshTokenRow {
            id: uuid::Uuid::now_v7().to_string(),
            family: family.clone(),
            user_name: user.to_owned(),
            token_hash: hash_token(&token),
            created_at: now,
            expires_at: now.saturating_add(duration_ms(self.ttl)),
        };
        self.db.insert_refresh_token(&row).await?;
        Ok(IssuedRefreshToken { token, family })
    }

    /// Spends `token` and issues its successor: returns the user and the new token (same
    /// family). A spent or revoked token revokes its family and answers [`RefreshError::Reused`].
    pub async fn rotate(&self, token: &str) -> Result<(String, IssuedRefreshToken), RefreshError> {
        let hash = hash_token(token);
        let now = now_ms();
        if let Some((family, user)) = self.db.spend_refresh_token(&hash, now).await? {
            let next = self.issue(&user, Some(family)).await?;
            return Ok((user, next));
        }
        match self.db.refresh_token_state(&hash).await? {
            RefreshTokenState::Spent { family, user_name } => {
                let revoked = self.end_family(&family, now).await?;
                tracing::warn!(
                    user = %user_name,
                    family = %family,
                    revoked,
                    "refresh token reuse detected; session family revoked"
                );
                Err(RefreshError::Reused)
            }
            RefreshTokenState::Unknown | RefreshTokenState::Expired => Err(RefreshError::Invalid),
        }
    }

    /// Revokes the family of `token` (logout); returns the family (the session id that its
    /// access tokens carry as `sid`). Unknown tokens are ignored.
    pub async fn revoke(&self, token: &str) -> Result<Option<String>, RefreshError> {
        let Some(family) = self.db.refresh_token_family(&hash_token(token)).await? else {
            return Ok(None);
        };
        self.end_family(&family, now_ms()).await?;
        Ok(Some(family))
    }

    /// Revokes a family and writes the event that closes its connections on every node.
    async fn end_family(&self, family: &str, now: i64) -> Result<u64, RefreshError> {
        let revoked = self.db.revoke_refresh_family(family, now).await?;
        self.db
            .record_auth_event(&AuthEvent::SessionEnded(family.to_owned()), now)
            .await?;
        Ok(revoked)
    }
}
