//! The service is laid out by feature (`src/<feature>/`), each owning its store: all of its SQL,
//! as methods on the shared `Db` handle in `src/<feature>/store.rs` or `src/<feature>/store/`.
//! A feature never reaches into another feature's store: it neither imports it
//! (`crate::<other>::store`) nor calls its methods on a `Db` (`db.<other's method>(…)`); it goes
//! through that feature's service instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Folders under `src/` that are shared by every feature rather than features themselves.
const SHARED: &[&str] = &["api", "db"];

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The feature folders: `src/<name>/` with a `mod.rs`, except the shared ones.
fn features() -> Vec<String> {
    let mut features: Vec<String> = fs::read_dir(SRC)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("mod.rs").is_file())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| !SHARED.contains(&name.as_str()))
        .collect();
    features.sort();
    features
}

/// Whether `path` (under `src/<feature>/`) is part of that feature's store.
fn is_store(feature: &str, path: &Path) -> bool {
    let store = Path::new(SRC).join(feature).join("store");
    path == store.with_extension("rs") || path.starts_with(&store)
}

/// The text of a file without its comments (`//` to the end of the line), so that prose naming
/// another feature's store is no offence, and without its unit tests (from `#[cfg(test)]` on),
/// which may set up rows of any table.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifier starting at `text`'s beginning.
fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The methods each feature's store declares (`pub async fn name` / `pub fn name`).
fn store_methods(features: &[String]) -> BTreeMap<String, String> {
    let mut methods = BTreeMap::new();
    for feature in features {
        for path in rust_files(&Path::new(SRC).join(feature)) {
            if !is_store(feature, &path) {
                continue;
            }
            let text = code(&path);
            for marker in ["pub async fn ", "pub fn "] {
                for (i, _) in text.match_indices(marker) {
                    let name = identifier(&text[i + marker.len()..]);
                    if !name.is_empty() {
                        methods.insert(name.to_owned(), feature.clone());
                    }
                }
            }
        }
    }
    methods
}

/// `db.name(` with any whitespace around the dot (rustfmt breaks long chains before it).
fn calls_on_db<'a>(text: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.match_indices("db").filter_map(move |(i, _)| {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let rest = text[i + 2..].trim_start();
        let rest = rest.strip_prefix('.')?.trim_start();
        let name = identifier(rest);
        rest[name.len()..].starts_with('(').then_some(name)
    })
}

#[test]
fn no_feature_reaches_into_another_features_store() {
    let features = features();
    assert!(
        features.len() > 5,
        "no feature folders found under {SRC}: {features:?}"
    );
    let methods = store_methods(&features);
    let mut offenders = Vec::new();
    for feature in &features {
        for path in rust_files(&Path::new(SRC).join(feature)) {
            let text = code(&path);
            let shown = path.strip_prefix(SRC).unwrap().display().to_string();
            for other in features.iter().filter(|other| *other != feature) {
                let import = format!("crate::{other}::store");
                let grouped = format!("crate::{other}::{{");
                let grouped_store = text.match_indices(&grouped).any(|(i, _)| {
                    let group = &text[i + grouped.len()..];
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    group
                        .split(',')
                        .any(|item| item.trim().split("::").next() == Some("store"))
                });
                if text.contains(&import) || grouped_store {
                    offenders.push(format!("src/{shown} imports {import}"));
                }
            }
            for name in calls_on_db(&text) {
                if let Some(owner) = methods.get(name)
                    && owner != feature
                {
                    offenders.push(format!(
                        "src/{shown} calls db.{name}(), of src/{owner}/store"
                    ));
                }
            }
        }
    }
    offenders.sort();
    offenders.dedup();
    assert!(
        offenders.is_empty(),
        "features reaching into another feature's store (go through its service):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_store_methods_are_found() {
    let methods = store_methods(&features());
    for (method, feature) in [
        ("user", "auth"),
        ("presence", "presence"),
        ("group_members", "groups"),
        ("insert_notifications", "notifications"),
    ] {
        assert_eq!(
            methods.get(method).map(String::as_str),
            Some(feature),
            "{method}"
        );
    }
    assert_eq!(
        calls_on_db("x.db\n    .user(&name); db.presence(1); mydb.user(2)").collect::<Vec<_>>(),
        ["user", "presence"]
    );
}
