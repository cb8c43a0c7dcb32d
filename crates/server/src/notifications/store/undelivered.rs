//! Which recipients have notifications waiting for delivery (the replay on connect skips the
//! others). Served by the partial index `notifications_undelivered`.

use std::collections::HashMap;

use sqlx::Row;

use crate::db::{Db, StoreError, in_json, json_array};

impl Db {
    /// Those of `recipients` with at least one undelivered notification.
    pub async fn undelivered_recipients(
        &self,
        recipients: &[String],
    ) -> Result<HashMap<String, ()>, StoreError> {
        if recipients.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT DISTINCT recipient FROM notifications \
             WHERE recipient IN ({}) AND delivered_at IS NULL",
            in_json(self.backend(), 1)
        );
        sqlx::query(&sql)
            .bind(json_array(recipients))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| Ok((row.try_get("recipient")?, ())))
            .collect()
    }
}
