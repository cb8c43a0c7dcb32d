//! signalbox-server: the notification service behind the `signalbox` binary.
//!
//! The service is laid out by feature; each feature folder owns its routes, its store (all of its
//! SQL, as methods on [`db::Db`]) and its unit tests, and never reaches into another feature's
//! store (`tests/layout.rs` checks); its integration tests are `tests/<feature>*.rs`:
//!
//! | feature | what |
//! |---|---|
//! | [`auth`] | accounts, passwords, access and refresh tokens, sessions, bearer authentication, external OpenID Connect sign-in; `/api/auth/*`, `/.well-known/jwks.json` |
//! | [`users`] | `/api/users/{id}/presence` |
//! | [`notifications`] | the durable inbox, the publish API, the notification hub, transactional publish |
//! | [`presence`] | who is online, on every node |
//! | [`groups`] | named sets of users the publish API addresses; `/api/groups/*` |
//! | [`admin`] | the dashboard and `/api/admin/*` |
//! | [`ops`] | `/health/*` and `/metrics` |
//! | [`cluster`] | node heartbeats, the reaper of dead nodes and the backplane |
//! | [`webhooks`] | lifecycle webhooks and their delivery log |
//! | [`azure`] | the Azure SignalR Service compatible surfaces |
//! | [`setup`] | the first-run setup page |
//! | [`web`] | the demo page |
//!
//! Shared pieces: the REST API's router, errors, authorizing extractors and OpenAPI document
//! ([`api`]), the state handlers draw their services from ([`state`]), the database handle and
//! migrations ([`db`]), the configuration ([`config`]) with the data directory's generated secret
//! ([`data_dir`]), logs and traces ([`logging`], [`telemetry`]), rate limits ([`rate_limit`]),
//! origin checks ([`origin`]), client addresses ([`client_ip`]) and time ([`clock`]).
//! [`server::build`] assembles the features; the binary adds the command line ([`cli`]).

pub mod admin;
pub mod api;
pub mod auth;
pub mod azure;
pub mod cli;
pub mod client_ip;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod data_dir;
pub mod db;
pub mod groups;
pub mod logging;
pub mod notifications;
pub mod ops;
pub mod origin;
pub mod presence;
pub mod rate_limit;
pub mod server;
pub mod setup;
pub mod state;
pub mod telemetry;
pub mod users;
pub mod web;
pub mod webhooks;
