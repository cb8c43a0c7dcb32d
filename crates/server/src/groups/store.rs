//! The `group_members` table: named sets of users that the publish API can address.

use sqlx::Row;

use crate::db::{Db, StoreError};

impl Db {
    /// The first `limit` groups by name, with their member counts.
    pub async fn group_sizes(&self, limit: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT group_name, COUNT(*) AS n FROM group_members GROUP BY group_name \
             ORDER BY group_name LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("group_name")?, row.try_get("n")?)))
            .collect()
    }

    /// Adds a user to a group (idempotent).
    pub async fn add_group_member(&self, group: &str, user_name: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO group_members (group_name, user_name) VALUES ($1, $2) \
             ON CONFLICT (group_name, user_name) DO NOTHING",
        )
        .bind(group)
        .bind(user_name)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes a user from a group; `Ok(false)` if they were not a member.
    pub async fn remove_group_member(
        &self,
        group: &str,
        user_name: &str,
    ) -> Result<bool, StoreError> {
        let result =
            sqlx::query("DELETE FROM group_members WHERE group_name = $1 AND user_name = $2")
                .bind(group)
                .bind(user_name)
                .execute(self.pool())
                .await?;
        Ok(result.rows_affected() == 1)
    }

    /// The members of a group, sorted.
    pub async fn group_members(&self, group: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_name FROM group_members WHERE group_name = $1 ORDER BY user_name",
        )
        .bind(group)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get("user_name").map_err(StoreError::from))
            .collect()
    }
}
