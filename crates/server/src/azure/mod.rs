//! Azure SignalR Service compatibility: serverless hubs, the data-plane REST API and access-key
//! authentication.
//!
//! On when access keys are configured (`azure.access_keys` / `SIGNALBOX_AZURE_ACCESS_KEYS`):
//! back ends written for Azure SignalR Service (the Management SDK, the Azure Functions
//! extension, hand-written REST callers) then use signalbox through the connection string
//! `Endpoint=http://HOST:PORT;AccessKey=KEY;Version=1.0;`. Clients connect at
//! `/client/?hub=NAME` ([`client`]) to serverless hubs ([`hubs`]) whose connection events and
//! invocations go to the configured webhooks ([`upstream`]); back ends send and manage groups
//! through `/api/hubs/…` ([`rest`]). Tokens are verified with the access keys ([`keys`]).

pub mod client;
pub mod cluster;
pub mod directory;
mod execute;
mod filter;
pub mod hubs;
pub mod keys;
pub mod payload;
pub mod rest;
pub mod store;
pub mod upstream;

use std::net::SocketAddr;

use axum::Router;

pub use hubs::{AzureError, AzureHub, AzureHubServices, AzureHubs, internal_hub_name};
pub use keys::AccessKeys;

use crate::cluster::backplane::ClusterBackplane;
use crate::config::Config;
use crate::db::Db;

/// The Azure-compatible services. Cheap to clone.
#[derive(Clone)]
pub struct Azure {
    /// The access keys.
    pub keys: AccessKeys,
    /// The serverless hubs.
    pub hubs: AzureHubs,
    /// The webhooks connection events and client invocations go to.
    pub upstream: upstream::Upstream,
    /// Questions about connections, users and groups of a hub, and commands on them.
    pub directory: directory::Directory,
    /// Users' group memberships (with their expiry).
    pub store: store::AzureStore,
    /// The public URL of the service, if configured.
    client_endpoint: Option<String>,
}

impl std::fmt::Debug for Azure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Azure")
            .field("keys", &self.keys)
            .field("hubs", &self.hubs)
            .field("upstream", &self.upstream.is_enabled())
            .finish_non_exhaustive()
    }
}

impl Azure {
    /// The services, when access keys are configured (`None` otherwise: Azure compatibility is
    /// off). With a backplane, each hub's messages travel over it; with `cluster_node`, requests
    /// for connections of other nodes are forwarded to them.
    pub fn new(
        config: &Config,
        db: &Db,
        backplane: Option<ClusterBackplane>,
        cluster_node: Option<signalbox::ClusterNode>,
    ) -> Option<Self> {
        if !config.azure.is_enabled() {
            return None;
        }
        upstream::register_metrics();
        let keys = AccessKeys::new(config.azure.access_keys.clone());
        let upstream = upstream::Upstream::new(&config.upstream, keys.keys().to_vec());
        let store = store::AzureStore::new(db.clone());
        let hubs = AzureHubs::new(AzureHubServices {
            keys: keys.clone(),
            upstream: upstream.clone(),
            store: store.clone(),
            backplane,
            channel_prefix: config.cluster.channel_prefix.clone(),
            connection_token_secret: config.connection_token_secret.clone(),
            cluster_node,
        });
        let directory = directory::Directory::new(hubs.clone(), store.clone());
        Some(Self {
            keys,
            hubs,
            upstream,
            directory,
            store,
            client_endpoint: config.azure.client_endpoint.clone(),
        })
    }

    /// The public URL of the service (`azure.client_endpoint`), if configured.
    pub fn client_endpoint(&self) -> Option<&str> {
        self.client_endpoint.as_deref()
    }

    /// The connection string back ends use, without the key: `Endpoint=URL;AccessKey=…;Version=1.0;`
    /// with `azure.client_endpoint`, else `http://{addr}`.
    pub fn connection_string_hint(&self, addr: SocketAddr) -> String {
        let endpoint = self
            .client_endpoint
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        format!(
            "Endpoint={endpoint};AccessKey=<azure.access_keys>;Version=1.0; ({} key{}, upstream {})",
            self.keys.keys().len(),
            if self.keys.keys().len() == 1 { "" } else { "s" },
            if self.upstream.is_enabled() {
                "configured"
            } else {
                "none"
            },
        )
    }
}

/// The client endpoint (`/client/negotiate`, `/client`) and the data-plane REST API (`/api/…`).
pub fn router(azure: Azure) -> Router {
    client::routes(azure.clone()).merge(rest::router(azure))
}
