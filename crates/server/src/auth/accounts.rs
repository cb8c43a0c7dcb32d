//! Accounts: creating users, checking passwords, and the claims their access tokens carry.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::store::{AccountSummaryRow, UserRow};
use crate::auth::passwords::{PasswordError, hash_password, verify_password};
use crate::clock::now_ms;
use crate::db::{Db, StoreError};

/// Minimum password length, in characters.
pub const MIN_PASSWORD_LENGTH: usize = 8;

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The name is not acceptable.
    #[error("invalid user name: use 1 to 64 letters, digits and . _ @ + -")]
    InvalidName,
    /// The password is too short.
    #[error("the password must be at least {MIN_PASSWORD_LENGTH} characters long")]
    WeakPassword,
    /// The name is taken.
    #[error("the user name is already taken")]
    NameTaken,
    /// Unknown user or wrong password (deliberately indistinguishable).
    #[error("invalid user name or password")]
    InvalidCredentials,
    /// A claim given as `K=V` is malformed or reserved.
    #[error(
        "invalid claim {0:?}: use TYPE=VALUE; sub, iss, aud, exp, nbf, iat and jti are reserved"
    )]
    InvalidClaim(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed.
    #[error(transparent)]
    Password(#[from] PasswordError),
}

/// Registered JWT claims a user's stored claims may not override.
const RESERVED_CLAIMS: [&str; 8] = ["sub", "iss", "aud", "exp", "nbf", "iat", "jti", "role"];

/// Checks a user name.
pub fn validate_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::InvalidName)
    }
}

/// Parses `K=V` claim arguments into the stored form (type → values).
pub fn parse_claims(pairs: &[String]) -> Result<BTreeMap<String, Vec<String>>, AccountError> {
    let mut claims: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| AccountError::InvalidClaim(pair.clone()))?;
        let key = key.trim();
        if key.is_empty() || RESERVED_CLAIMS.contains(&key) {
            return Err(AccountError::InvalidClaim(pair.clone()));
        }
        claims
            .entry(key.to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    Ok(claims)
}

/// The claims an access token for `user` carries besides the registered ones: `role` (a string
/// or an array) and the user's own claims.
pub fn token_claims(user: &UserRow) -> Map<String, Value> {
    let mut claims = Map::new();
    let as_value = |values: &[String]| match values {
        [one] => Value::from(one.as_str()),
        many => Value::from(many.to_vec()),
    };
    if !user.roles.is_empty() {
        claims.insert("role".into(), as_value(&user.roles));
    }
    for (key, values) in &user.claims {
        if !values.is_empty() {
            claims.insert(key.clone(), as_value(values));
        }
    }
    claims
}

/// Account operations over the database.
#[derive(Debug, Clone)]
pub struct Accounts {
    db: Db,
}

/// A new account's details.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// User name.
    pub name: String,
    /// Password (`None` for accounts of an external issuer).
    pub password: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Claims.
    pub claims: BTreeMap<String, Vec<String>>,
}

impl Accounts {
    /// Account operations on `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The account named `name`, if any.
    pub async fn find(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        self.db.user(name).await
    }

    /// Whether an account named `name` exists.
    pub async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.db.user(name).await?.is_some())
    }

    /// Those of `names` that are not accounts, in the order given (one query).
    pub async fn unknown(&self, names: &[String]) -> Result<Vec<String>, StoreError> {
        let known = self.db.existing_user_names(names).await?;
        Ok(names
            .iter()
            .filter(|name| !known.contains(name.as_str()))
            .cloned()
            .collect())
    }

    /// The first `limit` accounts by name, as an administrator lists them.
    pub async fn summaries(&self, limit: i64) -> Result<Vec<AccountSummaryRow>, StoreError> {
        self.db.account_summaries(limit).await
    }

    /// Creates an account.
    pub async fn create(&self, user: NewUser) -> Result<UserRow, AccountError> {
        let row = self.prepare(user).await?;
        if self.db.insert_user(&row).await? {
            Ok(row)
        } else {
            Err(AccountError::NameTaken)
        }
    }

    /// Creates an account or replaces the password, roles and claims of an existing one.
    pub async fn upsert(&self, user: NewUser) -> Result<(UserRow, bool), AccountError> {
        let row = self.prepare(user).await?;
        if self.db.insert_user(&row).await? {
            return Ok((row, true));
        }
        self.db.update_user(&row).await?;
        Ok((row, false))
    }

    async fn prepare(&self, user: NewUser) -> Result<UserRow, AccountError> {
        validate_name(&user.name)?;
        let password_hash = match user.password {
            Some(password) => {
                if password.chars().count() < MIN_PASSWORD_LENGTH {
                    return Err(AccountError::WeakPassword);
                }
                Some(hash_password(password).await?)
            }
            None => None,
        };
        Ok(UserRow {
            name: user.name,
            password_hash,
            roles: user.roles,
            claims: user.claims,
            created_at: now_ms(),
            last_connected_at: None,
            last_disconnected_at: None,
        })
    }

    /// Checks a name and password; the same error for an unknown name and a wrong password.
    pub async fn authenticate(
        &self,
        name: &str,
        password: String,
    ) -> Result<UserRow, AccountError> {
        let user = self.db.user(name).await?;
        let stored = user.as_ref().and_then(|u| u.password_hash.clone());
        let ok = verify_password(password, stored).await?;
        match user {
            Some(user) if ok => Ok(user),
            _ => Err(AccountError::InvalidCredentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_claims() {
        assert!(validate_name("alice").is_ok());
        assert!(validate_name("a.b-c_d@e+f").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("has space").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
        let claims = parse_claims(&["permission=notify".into(), "permission=read".into()]).unwrap();
        assert_eq!(claims["permission"], vec!["notify", "read"]);
        assert!(parse_claims(&["sub=x".into()]).is_err());
        assert!(parse_claims(&["novalue".into()]).is_err());
    }

    #[test]
    fn claims_for_tokens() {
        let user = UserRow {
            name: "a".into(),
            password_hash: None,
            roles: vec!["admin".into()],
            claims: parse_claims(&["permission=notify".into(), "team=x".into(), "team=y".into()])
                .unwrap(),
            created_at: 0,
            last_connected_at: None,
            last_disconnected_at: None,
        };
        let claims = token_claims(&user);
        assert_eq!(claims["role"], "admin");
        assert_eq!(claims["permission"], "notify");
        assert_eq!(claims["team"], serde_json::json!(["x", "y"]));
    }
}
