//! The settings table of `docs/configuration.md`, generated from the registry.

use super::settings::SETTINGS;

/// The line before the generated table.
pub const START: &str = "<!-- settings:start: generated from crates/server/src/config/settings.rs; rewrite with `SIGNALBOX_UPDATE_DOCS=1 cargo test -p signalbox-server --test config_docs` -->";
/// The line after it.
pub const END: &str = "<!-- settings:end -->";

/// The Markdown table of every setting: file key, variable (with alias, flag and notes),
/// default, meaning.
pub fn settings_table() -> String {
    let mut out = String::from(
        "| File key | Environment variable | Default | Meaning |\n|---|---|---|---|\n",
    );
    for setting in SETTINGS {
        let info = setting.info();
        let mut key = format!("`{}`", info.key);
        if let Some(alias) = info.key_alias {
            key.push_str(&format!(" (alias `{alias}`)"));
        }
        let mut notes = Vec::new();
        if let Some(alias) = info.env_alias {
            notes.push(format!("alias `{alias}`"));
        }
        if let Some(flag) = info.flag_name() {
            notes.push(format!("flag `{flag}`"));
        }
        if let Some(note) = info.env_note {
            notes.push(note.to_owned());
        }
        let mut env = format!("`{}`", info.env);
        if !notes.is_empty() {
            env.push_str(&format!(" ({})", notes.join("; ")));
        }
        out.push_str(&format!(
            "| {key} | {env} | {} | {} |\n",
            setting.default_doc(),
            info.doc
        ));
    }
    out
}

/// `doc` with the text between [`START`] and [`END`] replaced by the current table; `None`
/// when the markers are missing.
pub fn with_current_table(doc: &str) -> Option<String> {
    let start = doc.find(START)? + START.len();
    let end = start + doc[start..].find(END)?;
    Some(format!(
        "{}\n{}{}",
        &doc[..start],
        settings_table(),
        &doc[end..]
    ))
}
