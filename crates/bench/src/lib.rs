//! `signalbox-bench`: a SignalR load generator (JSON and MessagePack over WebSockets) and the
//! servers it measures (`bench-target`: signalbox with an authenticated hub, or a bare
//! tokio-tungstenite broadcast server as the floor).
//!
//! See `docs/benchmarks.md` for the scenarios, the commands and the numbers.

pub mod client;
pub mod cluster;
pub mod coord;
pub mod database;
pub mod hist;
pub mod plot;
pub mod publish;
pub mod service;
pub mod service_api;
pub mod storm;
pub mod sys;
pub mod target;
pub mod wire;
