//! The `users` table: accounts, their roles and claims, and presence timestamps.

use std::collections::{BTreeMap, HashSet};

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Db, StoreError, in_json, json_array, json_column};

/// One account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// The user name, also the user id in tokens (`sub`) and in the hub.
    pub name: String,
    /// The argon2id PHC string; `None` for accounts that sign in through an external issuer.
    pub password_hash: Option<String>,
    /// Roles, sent as the `role` claim.
    pub roles: Vec<String>,
    /// Extra claims (type → values), sent in access tokens.
    pub claims: BTreeMap<String, Vec<String>>,
    /// When the account was created (ms).
    pub created_at: i64,
    /// When the user last went from offline to online (ms).
    pub last_connected_at: Option<i64>,
    /// When the user last went from online to offline (ms).
    pub last_disconnected_at: Option<i64>,
}

fn user_from_row(row: &AnyRow) -> Result<UserRow, StoreError> {
    let roles: String = row.try_get("roles")?;
    let claims: String = row.try_get("claims")?;
    Ok(UserRow {
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
        roles: json_column(&roles, "users.roles")?,
        claims: json_column(&claims, "users.claims")?,
        created_at: row.try_get("created_at")?,
        last_connected_at: row.try_get("last_connected_at")?,
        last_disconnected_at: row.try_get("last_disconnected_at")?,
    })
}

const USER_COLUMNS: &str =
    "name, password_hash, roles, claims, created_at, last_connected_at, last_disconnected_at";

/// One account as an administrator lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSummaryRow {
    /// The user name.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Extra claims (type → values).
    pub claims: BTreeMap<String, Vec<String>>,
    /// When the account was created (ms).
    pub created_at: i64,
    /// Whether the account is disabled.
    pub disabled: bool,
}

impl Db {
    /// The first `limit` accounts, sorted by name.
    pub async fn account_summaries(
        &self,
        limit: i64,
    ) -> Result<Vec<AccountSummaryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, roles, claims, created_at, disabled_at FROM users ORDER BY name LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let roles: String = row.try_get("roles")?;
                let claims: String = row.try_get("claims")?;
                let disabled_at: Option<i64> = row.try_get("disabled_at")?;
                Ok(AccountSummaryRow {
                    name: row.try_get("name")?,
                    roles: json_column(&roles, "users.roles")?,
                    claims: json_column(&claims, "users.claims")?,
                    created_at: row.try_get("created_at")?,
                    disabled: disabled_at.is_some(),
                })
            })
            .collect()
    }

    /// Creates an account; `Ok(false)` when the name is taken.
    pub async fn insert_user(&self, user: &UserRow) -> Result<bool, StoreError> {
        let roles = serde_json::to_string(&user.roles).map_err(|_| StoreError::Corrupt("roles"))?;
        let claims =
            serde_json::to_string(&user.claims).map_err(|_| StoreError::Corrupt("claims"))?;
        let result = sqlx::query(
            "INSERT INTO users (name, password_hash, roles, claims, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&user.name)
        .bind(user.password_hash.as_deref())
        .bind(roles)
        .bind(claims)
        .bind(user.created_at)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Replaces the password, roles and claims of an account; `Ok(false)` when it does not exist.
    pub async fn update_user(&self, user: &UserRow) -> Result<bool, StoreError> {
        let roles = serde_json::to_string(&user.roles).map_err(|_| StoreError::Corrupt("roles"))?;
        let claims =
            serde_json::to_string(&user.claims).map_err(|_| StoreError::Corrupt("claims"))?;
        let result = sqlx::query(
            "UPDATE users SET password_hash = $2, roles = $3, claims = $4 WHERE name = $1",
        )
        .bind(&user.name)
        .bind(user.password_hash.as_deref())
        .bind(roles)
        .bind(claims)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// One account by name.
    pub async fn user(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Which of `names` are accounts, with one query.
    pub async fn existing_user_names(
        &self,
        names: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        let mut found = HashSet::with_capacity(names.len());
        if names.is_empty() {
            return Ok(found);
        }
        let sql = format!(
            "SELECT name FROM users WHERE name IN ({})",
            in_json(self.backend(), 1)
        );
        let query = sqlx::query(&sql).bind(json_array(names));
        for row in query.fetch_all(self.pool()).await? {
            found.insert(row.try_get::<String, _>("name")?);
        }
        Ok(found)
    }

    /// Every account name, sorted.
    pub async fn user_names(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT name FROM users ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| r.try_get("name").map_err(StoreError::from))
            .collect()
    }

    /// Deletes an account (and, by cascade, its tokens, inbox and memberships), and writes the
    /// event that closes its connections on every node.
    pub async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(self.pool())
            .await?;
        let deleted = result.rows_affected() == 1;
        if deleted {
            self.record_auth_event(
                &super::AuthEvent::UserEnded(name.to_owned()),
                crate::clock::now_ms(),
            )
            .await?;
        }
        Ok(deleted)
    }
}
