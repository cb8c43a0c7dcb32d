//! The `settings` table: values an administrator changes at run time (see
//! [`crate::admin`]), stored as text under a dotted name, shared by every node.

use sqlx::Row;

use crate::db::{Db, StoreError};

impl Db {
    /// The stored value of a setting; `None` when it was never set.
    pub async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => Ok(Some(row.try_get("value")?)),
            None => Ok(None),
        }
    }

    /// Stores a setting (created or replaced).
    pub async fn set_setting(&self, name: &str, value: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes a setting (back to the configured default); `true` if it was set.
    pub async fn delete_setting(&self, name: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM settings WHERE name = $1")
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() == 1)
    }
}
