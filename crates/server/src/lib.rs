//! signalbox-server: the notification service behind the `signalbox` binary.
//!
//! Accounts and tokens ([`accounts`], [`tokens`], [`refresh`], [`oidc`]), presence
//! ([`presence`]), a durable inbox ([`inbox`]), the notification hub ([`hubs`]), the REST API
//! with its OpenAPI document ([`api`]), storage on SQLite or PostgreSQL ([`db`]) and the
//! configuration ([`config`]) with the data directory's generated secret ([`data_dir`]); the
//! first-run setup ([`setup`]); scale-out over a backplane ([`backplane`]) with node heartbeats
//! ([`cluster`]). [`server::build`] assembles them; the binary adds the command line ([`cli`]).

pub mod accounts;
pub mod admin;
pub mod api;
pub mod azure;
pub mod backplane;
pub mod cli;
pub mod client_ip;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod data_dir;
pub mod db;
pub mod health;
pub mod hubs;
pub mod identity;
pub mod inbox;
pub mod logging;
pub mod metrics;
pub mod oidc;
pub mod origin;
pub mod outbox;
pub mod passwords;
pub mod presence;
pub mod rate_limit;
pub mod refresh;
pub mod server;
pub mod sessions;
pub mod setup;
pub mod state;
pub mod telemetry;
pub mod tokens;
pub mod web;
pub mod webhooks;
