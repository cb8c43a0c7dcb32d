//! The hubs this service mounts.

pub mod notifications;
