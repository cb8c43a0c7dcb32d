//! Password hashing with argon2id, run on the blocking thread pool so hashing never stalls the
//! async runtime.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Hashing failed (bad stored hash, or the blocking pool is gone).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// argon2 refused the input or the stored hash.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The blocking task did not complete.
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn hash_blocking(password: &[u8]) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// A hash to verify against when the account does not exist, so that the answer takes as long
/// as for a real account.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| hash_blocking(b"signalbox-timing-equaliser").ok())
        .as_deref()
}

/// Hashes a password (argon2id, default parameters, random salt) as a PHC string.
pub async fn hash_password(password: String) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || hash_blocking(password.as_bytes())).await?
}

/// Checks a password against a stored PHC string. With no stored hash (unknown account or an
/// account without a password) the check still costs one hash and answers `false`.
pub async fn verify_password(
    password: String,
    stored: Option<String>,
) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let (hash, real) = match &stored {
            Some(hash) => (hash.as_str(), true),
            None => match dummy_hash() {
                Some(hash) => (hash, false),
                None => return Ok(false),
            },
        };
        let parsed = PasswordHash::new(hash).map_err(|e| PasswordError::Hash(e.to_string()))?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(ok && real)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify_password("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!verify_password("wrong".into(), Some(hash)).await.unwrap());
        assert!(!verify_password("x".into(), None).await.unwrap());
    }
}
