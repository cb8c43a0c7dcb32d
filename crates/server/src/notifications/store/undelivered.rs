//! Which recipients have notifications waiting for delivery (the replay on connect skips the
//! others). Served by the partial index `notifications_undelivered`.

use std::collections::HashMap;

use sqlx::Row;

use crate::db::placeholders;
use crate::db::{Db, StoreError};

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
            placeholders(1, recipients.len())
        );
        let mut query = sqlx::query(&sql);
        for recipient in recipients {
            query = query.bind(recipient);
        }
        query
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| Ok((row.try_get("recipient")?, ())))
            .collect()
    }
}
