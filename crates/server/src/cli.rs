//! The command line: `signalbox serve`, `signalbox user add`, `signalbox token issue`,
//! `signalbox config [check|docs]`. The flags of settings come from the settings registry.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};

use crate::config::Overrides;
use crate::config::setting::{Declared, Sensitivity};
use crate::config::settings::SETTINGS;

/// The signalbox notification service.
#[derive(Debug, Parser)]
#[command(name = "signalbox", version, about)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "SIGNALBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// The settings that have a flag (`--listen`, `--database`, …), from the registry.
    #[command(flatten)]
    pub settings: SettingFlags,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The flags that override file and environment settings.
    pub fn overrides(&self) -> Overrides {
        self.settings.overrides.clone()
    }
}

/// The flags of the settings that declare one (see [`crate::config::settings`]): global, so
/// they may follow the subcommand; a setting's flag overrides its variable and file key.
#[derive(Debug, Clone, Default)]
pub struct SettingFlags {
    overrides: Overrides,
}

/// The flagged settings: `(setting, long name, value name)`.
fn flagged() -> impl Iterator<Item = (&'static dyn Declared, &'static str, Option<&'static str>)> {
    SETTINGS.iter().copied().filter_map(|setting| {
        let flag = setting.info().flag?;
        let (long, value) = match flag.split_once(' ') {
            Some((long, value)) => (long, Some(value)),
            None => (flag, None),
        };
        Some((setting, long.trim_start_matches('-'), value))
    })
}

/// The help line of a flag: the first sentence of the doc, the variable and the default.
fn flag_help(setting: &dyn Declared) -> String {
    let info = setting.info();
    let doc = without_links(&info.doc.replace('`', ""));
    let first = doc.split(". ").next().unwrap_or(&doc).trim_end_matches('.');
    format!(
        "{first} [env: {}] [default: {}]",
        info.env,
        setting.default_doc().replace('`', "")
    )
}

/// Markdown links `[text](target)` reduced to their text.
fn without_links(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|i| open + i) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|i| close + i) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

impl FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut overrides = Overrides::default();
        for (setting, _, value) in flagged() {
            let key = setting.info().key;
            if value.is_none() {
                if matches.get_flag(key) {
                    overrides = overrides.with(key, "true");
                }
            } else if let Some(text) = matches.get_one::<String>(key) {
                overrides = overrides.with(key, text.clone());
            }
        }
        Ok(Self { overrides })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for SettingFlags {
    fn augment_args(mut command: clap::Command) -> clap::Command {
        for (setting, long, value) in flagged() {
            let mut arg = Arg::new(setting.info().key)
                .long(long)
                .global(true)
                .help(flag_help(setting))
                .hide(setting.info().sensitivity == Sensitivity::Secret);
            arg = match value {
                Some(value) => arg.value_name(value).action(ArgAction::Set),
                None => arg.action(ArgAction::SetTrue),
            };
            command = command.arg(arg);
        }
        command
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
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
    /// Prints the effective settings and where each came from (secrets redacted); `check`
    /// also opens the database.
    Config(ConfigArgs),
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

/// `signalbox config [check|docs]`
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Without one: print the effective settings.
    #[command(subcommand)]
    pub command: Option<ConfigCommand>,
}

/// `signalbox config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validates the configuration, opens the database, prints the effective settings.
    Check,
    /// Prints the settings table of docs/configuration.md (Markdown), generated from the
    /// declarations.
    Docs,
}
