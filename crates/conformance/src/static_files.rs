//! The official app's static files (`UseFileServer` over `wwwroot`, spec §10.1): the web-worker
//! test loads the client's bundle from `/lib/signalr-webworker/signalr.js`.
//!
//! The binary embeds no client code. `--static-dir DIR` (or `SIGNALBOX_CONFORMANCE_STATIC_DIR`)
//! names where the bundle is: a `wwwroot`-like directory with `lib/signalr-webworker/`, the
//! `@microsoft/signalr` package's `dist/` directory (with `webworker/`), or the package directory
//! itself (with `dist/webworker/`). Its files are read once at startup. Without it, the path
//! answers `404` saying how to configure it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};

/// The URL directory the bundle is served under.
pub(crate) const BUNDLE_ROUTE: &str = "/lib/signalr-webworker";

/// Where a bundle directory may sit below `--static-dir`, in the order tried.
const BUNDLE_DIRS: [&str; 3] = ["lib/signalr-webworker", "webworker", "dist/webworker"];

/// The file the web-worker test loads.
const BUNDLE_FILE: &str = "signalr.js";

/// The bundle's files by name (`signalr.js`, `signalr.min.js`, source maps), or nothing when no
/// static directory was configured.
#[derive(Debug, Clone, Default)]
pub(crate) struct StaticFiles {
    files: Option<Arc<HashMap<String, Bytes>>>,
}

impl StaticFiles {
    /// Loads the bundle directory found under `dir` (see the module docs).
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Self> {
        let bundle_dir = BUNDLE_DIRS
            .iter()
            .map(|sub| dir.join(sub))
            .find(|candidate| candidate.join(BUNDLE_FILE).is_file())
            .with_context(|| {
                format!(
                    "no {BUNDLE_FILE} under {} (looked in {})",
                    dir.display(),
                    BUNDLE_DIRS.join(", ")
                )
            })?;
        let mut files = HashMap::new();
        let entries = std::fs::read_dir(&bundle_dir)
            .with_context(|| format!("cannot list {}", bundle_dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if path.is_file() && content_type(&name).is_some() {
                let data = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                files.insert(name, Bytes::from(data));
            }
        }
        tracing::info!(dir = %bundle_dir.display(), files = files.len(), "serving the client bundle at {BUNDLE_ROUTE}");
        Ok(Self {
            files: Some(Arc::new(files)),
        })
    }

    /// Loads `dir` when given; otherwise nothing is served.
    pub(crate) fn from_option(dir: Option<&PathBuf>) -> anyhow::Result<Self> {
        dir.map_or_else(|| Ok(Self::default()), |dir| Self::load(dir))
    }
}

/// `GET /lib/signalr-webworker/{file}`.
pub(crate) async fn bundle_file(
    State(files): State<StaticFiles>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let Some(files) = files.files else {
        return (
            StatusCode::NOT_FOUND,
            "Static files are not configured: start signalbox-conformance with \
             --static-dir <node_modules/@microsoft/signalr/dist> (or set \
             SIGNALBOX_CONFORMANCE_STATIC_DIR) to serve the client bundle here.\n",
        )
            .into_response();
    };
    // Lookups are by exact file name, so no path can leave the directory.
    match (files.get(&name), content_type(&name)) {
        (Some(data), Some(content_type)) => (
            [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
            data.clone(),
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The content type served for a bundle file name; `None` for files not served.
fn content_type(name: &str) -> Option<&'static str> {
    if name.starts_with('.') {
        None
    } else if name.ends_with(".js") {
        Some("text/javascript")
    } else if name.ends_with(".map") {
        Some("application/json")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_only_scripts_and_maps() {
        assert_eq!(content_type("signalr.js"), Some("text/javascript"));
        assert_eq!(content_type("signalr.min.js.map"), Some("application/json"));
        assert_eq!(content_type("README.md"), None);
        assert_eq!(content_type(".hidden.js"), None);
    }
}
