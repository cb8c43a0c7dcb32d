//! The command line: `signalbox serve`, `signalbox user add`, `signalbox token issue`,
//! `signalbox config check`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

/// The signalbox notification service.
#[derive(Debug, Parser)]
#[command(name = "signalbox", version, about)]
pub struct Cli {
    /// Configuration file (TOML) [env: SIGNALBOX_CONFIG].
    #[arg(long, global = true, env = "SIGNALBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: the SQLite database and the generated signing secret
    /// [env: SIGNALBOX_DATA_DIR] [default: ./signalbox-data].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Refuse to start without an explicitly configured signing secret or key (production)
    /// [env: SIGNALBOX_REQUIRE_CONFIG].
    #[arg(long, global = true)]
    pub require_config: bool,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB [env: SIGNALBOX_DATABASE]
    /// [default: sqlite://DATA_DIR/signalbox.db].
    #[arg(long, global = true, value_name = "URL")]
    pub database: Option<String>,
    /// Address to listen on (port 0 picks a free port) [env: SIGNALBOX_LISTEN].
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// HS256 secret for access tokens, at least 32 bytes [env: SIGNALBOX_JWT_SECRET].
    #[arg(long, global = true, value_name = "SECRET", hide = true)]
    pub jwt_secret: Option<String>,
    /// Backplane joining the nodes of a cluster: redis://HOST:PORT, nats://HOST:PORT or none
    /// [env: SIGNALBOX_BACKPLANE].
    #[arg(long, global = true, value_name = "URL")]
    pub backplane: Option<String>,
    /// This node's id, unique in the cluster [default: host name and a random suffix]
    /// [env: SIGNALBOX_NODE_ID].
    #[arg(long, global = true, value_name = "ID")]
    pub node_id: Option<String>,
    /// Secret shared by every node for connection tokens, at least 32 bytes
    /// [env: SIGNALBOX_CONNECTION_TOKEN_SECRET].
    #[arg(long, global = true, value_name = "SECRET", hide = true)]
    pub connection_token_secret: Option<String>,
    /// Log format: human or json [env: SIGNALBOX_LOG_FORMAT].
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The flags that override file and environment settings.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            require_config: self.require_config,
            database: self.database.clone(),
            listen: self.listen.clone(),
            jwt_secret: self.jwt_secret.clone(),
            backplane: self.backplane.clone(),
            node_id: self.node_id.clone(),
            connection_token_secret: self.connection_token_secret.clone(),
            log_format: self.log_format.clone(),
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the service.
    Serve,
    /// Manages accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Issues tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Checks the configuration and the database, and prints the effective settings.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `signalbox user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Creates an account (or, with --update, replaces its password, roles and claims). The
    /// password is read from standard input (first line) or prompted for on a terminal.
    Add(UserAdd),
    /// Deletes an account with its tokens and notifications; its open connections close on
    /// every node within seconds.
    Delete {
        /// User name.
        name: String,
    },
    /// Disables an account: it keeps its data, cannot sign in, its sessions end and its open
    /// connections close on every node within seconds.
    Disable {
        /// User name.
        name: String,
    },
    /// Enables a disabled account (it signs in again; ended sessions stay ended).
    Enable {
        /// User name.
        name: String,
    },
}

/// `signalbox user add`
#[derive(Debug, Args)]
pub struct UserAdd {
    /// User name.
    pub name: String,
    /// A role (repeatable).
    #[arg(long = "role", value_name = "R")]
    pub roles: Vec<String>,
    /// A claim TYPE=VALUE (repeatable), e.g. permission=notify.
    #[arg(long = "claim", value_name = "K=V")]
    pub claims: Vec<String>,
    /// Update the account if it exists.
    #[arg(long)]
    pub update: bool,
}

/// `signalbox token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Prints an access token signed with the configured key (for scripts and services).
    Issue(TokenIssue),
}

/// `signalbox token issue`
#[derive(Debug, Args)]
pub struct TokenIssue {
    /// The subject (user name).
    #[arg(long)]
    pub sub: String,
    /// A claim TYPE=VALUE (repeatable).
    #[arg(long = "claim", value_name = "K=V")]
    pub claims: Vec<String>,
    /// A role (repeatable).
    #[arg(long = "role", value_name = "R")]
    pub roles: Vec<String>,
    /// Lifetime, e.g. 10m, 12h [default: the access token lifetime].
    #[arg(long)]
    pub ttl: Option<String>,
}

/// `signalbox config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validates the configuration, opens the database, prints the effective settings.
    Check,
}
