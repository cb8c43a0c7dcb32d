//! The service's REST API as the coordinator uses it, with an admin token it mints itself
//! (role `admin`, permission `notify`): who is online (`GET /api/admin/stats`, from the
//! presence rows of every node) and publishing (`POST /api/notifications`).

use std::net::SocketAddr;

use anyhow::{anyhow, bail};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::wire::service_token;

/// The account the coordinator publishes and reads stats as.
pub const ADMIN_USER: &str = "bench-admin";

/// Online users and connections, as the service records them (all nodes).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Online {
    /// Users with at least one connection.
    #[serde(rename = "online_count")]
    pub users: u64,
    /// Connections recorded by presence.
    #[serde(rename = "connections_total")]
    pub connections: u64,
}

/// A client of one node's REST API.
#[derive(Debug, Clone)]
pub struct ServiceApi {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl ServiceApi {
    /// A client of the node at `addr`, with a token signed with `secret`.
    pub fn new(addr: SocketAddr, secret: &str) -> anyhow::Result<ServiceApi> {
        let mut claims = Map::new();
        claims.insert("role".into(), Value::from("admin"));
        claims.insert("permission".into(), Value::from("notify"));
        let token = service_token(secret, ADMIN_USER, &claims)?;
        Ok(ServiceApi {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()?,
            base: format!("http://{addr}"),
            auth: format!("Bearer {token}"),
        })
    }

    /// The same client, talking to another node.
    pub fn at(&self, addr: SocketAddr) -> ServiceApi {
        ServiceApi {
            http: self.http.clone(),
            base: format!("http://{addr}"),
            auth: self.auth.clone(),
        }
    }

    /// `GET /api/admin/stats`: users and connections online.
    pub async fn online(&self) -> anyhow::Result<Online> {
        let response = self
            .http
            .get(format!("{}/api/admin/stats", self.base))
            .header("authorization", &self.auth)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("GET /api/admin/stats: {}", response.status());
        }
        Ok(response.json().await?)
    }

    /// The node's connections fully set up (presence recorded, missed notifications
    /// replayed): the gauge `signalbox_connections_ready` of `GET /metrics`.
    pub async fn ready(&self) -> anyhow::Result<u64> {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .header("authorization", &self.auth)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("GET /metrics: {}", response.status());
        }
        let text = response.text().await?;
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix("signalbox_connections_ready "))
            .ok_or_else(|| anyhow!("GET /metrics: no signalbox_connections_ready"))?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a count
        Ok(value.trim().parse::<f64>()? as u64)
    }

    /// `POST /api/notifications` with `target` (`{"users": […]}`, `{"everyone": true}`, …).
    pub async fn publish(&self, mut target: Value, message: &str) -> anyhow::Result<()> {
        let body = target
            .as_object_mut()
            .ok_or_else(|| anyhow!("the target is an object"))?;
        body.insert("message".into(), json!(message));
        let response = self
            .http
            .post(format!("{}/api/notifications", self.base))
            .header("authorization", &self.auth)
            .json(&target)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("POST /api/notifications: {status} {text}");
        }
        Ok(())
    }
}
