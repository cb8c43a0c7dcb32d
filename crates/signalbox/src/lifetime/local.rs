//! The in-memory lifetime manager (SignalR's `DefaultHubLifetimeManager`).

use std::sync::Arc;

use dashmap::DashMap;
use futures_util::future::{BoxFuture, FutureExt};

use signalbox_protocol::{Completion, HubMessage, Invocation, Payload};

use super::members::Members;
use super::{
    ClientResultError, ClientResults, ConnectionHandle, HubLifetimeManager, SendError,
    SerializedMessage, Target,
};

/// Keeps connections, groups and users of one node in memory.
///
/// A message is encoded once per protocol (lazily, at the first recipient using it) and the frame is
/// queued to each recipient without waiting; a recipient whose queue is full is closed, the others
/// are unaffected.
#[derive(Debug, Default)]
pub struct LocalLifetimeManager {
    connections: DashMap<Arc<str>, Entry>,
    /// Each group's members; the group's name is shared with the members' entries.
    groups: DashMap<Arc<str>, Members>,
    /// Each user's connection ids: a list, as most users have a few connections at most.
    users: DashMap<Arc<str>, Vec<Arc<str>>>,
    results: ClientResults,
}

#[derive(Debug)]
struct Entry {
    handle: ConnectionHandle,
    /// The groups the connection is in: a list, as most connections are in a few at most.
    groups: Vec<Arc<str>>,
}

impl LocalLifetimeManager {
    /// An empty manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of connections on this node.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// The handle of a local connection.
    pub fn connection(&self, connection_id: &str) -> Option<ConnectionHandle> {
        self.connections
            .get(connection_id)
            .map(|e| e.handle.clone())
    }

    /// Whether a local connection is in a group.
    pub fn is_in_group(&self, connection_id: &str, group: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|members| members.contains(connection_id))
    }

    /// Handles of the recipients of `target` on this node.
    pub fn recipients(&self, target: &Target) -> Vec<ConnectionHandle> {
        let by_ids = |ids: &mut dyn Iterator<Item = &str>| -> Vec<ConnectionHandle> {
            ids.filter_map(|id| self.connections.get(id).map(|e| e.handle.clone()))
                .collect()
        };
        match target {
            Target::All => self.connections.iter().map(|e| e.handle.clone()).collect(),
            Target::AllExcept(excluded) => self
                .connections
                .iter()
                .filter(|e| !excluded.iter().any(|x| **x == *e.handle.id))
                .map(|e| e.handle.clone())
                .collect(),
            Target::Connection(id) => by_ids(&mut std::iter::once(id.as_str())),
            Target::Connections(ids) => by_ids(&mut ids.iter().map(String::as_str)),
            Target::Group(group) => self.group_members(group, &[]),
            Target::Groups(groups) => groups
                .iter()
                .flat_map(|g| self.group_members(g, &[]))
                .collect(),
            Target::GroupExcept(group, excluded) => self.group_members(group, excluded),
            Target::User(user) => self.user_connections(user),
            Target::Users(users) => users
                .iter()
                .flat_map(|u| self.user_connections(u))
                .collect(),
        }
    }

    fn group_members(&self, group: &str, excluded: &[String]) -> Vec<ConnectionHandle> {
        self.handles(&self.group_member_ids(group, excluded))
    }

    fn user_connections(&self, user: &str) -> Vec<ConnectionHandle> {
        self.handles(&self.user_connection_ids(user))
    }

    /// The members of a group, minus `excluded` (copied out, so no group lock is held while the
    /// connection table is read).
    fn group_member_ids(&self, group: &str, excluded: &[String]) -> Vec<Arc<str>> {
        match self.groups.get(group) {
            Some(members) => members
                .iter()
                .filter(|id| !excluded.iter().any(|x| **x == ***id))
                .cloned()
                .collect(),
            None => Vec::new(),
        }
    }

    /// The connection ids of a user.
    fn user_connection_ids(&self, user: &str) -> Vec<Arc<str>> {
        self.users
            .get(user)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn handles(&self, ids: &[Arc<str>]) -> Vec<ConnectionHandle> {
        ids.iter()
            .filter_map(|id| self.connections.get(id).map(|e| e.handle.clone()))
            .collect()
    }

    /// Queues `message` for each of `ids` that is connected here; returns how many were queued.
    fn send_to_ids<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        message: &SerializedMessage,
    ) -> usize {
        ids.into_iter()
            .filter_map(|id| self.connections.get(id))
            .filter(|e| e.handle.send_message(message))
            .count()
    }

    /// Sends synchronously to the local recipients of `target`; returns how many were queued.
    pub fn send_local(&self, target: &Target, message: &SerializedMessage) -> usize {
        let sent = match target {
            // Broadcasts queue straight from the table: no handle is cloned per recipient.
            Target::All => self
                .connections
                .iter()
                .filter(|e| e.handle.send_message(message))
                .count(),
            Target::AllExcept(excluded) => self
                .connections
                .iter()
                .filter(|e| !excluded.iter().any(|x| **x == *e.handle.id))
                .filter(|e| e.handle.send_message(message))
                .count(),
            // The others queue by id, without cloning a handle per recipient either.
            Target::Connection(id) => self.send_to_ids([id.as_str()], message),
            Target::Connections(ids) => self.send_to_ids(ids.iter().map(String::as_str), message),
            Target::Group(group) => {
                let ids = self.group_member_ids(group, &[]);
                self.send_to_ids(ids.iter().map(|id| &**id), message)
            }
            Target::Groups(groups) => groups
                .iter()
                .map(|group| {
                    let ids = self.group_member_ids(group, &[]);
                    self.send_to_ids(ids.iter().map(|id| &**id), message)
                })
                .sum(),
            Target::GroupExcept(group, excluded) => {
                let ids = self.group_member_ids(group, excluded);
                self.send_to_ids(ids.iter().map(|id| &**id), message)
            }
            Target::User(user) => {
                let ids = self.user_connection_ids(user);
                self.send_to_ids(ids.iter().map(|id| &**id), message)
            }
            Target::Users(users) => users
                .iter()
                .map(|user| {
                    let ids = self.user_connection_ids(user);
                    self.send_to_ids(ids.iter().map(|id| &**id), message)
                })
                .sum(),
        };
        crate::metrics::sent(sent as u64);
        sent
    }

    fn add(&self, handle: ConnectionHandle) {
        let id = handle.shared_id();
        if let Some(user) = handle.shared_user_id() {
            let mut ids = self.users.entry(user).or_default();
            if !ids.contains(&id) {
                // Room for one more only: most users have one connection.
                ids.reserve_exact(1);
                ids.push(id.clone());
            }
        }
        self.connections.insert(
            id,
            Entry {
                handle,
                groups: Vec::new(),
            },
        );
    }

    fn remove(&self, connection_id: &str) {
        let Some((id, entry)) = self.connections.remove(connection_id) else {
            return;
        };
        for group in &entry.groups {
            self.groups.remove_if_mut(&**group, |_, members| {
                members.remove(&id);
                members.is_empty()
            });
        }
        if let Some(user) = entry.handle.user_id() {
            self.users.remove_if_mut(user, |_, ids| {
                if let Some(at) = ids
                    .iter()
                    .position(|other| Arc::ptr_eq(other, &id) || *other == id)
                {
                    ids.swap_remove(at);
                }
                ids.is_empty()
            });
        }
        self.results.connection_closed(connection_id);
    }

    /// The pending client results of this node.
    pub fn client_results(&self) -> &ClientResults {
        &self.results
    }

    /// Invokes a client method on a local connection and waits for the answer.
    pub async fn invoke_local(
        &self,
        connection_id: &str,
        target: String,
        arguments: Vec<Payload>,
    ) -> Result<Payload, ClientResultError> {
        self.start_invoke_local(connection_id, target, arguments)?
            .await
    }

    /// Queues a client-result invocation on a local connection without waiting: the returned
    /// future resolves to the client's answer (or [`ClientResultError::Disconnected`] when the
    /// connection ends first). Errors when the connection is not on this node or its queue is full.
    pub fn start_invoke_local(
        &self,
        connection_id: &str,
        target: String,
        arguments: Vec<Payload>,
    ) -> Result<
        impl Future<Output = Result<Payload, ClientResultError>> + Send + '_,
        ClientResultError,
    > {
        let handle = self
            .connection(connection_id)
            .ok_or_else(|| ClientResultError::NotFound(connection_id.to_owned()))?;
        let (guard, rx) = self.results.register(connection_id);
        let invocation = Invocation {
            invocation_id: Some(guard.id().to_owned()),
            ..Invocation::new(target, arguments)
        };
        let frame = handle
            .protocol()
            .encode_to_bytes(&HubMessage::Invocation(invocation))
            .map_err(|e| ClientResultError::Send(e.to_string()))?;
        if !handle.try_send(frame) {
            return Err(ClientResultError::Disconnected);
        }
        Ok(async move {
            let result = rx.await.unwrap_or(Err(ClientResultError::Disconnected));
            drop(guard);
            result
        })
    }

    /// Adds a local connection to a group; returns `false` if the connection is not on this node.
    ///
    /// The group table is updated while the connection's entry is locked, so a concurrent
    /// [`on_disconnected`](HubLifetimeManager::on_disconnected) (which takes the entry out of the
    /// table first, then leaves the groups it lists) either runs after this and sees the group,
    /// or before and leaves this call nothing to add to: a disconnected id never stays in a group.
    /// Lock order: connection entry, then group, never the other way round.
    pub fn add_local_to_group(&self, connection_id: &str, group: &str) -> bool {
        let Some(mut entry) = self.connections.get_mut(connection_id) else {
            return false;
        };
        let id = entry.handle.shared_id();
        if entry.groups.iter().any(|g| **g == *group) {
            // Already in it (then the group table lists it too).
            return true;
        }
        let mut members = self.groups.entry(Arc::from(group)).or_default();
        entry.groups.push(members.key().clone());
        members.insert(id);
        drop(members);
        drop(entry);
        true
    }

    /// Removes a local connection from a group; returns `false` if the connection is not on this
    /// node. Like [`add_local_to_group`](Self::add_local_to_group), under the entry's lock, so
    /// that concurrent adds and removes of one connection leave its group list and the group
    /// table in agreement.
    pub fn remove_local_from_group(&self, connection_id: &str, group: &str) -> bool {
        let Some(mut entry) = self.connections.get_mut(connection_id) else {
            return false;
        };
        if let Some(at) = entry.groups.iter().position(|g| **g == *group) {
            entry.groups.swap_remove(at);
        }
        self.groups.remove_if_mut(group, |_, members| {
            members.remove(connection_id);
            members.is_empty()
        });
        drop(entry);
        true
    }
}

fn check_groups(target: &Target) -> Result<(), SendError> {
    let empty = match target {
        Target::Group(g) | Target::GroupExcept(g, _) => g.is_empty(),
        Target::Groups(gs) => gs.iter().any(String::is_empty),
        _ => false,
    };
    if empty {
        Err(SendError::EmptyGroupName)
    } else {
        Ok(())
    }
}

impl HubLifetimeManager for LocalLifetimeManager {
    fn on_connected(&self, connection: ConnectionHandle) -> BoxFuture<'_, ()> {
        self.add(connection);
        async {}.boxed()
    }

    fn on_disconnected<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, ()> {
        self.remove(connection_id);
        async {}.boxed()
    }

    fn send(
        &self,
        target: Target,
        message: Arc<SerializedMessage>,
    ) -> BoxFuture<'_, Result<(), SendError>> {
        let result = check_groups(&target).map(|()| {
            self.send_local(&target, &message);
        });
        async move { result }.boxed()
    }

    fn add_to_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        let result = if group.is_empty() {
            Err(SendError::EmptyGroupName)
        } else {
            self.add_local_to_group(connection_id, group);
            Ok(())
        };
        async move { result }.boxed()
    }

    fn remove_from_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        let result = if group.is_empty() {
            Err(SendError::EmptyGroupName)
        } else {
            self.remove_local_from_group(connection_id, group);
            Ok(())
        };
        async move { result }.boxed()
    }

    fn abort_connection<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, ()> {
        if let Some(entry) = self.connections.get(connection_id) {
            entry.handle.abort();
        }
        async {}.boxed()
    }

    fn invoke_client(
        &self,
        connection_id: String,
        target: String,
        arguments: Vec<Payload>,
    ) -> BoxFuture<'_, Result<Payload, ClientResultError>> {
        async move { self.invoke_local(&connection_id, target, arguments).await }.boxed()
    }

    fn on_client_completion(&self, connection_id: &str, completion: Completion) -> bool {
        self.results.complete(connection_id, completion)
    }

    fn local_connection_ids(&self) -> Vec<String> {
        self.connections
            .iter()
            .map(|e| e.handle.id().to_owned())
            .collect()
    }

    fn connection_count(&self) -> usize {
        self.connections.len()
    }

    fn refresh_connection(
        &self,
        connection_id: String,
        principal: crate::auth::Principal,
    ) -> BoxFuture<'_, Result<(), super::RefreshError>> {
        let result = match self.connection(&connection_id) {
            Some(handle) => handle.refresh_principal(principal),
            None => Err(super::RefreshError::NotFound),
        };
        async move { result }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalbox_protocol::Protocol;
    use tokio_util::sync::CancellationToken;

    struct Conn {
        rx: crate::connection::outbound::OutboundReceiver,
        abort: CancellationToken,
    }

    fn connect(
        m: &LocalLifetimeManager,
        id: &str,
        user: Option<&str>,
        protocol: Protocol,
        cap: usize,
    ) -> Conn {
        let (tx, rx) = crate::connection::outbound::channel(cap);
        let abort = CancellationToken::new();
        m.add(ConnectionHandle::new(
            Arc::from(id),
            user.map(Arc::from),
            protocol,
            tx,
            abort.clone(),
        ));
        Conn { rx, abort }
    }

    fn msg(text: &str) -> SerializedMessage {
        SerializedMessage::new(HubMessage::Invocation(Invocation::new(
            "M",
            vec![Payload::new(text.to_owned())],
        )))
    }

    fn received(conn: &mut Conn) -> usize {
        let mut n = 0;
        while conn.rx.try_recv().is_some() {
            n += 1;
        }
        n
    }

    #[test]
    fn routes_every_target_type() {
        let m = LocalLifetimeManager::new();
        let mut a1 = connect(&m, "a1", Some("alice"), Protocol::Json, 8);
        let mut a2 = connect(&m, "a2", Some("alice"), Protocol::MessagePack, 8);
        let mut b = connect(&m, "b", Some("bob"), Protocol::Json, 8);
        let mut anon = connect(&m, "x", None, Protocol::Json, 8);
        m.add_local_to_group("a1", "g");
        m.add_local_to_group("b", "g");

        let cases: Vec<(Target, [usize; 4])> = vec![
            (Target::All, [1, 1, 1, 1]),
            (
                Target::AllExcept(vec!["a1".into(), "x".into()]),
                [0, 1, 1, 0],
            ),
            (Target::Connection("b".into()), [0, 0, 1, 0]),
            (
                Target::Connections(vec!["a2".into(), "x".into(), "nope".into()]),
                [0, 1, 0, 1],
            ),
            (Target::Group("g".into()), [1, 0, 1, 0]),
            (
                Target::Groups(vec!["g".into(), "none".into()]),
                [1, 0, 1, 0],
            ),
            (
                Target::GroupExcept("g".into(), vec!["b".into()]),
                [1, 0, 0, 0],
            ),
            (Target::User("alice".into()), [1, 1, 0, 0]),
            (Target::User("Alice".into()), [0, 0, 0, 0]),
            (
                Target::Users(vec!["alice".into(), "bob".into()]),
                [1, 1, 1, 0],
            ),
        ];
        for (target, expected) in cases {
            m.send_local(&target, &msg("hi"));
            let got = [
                received(&mut a1),
                received(&mut a2),
                received(&mut b),
                received(&mut anon),
            ];
            assert_eq!(got, expected, "target {target:?}");
        }
    }

    #[test]
    fn groups_are_case_sensitive_and_left_on_disconnect() {
        let m = LocalLifetimeManager::new();
        let mut a = connect(&m, "a", None, Protocol::Json, 8);
        m.add_local_to_group("a", "Room");
        m.send_local(&Target::Group("room".into()), &msg("x"));
        assert_eq!(received(&mut a), 0);
        m.send_local(&Target::Group("Room".into()), &msg("x"));
        assert_eq!(received(&mut a), 1);
        m.remove_local_from_group("a", "Room");
        m.send_local(&Target::Group("Room".into()), &msg("x"));
        assert_eq!(received(&mut a), 0);
        m.add_local_to_group("a", "Room");
        m.remove("a");
        assert!(m.groups.is_empty());
        assert!(m.connections.is_empty());
        assert!(
            !m.add_local_to_group("a", "Room"),
            "unknown connections are ignored"
        );
    }

    #[test]
    fn a_full_queue_closes_only_that_connection() {
        let m = LocalLifetimeManager::new();
        let slow = connect(&m, "slow", None, Protocol::Json, 1);
        let mut fast = connect(&m, "fast", None, Protocol::Json, 8);
        m.send_local(&Target::All, &msg("1"));
        assert!(!slow.abort.is_cancelled());
        m.send_local(&Target::All, &msg("2"));
        assert!(slow.abort.is_cancelled());
        assert!(!fast.abort.is_cancelled());
        assert_eq!(received(&mut fast), 2);
    }

    #[test]
    fn frames_are_shared_between_recipients_of_one_protocol() {
        let m = LocalLifetimeManager::new();
        let mut a = connect(&m, "a", None, Protocol::Json, 8);
        let mut b = connect(&m, "b", None, Protocol::Json, 8);
        m.send_local(&Target::All, &msg("x"));
        let fa = a.rx.try_recv().unwrap();
        let fb = b.rx.try_recv().unwrap();
        assert_eq!(fa.as_ptr(), fb.as_ptr());
    }

    /// Checks that every group member is a live connection, that no group is empty, and that
    /// each connection's own group list matches the group table; returns the group count.
    fn assert_groups_consistent(m: &LocalLifetimeManager) -> usize {
        for group in m.groups.iter() {
            assert!(
                !group.is_empty(),
                "empty group {:?} left behind",
                group.key()
            );
            for id in group.iter() {
                let entry = m.connections.get(id);
                assert!(
                    entry.is_some(),
                    "dead connection {id} in group {:?}",
                    group.key()
                );
                assert!(
                    entry.is_some_and(|e| e.groups.contains(group.key())),
                    "{id} is in group {:?} without knowing it",
                    group.key()
                );
            }
        }
        for entry in m.connections.iter() {
            for group in &entry.groups {
                assert!(
                    m.is_in_group(entry.key(), group),
                    "{} lists group {group:?} but is not in it",
                    entry.key()
                );
            }
        }
        m.groups.len()
    }

    /// Many threads add connections to groups and remove them while half of the connections
    /// disconnect: afterwards no group holds a disconnected id (nor is left empty), and group
    /// membership agrees with each connection's own list.
    #[test]
    fn group_changes_racing_with_disconnects_leave_no_dead_ids() {
        const ROUNDS: usize = 300;
        const CONNECTIONS: usize = 16;
        const GROUPS: usize = 4;
        const WORKERS: usize = 3;
        const OPS: usize = 200;
        for round in 0..ROUNDS {
            let m = LocalLifetimeManager::new();
            let ids: Vec<String> = (0..CONNECTIONS).map(|i| format!("c{i}")).collect();
            let _conns: Vec<Conn> = ids
                .iter()
                .map(|id| connect(&m, id, None, Protocol::Json, 1))
                .collect();
            let start = std::sync::Barrier::new(WORKERS + 1);
            std::thread::scope(|scope| {
                for worker in 0..WORKERS {
                    let (m, ids, start) = (&m, &ids, &start);
                    scope.spawn(move || {
                        start.wait();
                        for op in 0..OPS {
                            let id = &ids[(op * 5 + worker * 3 + round) % CONNECTIONS];
                            let group = format!("g{}", (op + worker) % GROUPS);
                            if op % 3 == 2 {
                                m.remove_local_from_group(id, &group);
                            } else {
                                m.add_local_to_group(id, &group);
                            }
                        }
                    });
                }
                let (m, ids, start) = (&m, &ids, &start);
                scope.spawn(move || {
                    start.wait();
                    for id in ids.iter().step_by(2) {
                        m.remove(id);
                        std::thread::yield_now();
                    }
                });
            });
            assert_groups_consistent(&m);
            for id in ids.iter().step_by(2) {
                assert!(m.connection(id).is_none());
                for g in 0..GROUPS {
                    assert!(
                        !m.is_in_group(id, &format!("g{g}")),
                        "round {round}: removed {id} is still in g{g}"
                    );
                }
            }
            // The survivors leave too: nothing may be left behind.
            for id in ids.iter().skip(1).step_by(2) {
                m.remove(id);
            }
            assert_eq!(assert_groups_consistent(&m), 0, "round {round}");
            assert_eq!(m.connection_count(), 0);
        }
    }

    #[tokio::test]
    async fn empty_group_names_are_rejected() {
        let m = LocalLifetimeManager::new();
        assert!(matches!(
            m.send(Target::Group(String::new()), Arc::new(msg("x")))
                .await,
            Err(SendError::EmptyGroupName)
        ));
        assert!(m.add_to_group("a", "").await.is_err());
    }
}
