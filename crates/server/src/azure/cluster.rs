//! Questions about serverless hubs that only the whole cluster can answer: does a connection, a
//! user or a group exist anywhere, who is in a group, and commands every node applies to its own
//! connections (close by scope, a user's connections joining or leaving a group).
//!
//! Sends, group changes of one connection, client invocations and aborts already travel through
//! each hub's [`ScaledLifetimeManager`](signalbox::lifetime::ScaledLifetimeManager); this adds a
//! scatter-gather over one more backplane connection:
//!
//! | channel | subscribed by | carries |
//! |---|---|---|
//! | `{prefix}:azure:ask` | every node | a [`Question`] with its id and the asking node |
//! | `{prefix}:azure:reply:{node}` | that node | the [`Answer`] of each other node |
//!
//! The asking node expects one answer from each live node (the `nodes` table: a heartbeat within
//! `cluster.node_timeout`) and stops waiting after [`ASK_TIMEOUT`]; a node that never answers
//! (just died, backplane down) counts as having nothing. Every node of a cluster must have the
//! same access keys, so that every node serves serverless hubs and answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use signalbox::lifetime::{Backplane, BackplaneError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::directory::CloseScope;
use crate::clock::{duration_ms, now_ms};
use crate::cluster::backplane::{ClusterBackplane, SharedBackplane};
use crate::db::Db;

/// How long the answers of the other nodes are awaited.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(3);

const LOG: &str = "signalbox::azure";

/// The most answers one question waits for (when the live nodes cannot be listed).
const MAX_NODES: usize = 1024;

/// What one node is asked about its own connections of hub `hub` (the internal, lowercased
/// name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "q", rename_all = "snake_case")]
pub enum Question {
    /// Is the connection on this node?
    ConnectionExists {
        /// The hub.
        hub: String,
        /// The connection id.
        connection_id: String,
    },
    /// Does the user have a connection on this node?
    UserExists {
        /// The hub.
        hub: String,
        /// The user id.
        user: String,
    },
    /// Does the group have a member on this node?
    GroupExists {
        /// The hub.
        hub: String,
        /// The group.
        group: String,
    },
    /// Is one of the user's connections on this node in the group?
    UserInGroup {
        /// The hub.
        hub: String,
        /// The user id.
        user: String,
        /// The group.
        group: String,
    },
    /// Is the connection, if on this node, in the group?
    ConnectionInGroup {
        /// The hub.
        hub: String,
        /// The connection id.
        connection_id: String,
        /// The group.
        group: String,
    },
    /// The group's members on this node.
    GroupMembers {
        /// The hub.
        hub: String,
        /// The group.
        group: String,
    },
    /// Close this node's connections in `scope`, except `excluded`, telling them `reason`.
    Close {
        /// The hub.
        hub: String,
        /// Which connections.
        scope: CloseScope,
        /// Connection ids left open.
        excluded: Vec<String>,
        /// The error text of the Close message.
        reason: Option<String>,
    },
    /// Add the user's connections on this node to the group.
    AddUserToGroup {
        /// The hub.
        hub: String,
        /// The user id.
        user: String,
        /// The group.
        group: String,
    },
    /// Remove the user's connections on this node from the group.
    RemoveUserFromGroup {
        /// The hub.
        hub: String,
        /// The user id.
        user: String,
        /// The group.
        group: String,
    },
    /// Remove the user's connections on this node from every group.
    RemoveUserFromAllGroups {
        /// The hub.
        hub: String,
        /// The user id.
        user: String,
    },
    /// Apply an `:execute` batch to this node's connections.
    Execute {
        /// The hub.
        hub: String,
        /// The OData filter, as received.
        filter: Option<String>,
        /// The commands (the JSON body), as received.
        body: String,
    },
    /// Remove the connection, if on this node, from every group.
    RemoveConnectionFromAllGroups {
        /// The hub.
        hub: String,
        /// The connection id.
        connection_id: String,
    },
}

/// One node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "a", content = "v", rename_all = "snake_case")]
pub enum Answer {
    /// Yes / no.
    Bool(bool),
    /// Group members: connection id and user id.
    Members(Vec<(String, Option<String>)>),
    /// A command was applied.
    Done,
}

/// Answers questions about this node's own connections.
pub trait Responder: Send + Sync + 'static {
    /// The answer of this node alone.
    fn answer(&self, question: Question) -> BoxFuture<'static, Answer>;
}

#[derive(Serialize, Deserialize)]
struct Ask {
    id: u64,
    origin: String,
    question: Question,
}

#[derive(Serialize, Deserialize)]
struct Reply {
    id: u64,
    answer: Answer,
}

/// Scatter-gather over the backplane; cheap to clone.
#[derive(Clone)]
pub struct AzureCluster {
    inner: Arc<Inner>,
}

struct Inner {
    driver: SharedBackplane,
    node: String,
    db: Db,
    node_timeout: Duration,
    ask_channel: String,
    next_id: AtomicU64,
    pending: DashMap<u64, mpsc::Sender<Answer>>,
    responder: OnceLock<Arc<dyn Responder>>,
    task: OnceLock<JoinHandle<()>>,
}

impl std::fmt::Debug for AzureCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureCluster")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl AzureCluster {
    /// Opens a backplane connection for the questions of serverless hubs, under `prefix`.
    pub async fn start(
        backplane: &ClusterBackplane,
        prefix: &str,
        db: Db,
        node_timeout: Duration,
    ) -> Result<Self, BackplaneError> {
        let driver = backplane.open_driver().await?;
        let node = backplane.node_id().to_owned();
        let ask_channel = format!("{prefix}:azure:ask");
        let reply_channel = format!("{prefix}:azure:reply:{node}");
        let messages = driver.messages();
        // Give the new connection a moment, so that questions are heard from the start; a
        // subscription that fails is remembered and made once the driver connects.
        let mut state = driver.state();
        let _ = tokio::time::timeout(
            crate::cluster::backplane::DRIVER_CONNECT_WAIT,
            state.wait_for(|s| s.is_connected()),
        )
        .await;
        if let Err(error) = driver
            .subscribe(&[ask_channel.clone(), reply_channel.clone()])
            .await
        {
            tracing::debug!(target: LOG, %error, "cluster questions not subscribed yet");
        }
        let inner = Arc::new(Inner {
            driver,
            node,
            db,
            node_timeout,
            ask_channel: ask_channel.clone(),
            next_id: AtomicU64::new(1),
            pending: DashMap::new(),
            responder: OnceLock::new(),
            task: OnceLock::new(),
        });
        if let Some(mut messages) = messages {
            let weak = Arc::downgrade(&inner);
            let task = tokio::spawn(async move {
                while let Some(message) = messages.next().await {
                    let Some(inner) = weak.upgrade() else { return };
                    if message.channel == ask_channel {
                        inner.on_ask(&message.payload);
                    } else {
                        inner.on_reply(&message.payload);
                    }
                }
            });
            let _ = inner.task.set(task);
        }
        Ok(Self { inner })
    }

    /// Sets who answers the questions of other nodes (once; later calls are ignored).
    pub fn set_responder(&self, responder: Arc<dyn Responder>) {
        let _ = self.inner.responder.set(responder);
    }

    /// Asks every other live node; returns the answers that arrived within [`ASK_TIMEOUT`].
    pub async fn ask(&self, question: Question) -> Vec<Answer> {
        let inner = &self.inner;
        let cutoff = now_ms() - duration_ms(inner.node_timeout);
        let expected = match crate::cluster::live_nodes(&inner.db, &inner.node, cutoff).await {
            Ok(nodes) => nodes.len(),
            Err(error) => {
                tracing::warn!(target: LOG, %error, "cannot list the live nodes; asking anyway");
                MAX_NODES
            }
        };
        if expected == 0 {
            return Vec::new();
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        // One answer per node is expected: room for each of them (more are dropped).
        let (tx, mut rx) = mpsc::channel(expected.clamp(1, MAX_NODES));
        inner.pending.insert(id, tx);
        let _guard = Forget(&inner.pending, id);
        let ask = Ask {
            id,
            origin: inner.node.clone(),
            question,
        };
        let payload = match serde_json::to_vec(&ask) {
            Ok(payload) => Bytes::from(payload),
            Err(error) => {
                tracing::warn!(target: LOG, %error, "cannot encode a cluster question");
                return Vec::new();
            }
        };
        if let Err(error) = inner.driver.publish(&inner.ask_channel, payload).await {
            tracing::warn!(target: LOG, %error, "cannot ask the other nodes; answering for this node only");
            return Vec::new();
        }
        let mut answers = Vec::new();
        let deadline = tokio::time::Instant::now() + ASK_TIMEOUT;
        while answers.len() < expected {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(answer)) => answers.push(answer),
                Ok(None) => break,
                Err(_) => {
                    if expected != MAX_NODES {
                        tracing::warn!(target: LOG, expected, got = answers.len(), "some nodes did not answer in time");
                    }
                    break;
                }
            }
        }
        answers
    }
}

impl Inner {
    fn on_ask(self: &Arc<Self>, payload: &[u8]) {
        let ask: Ask = match serde_json::from_slice(payload) {
            Ok(ask) => ask,
            Err(error) => {
                tracing::warn!(target: LOG, %error, "malformed cluster question ignored");
                return;
            }
        };
        if ask.origin == self.node {
            return;
        }
        let Some(responder) = self.responder.get().cloned() else {
            return;
        };
        let inner = self.clone();
        tokio::spawn(async move {
            let answer = responder.answer(ask.question).await;
            let reply = Reply { id: ask.id, answer };
            let channel = format!(
                "{}:reply:{}",
                inner.ask_channel.trim_end_matches(":ask"),
                ask.origin
            );
            match serde_json::to_vec(&reply) {
                Ok(bytes) => {
                    if let Err(error) = inner.driver.publish(&channel, Bytes::from(bytes)).await {
                        tracing::warn!(target: LOG, %error, "cannot answer a cluster question");
                    }
                }
                Err(error) => tracing::warn!(target: LOG, %error, "cannot encode an answer"),
            }
        });
    }

    fn on_reply(&self, payload: &[u8]) {
        match serde_json::from_slice::<Reply>(payload) {
            Ok(reply) => {
                if let Some(pending) = self.pending.get(&reply.id) {
                    // Full: more answers than nodes were expected; the rest are not needed.
                    let _ = pending.try_send(reply.answer);
                }
            }
            Err(error) => tracing::warn!(target: LOG, %error, "malformed cluster answer ignored"),
        }
    }
}

/// Removes a pending question when its asker stops waiting.
struct Forget<'a>(&'a DashMap<u64, mpsc::Sender<Answer>>, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_and_answers_round_trip_as_json() {
        let ask = Ask {
            id: 7,
            origin: "node-a".into(),
            question: Question::Close {
                hub: "chat".into(),
                scope: CloseScope::Group("g/1".into()),
                excluded: vec!["c1".into()],
                reason: Some("bye".into()),
            },
        };
        let bytes = serde_json::to_vec(&ask).unwrap();
        let back: Ask = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.id, 7);
        assert_eq!(back.question, ask.question);
        let reply = Reply {
            id: 7,
            answer: Answer::Members(vec![("c1".into(), Some("u".into())), ("c2".into(), None)]),
        };
        let back: Reply = serde_json::from_slice(&serde_json::to_vec(&reply).unwrap()).unwrap();
        assert_eq!(back.answer, reply.answer);
    }
}
