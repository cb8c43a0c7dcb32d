//! `docs/configuration.md` documents every option: its table lists exactly the keys the
//! configuration file accepts and exactly the environment variables the loader reads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use signalbox_server::config::{Config, ENV_VARS, Overrides, file_keys};

/// Variables documented outside the table's file-key column (read by clap or `tracing`).
const NOT_FILE_SETTINGS: &[&str] = &["SIGNALBOX_CONFIG", "RUST_LOG"];

/// The `quoted` names of a table cell.
fn quoted(cell: &str) -> impl Iterator<Item = String> + '_ {
    cell.split('`').skip(1).step_by(2).map(str::to_owned)
}

/// `(file key, environment variables)` of each row of the settings table.
fn documented() -> BTreeMap<String, Vec<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let text = std::fs::read_to_string(path).unwrap();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Settings"))
        .expect("a \"## Settings\" section");
    let mut rows = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `key` | `SIGNALBOX_X` (flag …) | default | meaning |
        if cells.len() < 6 || !cells[1].starts_with('`') {
            continue;
        }
        // `key` or `key` (alias `other`): every quoted name in the cell is a key of the row.
        let vars: Vec<String> = quoted(cells[2])
            .filter(|v| v.starts_with("SIGNALBOX_"))
            .collect();
        for key in quoted(cells[1]) {
            let previous = rows.insert(key.clone(), vars.clone());
            assert!(previous.is_none(), "{key} is documented twice");
        }
    }
    assert!(
        rows.len() > 10,
        "the settings table was not found in {path}"
    );
    rows
}

#[test]
fn every_file_key_is_documented_and_nothing_else() {
    let documented: BTreeSet<String> = documented().into_keys().collect();
    let actual: BTreeSet<String> = file_keys().into_iter().collect();
    let missing: Vec<_> = actual.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&actual).collect();
    assert!(
        missing.is_empty(),
        "options missing from docs/configuration.md: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents options that do not exist: {unknown:?}"
    );
}

#[test]
fn every_environment_variable_is_documented_and_read() {
    let documented: BTreeSet<String> = documented().into_values().flatten().collect();
    let declared: BTreeSet<String> = ENV_VARS.iter().map(|(v, _)| (*v).to_owned()).collect();
    let undocumented: Vec<_> = declared.difference(&documented).collect();
    let undeclared: Vec<_> = documented
        .difference(&declared)
        .filter(|v| !NOT_FILE_SETTINGS.contains(&v.as_str()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "variables missing from docs/configuration.md: {undocumented:?}"
    );
    assert!(
        undeclared.is_empty(),
        "documented variables not in config::ENV_VARS: {undeclared:?}"
    );
    // The loader really reads each declared variable.
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
    let unread: Vec<_> = declared.difference(&asked).collect();
    assert!(
        unread.is_empty(),
        "variables the loader never reads: {unread:?}"
    );
}

#[test]
fn each_variable_maps_to_its_documented_key() {
    let rows = documented();
    for (var, key) in ENV_VARS {
        let key = key.split(' ').next().unwrap();
        let row = rows
            .get(key)
            .unwrap_or_else(|| panic!("{var} overrides {key}, which is not documented"));
        assert!(
            row.iter().any(|v| v == var),
            "the row of {key} does not name {var}: {row:?}"
        );
    }
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
