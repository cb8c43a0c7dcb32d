//! The tables of notifications: the inbox (`notifications`) and the transactional-publish
//! requests (`publish_requests`). Methods on [`crate::db::Db`].

mod notifications;
mod outbox;
mod undelivered;

pub use notifications::{INSERT_CHUNK, NotificationRow};
pub use outbox::{ListenError, PublishRequestRow, listen_publish_requests};
