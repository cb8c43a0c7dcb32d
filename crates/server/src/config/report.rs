//! `signalbox config`: the effective settings and where each came from (secrets redacted);
//! `signalbox config check`: the same, after opening the database; `signalbox config docs`:
//! the settings table of `docs/configuration.md`.

use std::io::Write;
use std::path::Path;

use super::setting::Sensitivity;
use super::settings::SETTINGS;
use super::values::{Overrides, Values};
use super::{Config, ConfigError};
use crate::cli::ConfigCommand;

/// What a secret is shown as.
pub const REDACTED: &str = "[redacted]";

/// Comma-separated URLs with every password replaced by `***` (see [`crate::db::redact_url`]).
pub fn redact_urls(text: &str) -> String {
    text.split(',')
        .map(|url| crate::db::redact_url(url.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

/// One line per setting: `key = value  (origin)`, secrets redacted, unset values shown as
/// `(unset)`.
pub fn effective_settings(values: &Values) -> Result<String, ConfigError> {
    let width = SETTINGS
        .iter()
        .map(|s| s.info().key.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for setting in SETTINGS {
        let info = setting.info();
        let shown = match (setting.effective(values)?, info.sensitivity) {
            (None, _) => "(unset)".to_owned(),
            (Some(_), Sensitivity::Secret) => REDACTED.to_owned(),
            (Some(text), Sensitivity::Url) => redact_urls(&text),
            (Some(text), Sensitivity::Plain) => text,
        };
        out.push_str(&format!(
            "{:<width$} = {shown}  ({})\n",
            info.key,
            values.origin(info.key)
        ));
    }
    Ok(out)
}

/// Runs `signalbox config [check|docs]`, writing to `out`.
pub async fn run(
    command: Option<&ConfigCommand>,
    file: Option<&Path>,
    overrides: &Overrides,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if let Some(ConfigCommand::Docs) = command {
        out.write_all(super::docs::settings_table().as_bytes())?;
        return Ok(());
    }
    let values = Values::load(file, &|name: &str| std::env::var(name).ok(), overrides)?;
    let config = Config::resolve(&values)?;
    out.write_all(effective_settings(&values)?.as_bytes())?;
    if let Some(ConfigCommand::Check) = command {
        let db = crate::db::Db::open(&config.database).await?;
        writeln!(
            out,
            "Storage: {} ({}) reachable",
            db.backend(),
            db.display_url()
        )?;
        db.close().await;
        if config.auth.jwt_secret.is_none() && config.auth.jwt_private_key.is_none() {
            let file = crate::data_dir::secret_path(&config.data_dir);
            if config.require_config {
                return Err(anyhow::anyhow!(
                    "no JWT secret or signing key configured (auth.jwt_secret / SIGNALBOX_JWT_SECRET) and require_config is on"
                ));
            }
            writeln!(
                out,
                "Signing: no secret or key configured; the one generated in {} is used",
                file.display()
            )?;
        }
        writeln!(out, "Configuration OK")?;
    }
    Ok(())
}
