//! Questions about the connections, users and groups of a serverless hub, and commands on them:
//! what the data-plane REST API needs beyond sending.
//!
//! Answers come from this node's connections of the hub ([`AzureHub::local`]); group changes go
//! through the hub's [`HubContext`](signalbox::HubContext). A user's stored group memberships
//! ([`AzureStore`]) count for [`Directory::user_in_group`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use futures_util::future::{BoxFuture, FutureExt};

use serde::{Deserialize, Serialize};
use signalbox::Target;
use signalbox::lifetime::ConnectionHandle;
use signalbox::protocol::{Close, HubMessage};

use super::cluster::{Answer, AzureCluster, Question, Responder};
use super::execute::Batch;
use super::hubs::{AzureHub, AzureHubs};
use super::store::AzureStore;

const LOG: &str = "signalbox::azure";

/// Which connections [`Directory::close`] closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum CloseScope {
    /// Every connection of the hub.
    All,
    /// The members of a group.
    Group(String),
    /// The connections of a user.
    User(String),
    /// One connection.
    Connection(String),
}

impl CloseScope {
    fn target(&self) -> Target {
        match self {
            CloseScope::All => Target::All,
            CloseScope::Group(group) => Target::Group(group.clone()),
            CloseScope::User(user) => Target::User(user.clone()),
            CloseScope::Connection(id) => Target::Connection(id.clone()),
        }
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupMember {
    /// The connection id.
    pub connection_id: String,
    /// The connection's user id, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// Connections, users and groups of serverless hubs. Cheap to clone.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    hubs: AzureHubs,
    store: AzureStore,
    /// The group names connections of each hub were added to through the directory: where
    /// [`Directory::remove_connection_from_all_groups`] looks. Names whose group has no member
    /// left are dropped there.
    groups: Mutex<HashMap<String, HashSet<String>>>,
    /// The other nodes, with a backplane.
    cluster: OnceLock<AzureCluster>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

impl Directory {
    /// The directory of `hubs`, with users' stored memberships in `store`.
    pub fn new(hubs: AzureHubs, store: AzureStore) -> Self {
        Self {
            inner: Arc::new(Inner {
                hubs,
                store,
                groups: Mutex::new(HashMap::new()),
                cluster: OnceLock::new(),
            }),
        }
    }

    /// The serverless hubs.
    pub fn hubs(&self) -> &AzureHubs {
        &self.inner.hubs
    }

    /// The users' stored group memberships.
    pub fn store(&self) -> &AzureStore {
        &self.inner.store
    }

    /// Makes every question and command cover the other nodes too, and answers theirs about
    /// this node (once; later calls are ignored).
    pub fn attach_cluster(&self, cluster: AzureCluster) {
        cluster.set_responder(Arc::new(LocalResponder(Arc::downgrade(&self.inner))));
        let _ = self.inner.cluster.set(cluster);
    }

    /// The answers of the other nodes (none on a single node).
    async fn ask(&self, question: Question) -> Vec<Answer> {
        match self.inner.cluster.get() {
            Some(cluster) => cluster.ask(question).await,
            None => Vec::new(),
        }
    }

    /// Whether another node answered yes.
    async fn anyone(&self, question: Question) -> bool {
        self.ask(question).await.contains(&Answer::Bool(true))
    }

    /// Whether the connection is open, on any node.
    pub async fn connection_exists(&self, hub: &AzureHub, connection_id: &str) -> bool {
        hub.local().connection(connection_id).is_some()
            || self
                .anyone(Question::ConnectionExists {
                    hub: hub.name().to_owned(),
                    connection_id: connection_id.to_owned(),
                })
                .await
    }

    /// Whether the user has at least one open connection, on any node.
    pub async fn user_exists(&self, hub: &AzureHub, user: &str) -> bool {
        local_user_exists(hub, user)
            || self
                .anyone(Question::UserExists {
                    hub: hub.name().to_owned(),
                    user: user.to_owned(),
                })
                .await
    }

    /// Whether the group has at least one connection, on any node.
    pub async fn group_exists(&self, hub: &AzureHub, group: &str) -> bool {
        local_group_exists(hub, group)
            || self
                .anyone(Question::GroupExists {
                    hub: hub.name().to_owned(),
                    group: group.to_owned(),
                })
                .await
    }

    /// Whether the user is in the group: a stored, unexpired membership, or one of its
    /// connections in the group, on any node.
    pub async fn user_in_group(&self, hub: &AzureHub, user: &str, group: &str) -> bool {
        match self.inner.store.is_member(hub.name(), user, group).await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(error) => {
                tracing::error!(target: LOG, %error, hub = hub.name(), "cannot read a user's groups");
            }
        }
        local_user_in_group(hub, user, group)
            || self
                .anyone(Question::UserInGroup {
                    hub: hub.name().to_owned(),
                    user: user.to_owned(),
                    group: group.to_owned(),
                })
                .await
    }

    /// The connections in the group on every node, by connection id.
    pub async fn group_members(&self, hub: &AzureHub, group: &str) -> Vec<GroupMember> {
        let mut members = local_group_members(hub, group);
        let answers = self
            .ask(Question::GroupMembers {
                hub: hub.name().to_owned(),
                group: group.to_owned(),
            })
            .await;
        for answer in answers {
            if let Answer::Members(remote) = answer {
                members.extend(
                    remote
                        .into_iter()
                        .map(|(connection_id, user_id)| GroupMember {
                            connection_id,
                            user_id,
                        }),
                );
            }
        }
        members.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        members.dedup_by(|a, b| a.connection_id == b.connection_id);
        members
    }

    /// Closes the connections in `scope` but `excluded`, on every node: each is sent a Close
    /// message with `reason` as its error and `allowReconnect: true`, then ends. Returns how many
    /// were closed on this node.
    pub async fn close(
        &self,
        hub: &AzureHub,
        scope: CloseScope,
        excluded: &[String],
        reason: Option<&str>,
    ) -> usize {
        let closed = local_close(hub, &scope, excluded, reason);
        let here = matches!(&scope, CloseScope::Connection(id) if closed > 0 || hub.local().connection(id).is_some());
        if !here {
            self.ask(Question::Close {
                hub: hub.name().to_owned(),
                scope,
                excluded: excluded.to_vec(),
                reason: reason.map(str::to_owned),
            })
            .await;
        }
        closed
    }

    /// Adds a connection (of any node) to a group; `false` if the connection is not open.
    pub async fn add_connection_to_group(
        &self,
        hub: &AzureHub,
        connection_id: &str,
        group: &str,
    ) -> bool {
        if !self.connection_exists(hub, connection_id).await {
            return false;
        }
        self.remember_group(hub, group);
        self.add(hub, connection_id, group).await;
        true
    }

    /// Removes a connection (of any node) from a group; `false` if it was not in it.
    pub async fn remove_connection_from_group(
        &self,
        hub: &AzureHub,
        connection_id: &str,
        group: &str,
    ) -> bool {
        let member = hub.local().is_in_group(connection_id, group)
            || (hub.local().connection(connection_id).is_none()
                && self
                    .anyone(Question::ConnectionInGroup {
                        hub: hub.name().to_owned(),
                        connection_id: connection_id.to_owned(),
                        group: group.to_owned(),
                    })
                    .await);
        self.remove(hub, connection_id, group).await;
        member
    }

    /// Adds the user's open connections, on every node, to the group.
    pub async fn add_user_to_group(&self, hub: &AzureHub, user: &str, group: &str) {
        self.local_add_user_to_group(hub, user, group).await;
        self.ask(Question::AddUserToGroup {
            hub: hub.name().to_owned(),
            user: user.to_owned(),
            group: group.to_owned(),
        })
        .await;
    }

    /// Removes the user's open connections, on every node, from the group.
    pub async fn remove_user_from_group(&self, hub: &AzureHub, user: &str, group: &str) {
        self.local_remove_user_from_group(hub, user, group).await;
        self.ask(Question::RemoveUserFromGroup {
            hub: hub.name().to_owned(),
            user: user.to_owned(),
            group: group.to_owned(),
        })
        .await;
    }

    /// Removes the user's open connections, on every node, from every group.
    pub async fn remove_user_from_all_groups(&self, hub: &AzureHub, user: &str) {
        self.local_remove_user_from_all_groups(hub, user).await;
        self.ask(Question::RemoveUserFromAllGroups {
            hub: hub.name().to_owned(),
            user: user.to_owned(),
        })
        .await;
    }

    /// Removes the connection, wherever it is, from every group.
    pub async fn remove_connection_from_all_groups(&self, hub: &AzureHub, connection_id: &str) {
        if !self
            .local_remove_connection_from_all_groups(hub, connection_id)
            .await
        {
            self.ask(Question::RemoveConnectionFromAllGroups {
                hub: hub.name().to_owned(),
                connection_id: connection_id.to_owned(),
            })
            .await;
        }
    }

    /// Applies an `:execute` batch to the connections it selects, on every node.
    pub async fn execute(&self, hub: &AzureHub, batch: &Batch) {
        batch.apply_here(self, hub).await;
        self.ask(Question::Execute {
            hub: hub.name().to_owned(),
            filter: batch.filter_text().map(str::to_owned),
            body: batch.body().to_owned(),
        })
        .await;
    }

    async fn local_add_user_to_group(&self, hub: &AzureHub, user: &str, group: &str) {
        self.remember_group(hub, group);
        for connection in self.user_connections(hub, user) {
            self.add(hub, connection.id(), group).await;
        }
    }

    async fn local_remove_user_from_group(&self, hub: &AzureHub, user: &str, group: &str) {
        for connection in self.user_connections(hub, user) {
            self.remove(hub, connection.id(), group).await;
        }
    }

    async fn local_remove_user_from_all_groups(&self, hub: &AzureHub, user: &str) {
        for connection in self.user_connections(hub, user) {
            self.leave_all(hub, &connection).await;
        }
    }

    /// `false` when the connection is not on this node.
    async fn local_remove_connection_from_all_groups(
        &self,
        hub: &AzureHub,
        connection_id: &str,
    ) -> bool {
        match hub.local().connection(connection_id) {
            Some(connection) => {
                self.leave_all(hub, &connection).await;
                true
            }
            None => false,
        }
    }

    /// This node's answer to another node's question.
    async fn answer(&self, question: Question) -> Answer {
        let hub_name = match &question {
            Question::ConnectionExists { hub, .. }
            | Question::UserExists { hub, .. }
            | Question::GroupExists { hub, .. }
            | Question::UserInGroup { hub, .. }
            | Question::ConnectionInGroup { hub, .. }
            | Question::GroupMembers { hub, .. }
            | Question::Close { hub, .. }
            | Question::AddUserToGroup { hub, .. }
            | Question::RemoveUserFromGroup { hub, .. }
            | Question::RemoveUserFromAllGroups { hub, .. }
            | Question::Execute { hub, .. }
            | Question::RemoveConnectionFromAllGroups { hub, .. } => hub.clone(),
        };
        // A hub this node never served has no connection here.
        let Some(hub) = self.inner.hubs.existing(&hub_name) else {
            return match question {
                Question::GroupMembers { .. } => Answer::Members(Vec::new()),
                Question::ConnectionExists { .. }
                | Question::UserExists { .. }
                | Question::GroupExists { .. }
                | Question::UserInGroup { .. }
                | Question::ConnectionInGroup { .. } => Answer::Bool(false),
                _ => Answer::Done,
            };
        };
        match question {
            Question::ConnectionExists { connection_id, .. } => {
                Answer::Bool(hub.local().connection(&connection_id).is_some())
            }
            Question::UserExists { user, .. } => Answer::Bool(local_user_exists(&hub, &user)),
            Question::GroupExists { group, .. } => Answer::Bool(local_group_exists(&hub, &group)),
            Question::UserInGroup { user, group, .. } => {
                Answer::Bool(local_user_in_group(&hub, &user, &group))
            }
            Question::ConnectionInGroup {
                connection_id,
                group,
                ..
            } => Answer::Bool(hub.local().is_in_group(&connection_id, &group)),
            Question::GroupMembers { group, .. } => Answer::Members(
                local_group_members(&hub, &group)
                    .into_iter()
                    .map(|member| (member.connection_id, member.user_id))
                    .collect(),
            ),
            Question::Close {
                scope,
                excluded,
                reason,
                ..
            } => {
                local_close(&hub, &scope, &excluded, reason.as_deref());
                Answer::Done
            }
            Question::AddUserToGroup { user, group, .. } => {
                self.local_add_user_to_group(&hub, &user, &group).await;
                Answer::Done
            }
            Question::RemoveUserFromGroup { user, group, .. } => {
                self.local_remove_user_from_group(&hub, &user, &group).await;
                Answer::Done
            }
            Question::RemoveUserFromAllGroups { user, .. } => {
                self.local_remove_user_from_all_groups(&hub, &user).await;
                Answer::Done
            }
            Question::RemoveConnectionFromAllGroups { connection_id, .. } => {
                self.local_remove_connection_from_all_groups(&hub, &connection_id)
                    .await;
                Answer::Done
            }
            Question::Execute { filter, body, .. } => {
                match Batch::parse(filter.as_deref(), &body) {
                    Ok(batch) => batch.apply_here(self, &hub).await,
                    Err(error) => {
                        tracing::warn!(target: LOG, %error, "unreadable :execute batch from another node");
                    }
                }
                Answer::Done
            }
        }
    }

    fn user_connections(&self, hub: &AzureHub, user: &str) -> Vec<ConnectionHandle> {
        hub.local().recipients(&Target::User(user.to_owned()))
    }

    async fn add(&self, hub: &AzureHub, connection_id: &str, group: &str) {
        if let Err(error) = hub.context().groups().add(connection_id, group).await {
            tracing::warn!(target: LOG, %error, hub = hub.name(), "cannot add a connection to a group");
        }
    }

    async fn remove(&self, hub: &AzureHub, connection_id: &str, group: &str) {
        if let Err(error) = hub.context().groups().remove(connection_id, group).await {
            tracing::warn!(target: LOG, %error, hub = hub.name(), "cannot remove a connection from a group");
        }
    }

    /// Removes a connection from each group it may be in: those the directory added connections
    /// to, and its user's stored groups (joined when it connected).
    async fn leave_all(&self, hub: &AzureHub, connection: &ConnectionHandle) {
        let mut candidates = self.known_groups(hub);
        if let Some(user) = connection.user_id() {
            candidates.extend(self.inner.store.groups_of(hub.name(), user).await);
        }
        let local = hub.local();
        for group in candidates {
            if local.is_in_group(connection.id(), &group) {
                self.remove(hub, connection.id(), &group).await;
            }
        }
        self.forget_empty_groups(hub);
    }

    fn remember_group(&self, hub: &AzureHub, group: &str) {
        let mut groups = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        groups
            .entry(hub.name().to_owned())
            .or_default()
            .insert(group.to_owned());
    }

    fn known_groups(&self, hub: &AzureHub) -> HashSet<String> {
        let groups = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        groups.get(hub.name()).cloned().unwrap_or_default()
    }

    fn forget_empty_groups(&self, hub: &AzureHub) {
        let local = hub.local();
        let mut groups = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(names) = groups.get_mut(hub.name()) {
            names.retain(|group| !local.recipients(&Target::Group(group.clone())).is_empty());
        }
    }
}

/// Answers other nodes' questions about this node's connections.
struct LocalResponder(Weak<Inner>);

impl Responder for LocalResponder {
    fn answer(&self, question: Question) -> BoxFuture<'static, Answer> {
        let inner = self.0.upgrade();
        async move {
            match inner {
                Some(inner) => Directory { inner }.answer(question).await,
                // Shutting down: nothing is open here any more.
                None => match question {
                    Question::GroupMembers { .. } => Answer::Members(Vec::new()),
                    Question::Close { .. }
                    | Question::AddUserToGroup { .. }
                    | Question::RemoveUserFromGroup { .. }
                    | Question::RemoveUserFromAllGroups { .. }
                    | Question::Execute { .. }
                    | Question::RemoveConnectionFromAllGroups { .. } => Answer::Done,
                    _ => Answer::Bool(false),
                },
            }
        }
        .boxed()
    }
}

fn local_user_exists(hub: &AzureHub, user: &str) -> bool {
    !hub.local()
        .recipients(&Target::User(user.to_owned()))
        .is_empty()
}

fn local_group_exists(hub: &AzureHub, group: &str) -> bool {
    !hub.local()
        .recipients(&Target::Group(group.to_owned()))
        .is_empty()
}

fn local_user_in_group(hub: &AzureHub, user: &str, group: &str) -> bool {
    let local = hub.local();
    local
        .recipients(&Target::User(user.to_owned()))
        .iter()
        .any(|connection| local.is_in_group(connection.id(), group))
}

fn local_group_members(hub: &AzureHub, group: &str) -> Vec<GroupMember> {
    hub.local()
        .recipients(&Target::Group(group.to_owned()))
        .iter()
        .map(|connection| GroupMember {
            connection_id: connection.id().to_owned(),
            user_id: connection.user_id().map(str::to_owned),
        })
        .collect()
}

/// Closes this node's connections in `scope` but `excluded`; returns how many.
fn local_close(
    hub: &AzureHub,
    scope: &CloseScope,
    excluded: &[String],
    reason: Option<&str>,
) -> usize {
    let close = HubMessage::Close(Close {
        error: reason.map(str::to_owned),
        allow_reconnect: true,
    });
    let connections: Vec<ConnectionHandle> = hub
        .local()
        .recipients(&scope.target())
        .into_iter()
        .filter(|connection| !excluded.iter().any(|id| id == connection.id()))
        .collect();
    for connection in &connections {
        close_connection(connection, &close);
    }
    connections.len()
}

/// Queues a Close message in the connection's protocol, then ends the connection; its hub loop
/// writes what is queued before the transport closes.
fn close_connection(connection: &ConnectionHandle, close: &HubMessage) {
    match connection.protocol().encode_to_bytes(close) {
        Ok(frame) => {
            // A full or closed queue: the connection is ending anyway.
            let _ = connection.try_send(frame);
        }
        Err(error) => {
            tracing::warn!(target: LOG, %error, "cannot encode a Close message");
        }
    }
    connection.abort();
}
