//! Storage: one schema on SQLite (the default, a file created on first start) or PostgreSQL,
//! through sqlx's `Any` driver. Queries are written once, with `$n` placeholders, which both
//! backends accept; timestamps are stored as milliseconds since the Unix epoch.

pub mod coalesce;
mod migrations;

use std::fmt;
use std::fmt::Write as _;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection};

/// How long opening the database may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A storage failure. The cause is for logs; clients see a generic message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one this service can use.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The database could not be reached or opened.
    #[error("cannot open the database at {url}: {cause}")]
    Connect {
        /// The URL with any password removed.
        url: String,
        /// The driver's error.
        cause: sqlx::Error,
    },
    /// Applying the schema failed.
    #[error("cannot apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    /// A stored value could not be read back.
    #[error("corrupt stored value in {0}")]
    Corrupt(&'static str),
}

/// Which database engine is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// The database: a connection pool plus the queries of each table (in the submodules).
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    display_url: String,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .field("url", &self.display_url)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens the database at `url` (`sqlite://PATH`, `sqlite::memory:`, `postgres://…`), creating
    /// an SQLite file if needed, and applies the migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let display_url = redact_url(url.trim());
        let (backend, url) = normalize_url(url)?;
        let in_memory = url.contains(":memory:");
        if backend == Backend::Sqlite && !in_memory {
            create_parent_dir(&url).map_err(|cause| StoreError::Connect {
                url: display_url.clone(),
                cause: sqlx::Error::Io(cause),
            })?;
        }
        let connect_error = |cause: sqlx::Error| StoreError::Connect {
            url: display_url.clone(),
            cause,
        };
        // One direct connection first: the pool would retry until its timeout and then report
        // only that it timed out, hiding the cause (connection refused, unknown database, …).
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(&url))
            .await
            .map_err(|_| {
                connect_error(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out",
                )))
            })?
            .map_err(connect_error)?;
        probe.close().await.map_err(connect_error)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if in_memory { 1 } else { 8 })
            .acquire_timeout(CONNECT_TIMEOUT)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite && !in_memory {
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(connect_error)?;
        let db = Self {
            pool,
            backend,
            display_url,
        };
        migrations::run(&db.pool, db.backend).await?;
        Ok(db)
    }

    /// The engine in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL, without password, for messages.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// The pool, for the query modules.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A round trip to the database (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the folder of an SQLite file when missing (the data directory on a first start).
fn create_parent_dir(url: &str) -> std::io::Result<()> {
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    match std::path::Path::new(path).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// Checks the scheme and, for SQLite files, asks for the file to be created when missing.
fn normalize_url(url: &str) -> Result<(Backend, String), StoreError> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_owned()));
    }
    if url.starts_with("sqlite:") {
        if url.contains(":memory:") || url.contains("mode=") {
            return Ok((Backend::Sqlite, url.to_owned()));
        }
        let separator = if url.contains('?') { '&' } else { '?' };
        return Ok((Backend::Sqlite, format!("{url}{separator}mode=rwc")));
    }
    Err(StoreError::UnsupportedUrl(redact_url(url)))
}

/// The URL with the password (if any) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Reads a JSON text column.
pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt(what))
}

/// `$first, $first+1, …` (`count` placeholders), for multi-row `VALUES`.
pub fn placeholders(first: usize, count: usize) -> String {
    let mut out = String::with_capacity(count * 7);
    for n in first..first + count {
        if n > first {
            out.push_str(", ");
        }
        let _ = write!(out, "${n}");
    }
    out
}

/// A subquery yielding, as text, each element of the JSON array bound as parameter `$param`: the
/// list of `column IN (…)`. For example `format!("… WHERE name IN ({})", in_json(backend, 1))`,
/// binding [`json_array`] of the names as `$1`.
///
/// The list is one parameter whatever its length, so the statement's text is the same for every
/// list: each connection prepares and caches it once, rather than once per length (`$1, …, $n`),
/// and no list runs into a limit on the number of bound parameters. The elements compare with a
/// text column as they are; a column of another type needs a cast.
pub fn in_json(backend: Backend, param: usize) -> String {
    match backend {
        Backend::Sqlite => format!("SELECT value FROM json_each(${param})"),
        Backend::Postgres => format!("SELECT json_array_elements_text(${param}::json)"),
    }
}

/// `values` as the text of a JSON array of strings, the value to bind for [`in_json`].
pub fn json_array<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> String {
    values
        .into_iter()
        .map(|value| serde_json::Value::from(value.as_ref()))
        .collect::<serde_json::Value>()
        .to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn placeholders_are_numbered_from_first() {
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn in_json_names_one_parameter() {
        assert_eq!(
            in_json(Backend::Sqlite, 2),
            "SELECT value FROM json_each($2)"
        );
        assert_eq!(
            in_json(Backend::Postgres, 1),
            "SELECT json_array_elements_text($1::json)"
        );
        assert_eq!(json_array(["a", "b"]), r#"["a","b"]"#);
        assert_eq!(json_array(Vec::<String>::new()), "[]");
    }

    #[tokio::test]
    async fn in_json_matches_each_value_exactly() {
        let db = Db::open("sqlite::memory:").await.unwrap();
        let names = [
            "plain",
            "quote\"d",
            "back\\slash",
            "tab\tnew\nline",
            "ünïcödé ☃",
            "",
            "[1]",
        ];
        let json = json_array(names);
        let sql = format!(
            "SELECT COUNT(*) AS n FROM (SELECT $1 AS name) AS t WHERE name IN ({})",
            in_json(db.backend(), 2)
        );
        for name in names {
            let row = sqlx::query(&sql)
                .bind(name)
                .bind(&json)
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(
                sqlx::Row::try_get::<i64, _>(&row, "n").unwrap(),
                1,
                "{name:?}"
            );
        }
        let row = sqlx::query(&sql)
            .bind("missing")
            .bind(&json)
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(sqlx::Row::try_get::<i64, _>(&row, "n").unwrap(), 0);
    }

    #[test]
    fn urls() {
        assert_eq!(
            normalize_url("sqlite://data/x.db").ok(),
            Some((Backend::Sqlite, "sqlite://data/x.db?mode=rwc".to_owned()))
        );
        assert_eq!(
            normalize_url("sqlite::memory:").ok(),
            Some((Backend::Sqlite, "sqlite::memory:".to_owned()))
        );
        assert!(matches!(
            normalize_url("postgres://u@h/db"),
            Ok((Backend::Postgres, _))
        ));
        assert!(normalize_url("mysql://h/db").is_err());
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
