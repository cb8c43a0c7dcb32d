//! `docs/configuration.md` documents every setting: the table between its `settings` markers is
//! generated from the registry (`crates/server/src/config/settings.rs`). Rewrite it with
//! `SIGNALBOX_UPDATE_DOCS=1 cargo test -p signalbox-server --test config_docs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Mutex;

use signalbox_server::config::docs::{END, START, with_current_table};
use signalbox_server::config::settings::SETTINGS;
use signalbox_server::config::{Config, Overrides};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");

#[test]
fn the_settings_table_is_generated_from_the_registry() {
    let text = std::fs::read_to_string(DOC).unwrap();
    assert!(
        text.contains(START) && text.contains(END),
        "{DOC} lacks the markers of the settings table:\n{START}\n…\n{END}"
    );
    let current = with_current_table(&text).unwrap();
    if current == text {
        return;
    }
    if std::env::var_os("SIGNALBOX_UPDATE_DOCS").is_some() {
        std::fs::write(DOC, &current).unwrap();
        return;
    }
    let old: Vec<&str> = text.lines().collect();
    let new: Vec<&str> = current.lines().collect();
    let mut diff = String::new();
    for line in old.iter().filter(|l| !new.contains(l)) {
        diff.push_str(&format!("- {line}\n"));
    }
    for line in new.iter().filter(|l| !old.contains(l)) {
        diff.push_str(&format!("+ {line}\n"));
    }
    panic!(
        "docs/configuration.md's settings table differs from the registry (- in the doc, + generated):\n{diff}\n\
         Rewrite it with: SIGNALBOX_UPDATE_DOCS=1 cargo test -p signalbox-server --test config_docs"
    );
}

#[test]
fn the_loader_reads_every_declared_variable() {
    let declared: BTreeSet<String> = SETTINGS
        .iter()
        .flat_map(|s| std::iter::once(s.info().env).chain(s.info().env_alias))
        .map(str::to_owned)
        .collect();
    let asked = Mutex::new(BTreeSet::new());
    Config::load_from(
        None,
        |name| {
            asked.lock().unwrap().insert(name.to_owned());
            None
        },
        &Overrides::default(),
    )
    .unwrap();
    let asked = asked.into_inner().unwrap();
    assert_eq!(declared, asked);
}

#[test]
fn the_prose_mentions_only_declared_variables() {
    let text = std::fs::read_to_string(DOC).unwrap();
    let known: BTreeSet<&str> = SETTINGS
        .iter()
        .flat_map(|s| std::iter::once(s.info().env).chain(s.info().env_alias))
        .chain(signalbox_server::config::OTHER_VARIABLES.iter().copied())
        .collect();
    let unknown: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            w.len() > "SIGNALBOX_".len() && w.starts_with("SIGNALBOX_") && !known.contains(w)
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "{DOC} names unknown variables: {unknown:?}"
    );
}

#[test]
fn example_configurations_load() {
    for name in ["signalbox.toml", "cluster.toml"] {
        let path =
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/examples/"))
                .join(name);
        // Secrets come from the environment, as the examples say.
        let env = |name: &str| {
            (name == "SIGNALBOX_CONNECTION_TOKEN_SECRET")
                .then(|| "example-connection-secret-0123456789-abcdefgh".to_owned())
        };
        let config = Config::load_from(Some(&path), env, &Overrides::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(config.admin.role, "admin", "{name}");
    }
}
