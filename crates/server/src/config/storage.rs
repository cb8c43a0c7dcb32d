//! Where the data lives: the data directory, the database and how long notifications are kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use super::settings as s;
use super::values::Values;

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "./signalbox-data";

/// The SQLite database in `data_dir`.
pub fn default_database(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("signalbox.db").display())
}

/// The durable inbox.
#[derive(Debug, Clone)]
pub struct InboxConfig {
    /// How long notifications are kept. Default 30 days.
    pub retention: Duration,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            retention: s::INBOX_RETENTION.fallback(),
        }
    }
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_data_dir(dir: &PathBuf) -> Result<(), String> {
    if dir.as_os_str().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(())
}

/// The default of `database`: the SQLite file in the data directory.
pub(super) fn database_in_data_dir(values: &Values) -> Option<String> {
    let dir = values
        .text(&s::DATA_DIR)
        .unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned());
    Some(default_database(Path::new(dir.trim())))
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_database(url: &String) -> Result<(), String> {
    if url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        return Ok(());
    }
    Err(format!(
        "{:?} is not supported: use sqlite://PATH or postgres://USER@HOST/DB",
        crate::db::redact_url(url)
    ))
}

pub(super) fn resolve(values: &Values) -> Result<(PathBuf, String, InboxConfig), ConfigError> {
    let data_dir = values.value(&s::DATA_DIR)?;
    let database = values.value(&s::DATABASE)?;
    let inbox = InboxConfig {
        retention: values.value(&s::INBOX_RETENTION)?,
    };
    Ok((data_dir, database, inbox))
}
