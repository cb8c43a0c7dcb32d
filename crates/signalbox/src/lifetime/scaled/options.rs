//! The settings of a [`ScaledLifetimeManager`](super::ScaledLifetimeManager).

use std::time::Duration;

/// Settings of a [`ScaledLifetimeManager`](super::ScaledLifetimeManager).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScaledOptions {
    /// This node's id (unique among the nodes of the hub). Defaults to `node-` and 16 random hex
    /// digits.
    pub node_id: Option<String>,
    /// How long adding or removing a group member on another node, and the first answer of a
    /// client-result invocation on another node, are awaited. Defaults to 10 seconds.
    pub ack_timeout: Duration,
    /// How many received envelopes are handled at once, at most: group changes, client-result
    /// invocations (until they are queued to the client; waiting for its answer takes no slot)
    /// and refresh answers for connections of this node.
    /// When that many are running, the node stops reading from the backplane until one finishes,
    /// and the backplane buffers (or, past its own limits, drops) what arrives meanwhile. Sends to
    /// this node's connections, and answers to its own requests, are handled as they are read and
    /// take no slot. Defaults to 256; 0 counts as 1.
    pub max_envelopes_in_flight: usize,
}

impl Default for ScaledOptions {
    fn default() -> Self {
        Self {
            node_id: None,
            ack_timeout: Duration::from_secs(10),
            max_envelopes_in_flight: 256,
        }
    }
}

impl ScaledOptions {
    /// Sets the node id.
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    /// Sets the ack timeout.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Sets how many received envelopes are handled at once (see
    /// [`max_envelopes_in_flight`](Self::max_envelopes_in_flight)).
    pub fn max_envelopes_in_flight(mut self, max: usize) -> Self {
        self.max_envelopes_in_flight = max;
        self
    }
}
