//! The batch of `:execute`: commands (send, join or leave a group, close) applied, in order, to
//! each connection an OData filter selects. Each node applies a batch to its own connections
//! ([`Directory::execute`](super::directory::Directory::execute) asks the others), so the
//! batch travels as its text and is read again where it runs.

use std::sync::Arc;

use serde_json::{Map, Value};
use signalbox::lifetime::{ConnectionHandle, SerializedMessage};
use signalbox::{LocalLifetimeManager, Target};

use super::directory::{CloseScope, Directory};
use super::filter::Filter;
use super::hubs::AzureHub;
use super::payload;

/// Why a batch cannot be read (a 400 answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BatchError(pub String);

/// A readable `:execute` request: its filter and commands, and their text.
#[derive(Debug)]
pub struct Batch {
    filter: Option<Filter>,
    commands: Vec<Command>,
    filter_text: Option<String>,
    body: String,
}

impl Batch {
    /// Reads the `filter` query value and the JSON body.
    pub fn parse(filter: Option<&str>, body: &str) -> Result<Self, BatchError> {
        let parsed = match filter {
            Some(text) => Some(Filter::parse(text).map_err(|e| BatchError(e.to_string()))?),
            None => None,
        };
        Ok(Self {
            filter: parsed,
            commands: commands(body)?,
            filter_text: filter.map(str::to_owned),
            body: body.to_owned(),
        })
    }

    /// The filter as received.
    pub fn filter_text(&self) -> Option<&str> {
        self.filter_text.as_deref()
    }

    /// The body as received.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// Applies the commands to the selected connections of this node.
    pub async fn apply_here(&self, directory: &Directory, hub: &AzureHub) {
        let local = hub.local();
        let selected: Vec<ConnectionHandle> = local
            .recipients(&Target::All)
            .into_iter()
            .filter(|connection| {
                self.filter
                    .as_ref()
                    .is_none_or(|filter| filter.matches(&Subject { connection, local }))
            })
            .collect();
        for connection in &selected {
            let id = connection.id();
            for command in &self.commands {
                match command {
                    Command::SendMessage(message) => {
                        connection.send_message(message);
                    }
                    Command::JoinGroup(group) => {
                        directory.add_connection_to_group(hub, id, group).await;
                    }
                    Command::LeaveGroup(group) => {
                        directory.remove_connection_from_group(hub, id, group).await;
                    }
                    Command::CloseConnection(reason) => {
                        directory
                            .close(
                                hub,
                                CloseScope::Connection(id.to_owned()),
                                &[],
                                reason.as_deref(),
                            )
                            .await;
                    }
                }
            }
        }
    }
}

/// One command of `:execute`.
#[derive(Debug)]
enum Command {
    SendMessage(Arc<SerializedMessage>),
    JoinGroup(String),
    LeaveGroup(String),
    CloseConnection(Option<String>),
}

/// Reads the body of `:execute`: a JSON array of `{"type": "SendMessage" | "JoinGroup" |
/// "LeaveGroup" | "CloseConnection", …}` (property names and types case-insensitive).
fn commands(body: &str) -> Result<Vec<Command>, BatchError> {
    let bad = BatchError;
    let items: Vec<Map<String, Value>> = serde_json::from_str(body)
        .map_err(|e| bad(format!("the body must be a JSON array of commands: {e}")))?;
    items
        .into_iter()
        .map(|item| {
            let field = |name: &str| {
                item.iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value)
            };
            let kind = field("type")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("every command needs a type".to_owned()))?;
            let group = || -> Result<String, BatchError> {
                let group = field("group")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("a {kind} command needs a group")))?;
                if group.is_empty()
                    || group.trim().is_empty()
                    || group.chars().count() > super::rest::MAX_ID_LENGTH
                {
                    return Err(bad(format!("invalid group name {group:?}")));
                }
                Ok(group.to_owned())
            };
            match kind.to_ascii_lowercase().as_str() {
                "sendmessage" => {
                    let message = field("message")
                        .ok_or_else(|| bad("a SendMessage command needs a message".to_owned()))?;
                    let json = serde_json::to_vec(message).map_err(|e| bad(e.to_string()))?;
                    let invocation = payload::parse(Some("application/json"), &json)
                        .map_err(|e| bad(e.to_string()))?;
                    Ok(Command::SendMessage(payload::serialized(invocation)))
                }
                "joingroup" => Ok(Command::JoinGroup(group()?)),
                "leavegroup" => Ok(Command::LeaveGroup(group()?)),
                "closeconnection" => Ok(Command::CloseConnection(
                    field("reason")
                        .and_then(Value::as_str)
                        .filter(|r| !r.is_empty())
                        .map(str::to_owned),
                )),
                _ => Err(bad(format!("unknown command type {kind:?}"))),
            }
        })
        .collect()
}

/// A connection as the filter sees it.
struct Subject<'a> {
    connection: &'a ConnectionHandle,
    local: &'a LocalLifetimeManager,
}

impl super::filter::Subject for Subject<'_> {
    fn connection_id(&self) -> &str {
        self.connection.id()
    }

    fn user_id(&self) -> Option<&str> {
        self.connection.user_id()
    }

    fn in_group(&self, group: &str) -> bool {
        self.local.is_in_group(self.connection.id(), group)
    }
}
