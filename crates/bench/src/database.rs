//! The service's database from the generator's side: a fresh PostgreSQL database per run
//! (created, then dropped, also after an error) and accounts created in bulk, straight into the
//! `users` table, before anything is measured.

use anyhow::{Context as _, bail};
use sqlx::Connection as _;

/// A PostgreSQL database created for one run.
#[derive(Debug)]
pub struct FreshDatabase {
    admin_url: String,
    name: String,
    /// The new database's URL.
    pub url: String,
    dropped: bool,
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").context("a postgres:// URL")? + 3;
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

impl FreshDatabase {
    /// Creates `signalbox_bench_<pid>_<time>` on the server of `admin_url` (a database URL the
    /// bench may `CREATE DATABASE` with, e.g. `postgres://postgres@127.0.0.1:5432/postgres`).
    pub async fn create(admin_url: &str) -> anyhow::Result<FreshDatabase> {
        if !admin_url.starts_with("postgres://") && !admin_url.starts_with("postgresql://") {
            bail!("--database-url must be a postgres:// URL, not {admin_url}");
        }
        let name = format!(
            "signalbox_bench_{}_{}",
            std::process::id(),
            crate::sys::now_us() / 1000
        );
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connect to {admin_url}"))?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("create database {name}"))?;
        conn.close().await.ok();
        eprintln!("created database {name}");
        Ok(FreshDatabase {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name)?,
            name,
            dropped: false,
        })
    }

    /// Drops the database (closing the connections still open to it).
    pub async fn drop_database(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .with_context(|| format!("drop database {}", self.name))?;
        conn.close().await.ok();
        eprintln!("dropped database {}", self.name);
        Ok(())
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        if !self.dropped {
            eprintln!(
                "database {} was not dropped: DROP DATABASE {} WITH (FORCE)",
                self.name, self.name
            );
        }
    }
}

/// Inserts accounts (no password, no claims) named `names` into the service's `users` table,
/// 1,000 rows per statement in one transaction. Names must be plain (`u123`, `bench-admin`).
pub async fn create_accounts(database_url: &str, names: &[String]) -> anyhow::Result<()> {
    if names
        .iter()
        .any(|n| !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        bail!("account names must be letters, digits and '-'");
    }
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(database_url)
        .await
        .with_context(|| format!("connect to {database_url}"))?;
    let now = crate::sys::now_us() / 1000;
    let mut tx = conn.begin().await?;
    for chunk in names.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|n| format!("('{n}', '[]', '{{}}', {now})"))
            .collect();
        sqlx::raw_sql(&format!(
            "INSERT INTO users (name, roles, claims, created_at) VALUES {} ON CONFLICT (name) DO NOTHING",
            values.join(", ")
        ))
        .execute(&mut *tx)
        .await
        .context("insert accounts")?;
    }
    tx.commit().await?;
    conn.close().await.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() -> anyhow::Result<()> {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x")?,
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x")?,
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x")?,
            "postgres://h:5432/x"
        );
        Ok(())
    }
}
