//! The connection layer (`src/connection/`) knows nothing of the layers above it: no path in it
//! names the hub layer (`hub`, `context`, `router`, the hub re-exports of the crate root) or the
//! lifetime managers (`lifetime`). The hub layer plugs in through `ConnectionHandler`
//! (`src/hub/endpoint.rs`). Nothing else enforces this, so this test reads the sources.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// Module paths the connection layer must not name (a path is refused when it is one of these or
/// lies below one).
const FORBIDDEN: &[&str] = &[
    "crate::hub",
    "crate::lifetime",
    "crate::context",
    "crate::router",
    "crate::options::HubOptions",
    // Hub-layer items re-exported at the crate root.
    "crate::Hub",
    "crate::HubBuilder",
    "crate::HubContext",
    "crate::HubError",
    "crate::HubOptions",
    "crate::HubRouterExt",
    "crate::Caller",
    "crate::InvocationReply",
    "crate::UnknownInvocation",
    "crate::HubLifetimeManager",
    "crate::LocalLifetimeManager",
    "crate::ScaledLifetimeManager",
    "crate::Backplane",
    "crate::Target",
];

#[test]
fn the_connection_layer_does_not_know_the_hub_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&root.join("connection"));
    assert!(
        files.len() >= 10,
        "expected the connection layer's files under {}, found {files:?}",
        root.display()
    );
    let mut violations = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        let module = module_path(&root, file);
        for path in forbidden_paths(&module, &source) {
            violations.push(format!(
                "{}: {path}",
                file.strip_prefix(&root).unwrap().display()
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "src/connection/ must not depend on the hub or lifetime layers; move the code to \
         src/hub/ (or pass what is needed through ConnectionHandler / EndpointSettings):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_finds_every_spelling() {
    let module = ["crate", "connection", "refresh"]
        .map(String::from)
        .to_vec();
    let found = |source: &str| forbidden_paths(&module, source);
    assert_eq!(found("use crate::hub::Hub;"), ["crate::hub::Hub"]);
    assert_eq!(
        found("use crate::{auth::Principal, hub::{self, HubInner as Inner}};"),
        ["crate::hub", "crate::hub::HubInner"]
    );
    assert_eq!(found("use super::super::hub;"), ["crate::hub"]);
    assert_eq!(
        found("fn f() -> crate::lifetime::RefreshError { todo!() }"),
        ["crate::lifetime::RefreshError"]
    );
    assert_eq!(
        found("let c: crate :: HubContext = x;"),
        ["crate::HubContext"]
    );
    let transport = ["crate", "connection", "transport", "sse"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        forbidden_paths(&transport, "use super::super::super::lifetime::Target;"),
        ["crate::lifetime::Target"]
    );
    // Allowed: the connection layer itself, auth, options, protocol; comments and doc links.
    assert!(found("use super::manager::ConnectionManager;").is_empty());
    assert!(found("use crate::auth::{Principal, Policy};").is_empty());
    assert!(found("use crate::options::ConnectionOptions;").is_empty());
    assert!(found("use crate::HubRouterExtension;").is_empty());
    assert!(found("/// [`Caller`](crate::Caller) sees it.\nfn f() {}").is_empty());
    assert!(found("use signalbox_protocol::hub::Hub;").is_empty());
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `src/connection/transport/sse.rs` → `crate::connection::transport::sse`; a `mod.rs` is its
/// folder's module.
fn module_path(root: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(root).unwrap().with_extension("");
    let mut module = vec!["crate".to_owned()];
    module.extend(
        relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if module.last().is_some_and(|last| last == "mod") {
        module.pop();
    }
    module
}

/// Every forbidden path named in `source` (code only, comments left out), resolved from `module`.
fn forbidden_paths(module: &[String], source: &str) -> Vec<String> {
    let code = without_comments(source);
    let mut found = Vec::new();
    for path in paths(&code) {
        if let Some(resolved) = resolve(module, &path)
            && FORBIDDEN.iter().any(|forbidden| {
                resolved == *forbidden || resolved.starts_with(&format!("{forbidden}::"))
            })
        {
            found.push(resolved);
        }
    }
    found.sort();
    found.dedup();
    found
}

/// `source` without comments and with empty string literals (so that neither a doc link nor a
/// message counts as a path).
fn without_comments(source: &str) -> String {
    let mut code = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |end| &after[end..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
            code.push(' ');
        } else if let Some(after) = rest.strip_prefix("'\"'") {
            code.push_str("' '");
            rest = after;
        } else if let Some((hashes, after)) = raw_string_start(rest) {
            let close = format!("\"{hashes}");
            rest = after
                .find(&close)
                .map_or("", |end| &after[end + close.len()..]);
            code.push_str("\"\"");
        } else if let Some(after) = rest.strip_prefix('"') {
            rest = string_end(after);
            code.push_str("\"\"");
        } else {
            code.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    code
}

/// `r"`, `r#"`, … at the start of `code` (not inside an identifier): the hashes and what follows
/// the opening quote.
fn raw_string_start(code: &str) -> Option<(&str, &str)> {
    let after_r = code.strip_prefix('r')?;
    let hashes = after_r.len() - after_r.trim_start_matches('#').len();
    let after = after_r[hashes..].strip_prefix('"')?;
    Some((&after_r[..hashes], after))
}

/// What follows the closing quote of a string whose opening quote preceded `rest`.
fn string_end(rest: &str) -> &str {
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return &rest[i + 1..],
            _ => {}
        }
    }
    ""
}

/// The paths of `code`: `use` trees expanded (`a::{b, c::d}` → `a::b`, `a::c::d`), and every
/// other `a::b::c` written in expressions and types.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    let mut outside_use = String::new();
    while let Some(start) = find_keyword(rest, "use") {
        outside_use.push_str(&rest[..start]);
        let tree_start = start + "use".len();
        let end = rest[tree_start..]
            .find(';')
            .map_or(rest.len(), |e| tree_start + e);
        expand_use(&[], &rest[tree_start..end], &mut paths);
        rest = rest.get(end + 1..).unwrap_or("");
    }
    outside_use.push_str(rest);
    paths.extend(inline_paths(&outside_use));
    paths
}

/// Where `keyword` starts as a whole word.
fn find_keyword(code: &str, keyword: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(at) = code[from..].find(keyword) {
        let at = from + at;
        let before = code[..at].chars().next_back();
        let after = code[at + keyword.len()..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return Some(at);
        }
        from = at + keyword.len();
    }
    None
}

fn expand_use(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    for item in split_top_level(tree) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let mut path = prefix.to_vec();
        match item.find('{') {
            Some(open) => {
                path.extend(segments(item[..open].trim_end_matches("::")));
                let inner = &item[open + 1..item.rfind('}').unwrap_or(item.len())];
                expand_use(&path, inner, out);
            }
            None => {
                // `path as alias`: the alias does not matter.
                let words: Vec<&str> = item.split_whitespace().collect();
                let leaf = match words.iter().position(|w| *w == "as") {
                    Some(at) => words[..at].concat(),
                    None => words.concat(),
                };
                let segs = segments(&leaf);
                if segs != ["self"] {
                    path.extend(segs);
                }
                out.push(path);
            }
        }
    }
}

fn split_top_level(tree: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in tree.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&tree[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tree[start..]);
    parts
}

fn segments(path: &str) -> Vec<String> {
    path.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `a::b::c` sequences outside `use` (spaces around `::` allowed).
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let chars: Vec<char> = code.chars().collect();
    let mut paths = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !is_ident(chars[i]) || (i > 0 && is_ident(chars[i - 1])) {
            i += 1;
            continue;
        }
        let mut path = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < chars.len() && is_ident(chars[j]) {
                j += 1;
            }
            path.push(chars[start..j].iter().collect::<String>());
            let mut k = j;
            while k < chars.len() && chars[k].is_whitespace() {
                k += 1;
            }
            if chars.get(k) == Some(&':') && chars.get(k + 1) == Some(&':') {
                k += 2;
                while k < chars.len() && chars[k].is_whitespace() {
                    k += 1;
                }
                if k < chars.len() && is_ident(chars[k]) {
                    j = k;
                    continue;
                }
            }
            break;
        }
        if path.len() > 1 {
            paths.push(path);
        }
        i = j.max(i + 1);
    }
    paths
}

/// The absolute path of `path` written in `module`; `None` for paths not starting at the crate
/// (other crates, local items).
fn resolve(module: &[String], path: &[String]) -> Option<String> {
    let mut resolved: Vec<String> = match path.first()?.as_str() {
        "crate" => vec!["crate".to_owned()],
        "self" | "super" => module.to_vec(),
        _ => return None,
    };
    let mut rest = &path[1..];
    match path[0].as_str() {
        "super" => {
            resolved.pop();
        }
        "self" | "crate" => {}
        _ => return None,
    }
    while let Some(first) = rest.first()
        && first == "super"
    {
        resolved.pop();
        rest = &rest[1..];
    }
    if resolved.is_empty() {
        return None;
    }
    resolved.extend(rest.iter().cloned());
    Some(resolved.join("::"))
}
