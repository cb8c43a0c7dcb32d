//! Sending to clients: `Clients.All`, `.Group(...)`, `.User(...)`, … and group membership.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use signalbox_protocol::{Headers, HubMessage, Invocation};

use super::args::IntoArguments;
use crate::lifetime::{
    ClientResultError, HubLifetimeManager, SendError, SerializedMessage, Target,
};

/// Selects recipients; obtained from [`HubContext::clients`](crate::HubContext::clients).
#[derive(Clone)]
pub struct HubClients {
    lifetime: Arc<dyn HubLifetimeManager>,
}

impl std::fmt::Debug for HubClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClients").finish_non_exhaustive()
    }
}

impl HubClients {
    pub(crate) fn new(lifetime: Arc<dyn HubLifetimeManager>) -> Self {
        Self { lifetime }
    }

    fn proxy(&self, target: Target) -> ClientProxy {
        ClientProxy {
            lifetime: self.lifetime.clone(),
            target,
        }
    }

    /// Every connection.
    pub fn all(&self) -> ClientProxy {
        self.proxy(Target::All)
    }

    /// Every connection except these ids.
    pub fn all_except<I: IntoIterator<Item = S>, S: Into<String>>(&self, ids: I) -> ClientProxy {
        self.proxy(Target::AllExcept(ids.into_iter().map(Into::into).collect()))
    }

    /// One connection, by its public id.
    pub fn client(&self, connection_id: impl Into<String>) -> ClientProxy {
        self.proxy(Target::Connection(connection_id.into()))
    }

    /// Several connections.
    pub fn clients<I: IntoIterator<Item = S>, S: Into<String>>(&self, ids: I) -> ClientProxy {
        self.proxy(Target::Connections(
            ids.into_iter().map(Into::into).collect(),
        ))
    }

    /// The members of a group.
    pub fn group(&self, group: impl Into<String>) -> ClientProxy {
        self.proxy(Target::Group(group.into()))
    }

    /// The members of several groups.
    pub fn groups<I: IntoIterator<Item = S>, S: Into<String>>(&self, groups: I) -> ClientProxy {
        self.proxy(Target::Groups(groups.into_iter().map(Into::into).collect()))
    }

    /// The members of a group except these ids.
    pub fn group_except<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        group: impl Into<String>,
        ids: I,
    ) -> ClientProxy {
        self.proxy(Target::GroupExcept(
            group.into(),
            ids.into_iter().map(Into::into).collect(),
        ))
    }

    /// Every connection of a user (ids compare exactly, case-sensitively).
    pub fn user(&self, user_id: impl Into<String>) -> ClientProxy {
        self.proxy(Target::User(user_id.into()))
    }

    /// Every connection of several users.
    pub fn users<I: IntoIterator<Item = S>, S: Into<String>>(&self, users: I) -> ClientProxy {
        self.proxy(Target::Users(users.into_iter().map(Into::into).collect()))
    }
}

/// The recipients of the connection that made the current call, plus everything in
/// [`HubClients`].
#[derive(Debug, Clone)]
pub struct CallerClients {
    clients: HubClients,
    caller_id: Arc<str>,
}

impl CallerClients {
    pub(crate) fn new(clients: HubClients, caller_id: Arc<str>) -> Self {
        Self { clients, caller_id }
    }

    /// The calling connection.
    pub fn caller(&self) -> ClientProxy {
        self.clients.client(&*self.caller_id)
    }

    /// Everyone but the caller.
    pub fn others(&self) -> ClientProxy {
        self.clients.all_except([&*self.caller_id])
    }

    /// The members of a group except the caller.
    pub fn others_in_group(&self, group: impl Into<String>) -> ClientProxy {
        self.clients.group_except(group, [&*self.caller_id])
    }
}

impl std::ops::Deref for CallerClients {
    type Target = HubClients;
    fn deref(&self) -> &HubClients {
        &self.clients
    }
}

/// A set of recipients to call client methods on.
#[derive(Clone)]
pub struct ClientProxy {
    lifetime: Arc<dyn HubLifetimeManager>,
    target: Target,
}

impl std::fmt::Debug for ClientProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientProxy")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ClientProxy {
    /// The selected recipients.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Calls client method `method` with `args` on every recipient, without waiting for them
    /// (SignalR's `SendAsync`). The message is serialised once per protocol in use.
    pub async fn send(&self, method: &str, args: impl IntoArguments) -> Result<(), SendError> {
        let message = SerializedMessage::new(HubMessage::Invocation(Invocation::new(
            method,
            args.into_arguments(),
        )));
        self.lifetime
            .send(self.target.clone(), Arc::new(message))
            .await
    }

    /// Like [`ClientProxy::send`], with SignalR message `headers` on the invocation (for
    /// instance the W3C trace context from [`crate::trace::current_headers`], so that clients can
    /// continue the trace).
    pub async fn send_with_headers(
        &self,
        method: &str,
        args: impl IntoArguments,
        headers: Headers,
    ) -> Result<(), SendError> {
        let mut invocation = Invocation::new(method, args.into_arguments());
        invocation.headers = headers;
        let message = SerializedMessage::new(HubMessage::Invocation(invocation));
        self.lifetime
            .send(self.target.clone(), Arc::new(message))
            .await
    }

    /// Calls client method `method` on a single connection and waits for the value its handler
    /// returns (SignalR's client results, `InvokeAsync<T>`). Only for [`HubClients::client`] and
    /// [`CallerClients::caller`]. Wrap it in `tokio::time::timeout` to bound the wait; the
    /// connection closing ends it with [`ClientResultError::Disconnected`].
    pub async fn invoke<T: DeserializeOwned>(
        &self,
        method: &str,
        args: impl IntoArguments,
    ) -> Result<T, ClientResultError> {
        let Target::Connection(connection_id) = &self.target else {
            return Err(ClientResultError::NotSingleConnection);
        };
        let payload = self
            .lifetime
            .invoke_client(
                connection_id.clone(),
                method.to_owned(),
                args.into_arguments(),
            )
            .await?;
        payload
            .deserialize()
            .map_err(|e| ClientResultError::InvalidResult(e.to_string()))
    }
}

/// Group membership (SignalR's `Groups`).
#[derive(Clone)]
pub struct Groups {
    lifetime: Arc<dyn HubLifetimeManager>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").finish_non_exhaustive()
    }
}

impl Groups {
    pub(crate) fn new(lifetime: Arc<dyn HubLifetimeManager>) -> Self {
        Self { lifetime }
    }

    /// Adds a connection to a group (idempotent). Group names are case-sensitive.
    pub async fn add(&self, connection_id: &str, group: &str) -> Result<(), SendError> {
        self.lifetime.add_to_group(connection_id, group).await
    }

    /// Removes a connection from a group (idempotent).
    pub async fn remove(&self, connection_id: &str, group: &str) -> Result<(), SendError> {
        self.lifetime.remove_from_group(connection_id, group).await
    }
}
