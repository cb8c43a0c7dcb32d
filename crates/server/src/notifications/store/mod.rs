//! The tables of notifications: the inbox (`notifications`, one row per recipient), the
//! notifications to every account (`broadcasts`, one row each) and the transactional-publish
//! requests (`publish_requests`). Methods on [`crate::db::Db`].

mod broadcasts;
mod notifications;
mod outbox;
mod undelivered;

pub use broadcasts::{BroadcastCursor, BroadcastRow, ReceivedBroadcast};
pub use notifications::{INSERT_CHUNK, NotificationRow};
pub use outbox::{ListenError, PublishRequestRow, listen_publish_requests};
