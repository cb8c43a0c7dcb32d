//! The data directory (`data_dir`, default `./signalbox-data`) and the signing secret kept in it.
//!
//! When no signing secret or key is configured (HS256 without `auth.jwt_secret`), the first
//! command that needs one (`serve`, `token issue`) generates a random secret and writes it to
//! `{data_dir}/jwt-secret` (mode 0600; the directory is created with mode 0700). Every later start
//! and every subcommand run with the same data directory reads it back, so tokens survive
//! restarts and `signalbox token issue` signs for the running server without any configuration.
//!
//! An explicitly configured secret or private key always wins, and the file is then neither read
//! nor written. With `require_config` (`--require-config`, `SIGNALBOX_REQUIRE_CONFIG`) a missing
//! explicit secret or key is an error instead.
//!
//! The file lives on this machine even when the database is PostgreSQL: nodes that share a
//! database each have their own data directory, so a cluster must configure one explicit shared
//! secret (or key) on every node.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::{Config, SigningAlgorithm};

/// The name of the generated secret's file inside the data directory.
pub const SECRET_FILE: &str = "jwt-secret";

/// Random bytes in a generated secret (64 base64url characters).
const SECRET_BYTES: usize = 48;

/// Shortest secret accepted from the file, in bytes.
const MIN_STORED_SECRET: usize = 32;

/// Why the signing secret could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// `require_config` is set and no secret or key is configured.
    #[error(
        "no JWT secret or signing key is configured and --require-config (SIGNALBOX_REQUIRE_CONFIG) forbids generating one: set SIGNALBOX_JWT_SECRET (or auth.jwt_secret / --jwt-secret), or auth.jwt_algorithm with auth.jwt_private_key"
    )]
    RequireConfig,
    /// The data directory or the secret file could not be created, written or read.
    #[error("{what} {path}: {cause}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The secret file holds something that is not a usable secret.
    #[error(
        "the secret file {0} is empty or too short; remove it to generate a new one (tokens signed with the old one stop working)"
    )]
    Corrupt(PathBuf),
    /// The system has no randomness to offer.
    #[error("cannot generate a secret: {0}")]
    Random(String),
}

/// Where the signing secret or key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Configured explicitly (a secret, or a private key).
    Configured,
    /// Generated now and written to this file.
    Created(PathBuf),
    /// Read from this file, written by an earlier run.
    Loaded(PathBuf),
}

/// The path of the generated secret for `data_dir`.
pub fn secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SECRET_FILE)
}

/// Settles the signing secret: an explicitly configured secret or key is kept; otherwise (HS256
/// without a secret) the data directory's secret is read, or generated and written once, and put
/// into `config.auth.jwt_secret`. With `config.require_config`, a missing explicit secret is
/// [`DataDirError::RequireConfig`].
pub fn resolve_secret(config: &mut Config) -> Result<SecretSource, DataDirError> {
    if config.auth.jwt_secret.is_some() || config.auth.jwt_algorithm != SigningAlgorithm::HS256 {
        return Ok(SecretSource::Configured);
    }
    if config.require_config {
        return Err(DataDirError::RequireConfig);
    }
    let (secret, source) = load_or_create(&config.data_dir)?;
    config.auth.jwt_secret = Some(secret);
    Ok(source)
}

/// Reads `{data_dir}/jwt-secret`, or creates it (and the directory) when missing.
pub fn load_or_create(data_dir: &Path) -> Result<(String, SecretSource), DataDirError> {
    let path = secret_path(data_dir);
    if let Some(secret) = read_secret(&path)? {
        return Ok((secret, SecretSource::Loaded(path)));
    }
    create_dir(data_dir)?;
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| DataDirError::Random(e.to_string()))?;
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    if publish(data_dir, &path, &secret)? {
        tracing::info!(path = %path.display(), "generated a signing secret in the data directory");
        Ok((secret, SecretSource::Created(path)))
    } else {
        // Another process created it first: use theirs.
        match read_secret(&path)? {
            Some(secret) => Ok((secret, SecretSource::Loaded(path))),
            None => Err(DataDirError::Corrupt(path)),
        }
    }
}

/// The secret in `path`; `None` when the file does not exist.
fn read_secret(path: &Path) -> Result<Option<String>, DataDirError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(cause) => {
            return Err(DataDirError::Io {
                what: "cannot read the secret file",
                path: path.to_owned(),
                cause,
            });
        }
    };
    warn_if_readable_by_others(path);
    let secret = text.trim();
    if secret.len() < MIN_STORED_SECRET {
        return Err(DataDirError::Corrupt(path.to_owned()));
    }
    Ok(Some(secret.to_owned()))
}

/// Creates the data directory (mode 0700 on Unix) when it does not exist.
fn create_dir(dir: &Path) -> Result<(), DataDirError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|cause| DataDirError::Io {
        what: "cannot create the data directory",
        path: dir.to_owned(),
        cause,
    })
}

/// Writes `secret` to a private temporary file, then links it to `path` only if `path` does not
/// exist yet (atomic: a reader never sees a half-written file, and of two processes starting at
/// once exactly one secret wins). `Ok(false)` when another process won.
fn publish(dir: &Path, path: &Path, secret: &str) -> Result<bool, DataDirError> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| DataDirError::Random(e.to_string()))?;
    let temp = dir.join(format!(
        ".{SECRET_FILE}.{}.tmp",
        URL_SAFE_NO_PAD.encode(suffix)
    ));
    let io = |what, cause| DataDirError::Io {
        what,
        path: path.to_owned(),
        cause,
    };
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options
            .open(&temp)
            .map_err(|e| io("cannot write the secret file", e))?;
        file.write_all(format!("{secret}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io("cannot write the secret file", e))?;
        match fs::hard_link(&temp, path) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io("cannot create the secret file", e)),
        }
    })();
    // Best effort: a leftover temporary file holds a secret nobody uses.
    let _ = fs::remove_file(&temp);
    result
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the signing secret file is readable by other users; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!(
            "signalbox-data-dir-{}",
            uuid::Uuid::now_v7().simple()
        ))
    }

    #[test]
    fn created_once_then_reused() {
        let dir = temp_dir().join("nested");
        let (first, source) = load_or_create(&dir).unwrap();
        assert_eq!(source, SecretSource::Created(secret_path(&dir)));
        assert_eq!(first.len(), 64);
        let (second, source) = load_or_create(&dir).unwrap();
        assert_eq!(source, SecretSource::Loaded(secret_path(&dir)));
        assert_eq!(first, second);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SECRET_FILE)]);
        let _ = fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn a_short_file_is_refused() {
        let dir = temp_dir();
        fs::create_dir_all(&dir).unwrap();
        fs::write(secret_path(&dir), "short\n").unwrap();
        assert!(matches!(
            load_or_create(&dir),
            Err(DataDirError::Corrupt(_))
        ));
        let _ = fs::remove_dir_all(dir);
    }
}
