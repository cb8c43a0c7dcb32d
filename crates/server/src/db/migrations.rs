//! The schema, embedded in the binary and applied at start.
//!
//! Most migrations are portable: the same SQL runs on SQLite and PostgreSQL. A few features exist
//! only on PostgreSQL (the transactional publish function, see docs/transactional-publish.md);
//! their migrations carry PostgreSQL SQL and a no-op for SQLite, so that version numbers stay the
//! same on both backends.

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use sqlx::AnyPool;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::{Backend, StoreError};

/// The SQL of one migration.
#[derive(Debug, Clone, Copy)]
enum Sql {
    /// The same statements on every backend.
    Portable(&'static str),
    /// PostgreSQL only; SQLite records the version but runs nothing of it.
    PostgresOnly(&'static str),
}

/// What an SQLite database runs for a [`Sql::PostgresOnly`] migration.
const SQLITE_NO_OP: &str = "-- PostgreSQL only: nothing to do on SQLite.\nSELECT 1;\n";

impl Sql {
    /// The statements to run on `backend`.
    fn for_backend(self, backend: Backend) -> &'static str {
        match (self, backend) {
            (Sql::Portable(sql), _) | (Sql::PostgresOnly(sql), Backend::Postgres) => sql,
            (Sql::PostgresOnly(_), Backend::Sqlite) => SQLITE_NO_OP,
        }
    }
}

/// Migrations written before backend-specific ones existed, oldest first: all portable.
const PORTABLE: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (2, "nodes", include_str!("../../migrations/0002_nodes.sql")),
    (
        3,
        "sign_in_flows",
        include_str!("../../migrations/0003_sign_in_flows.sql"),
    ),
    (
        4,
        "sessions",
        include_str!("../../migrations/0004_sessions.sql"),
    ),
    (5, "setup", include_str!("../../migrations/0005_setup.sql")),
];

/// Backend-specific migrations, oldest first, numbered after [`PORTABLE`].
const SPECIFIC: &[(i64, &str, Sql)] = &[
    (
        6,
        "transactional_publish",
        Sql::PostgresOnly(include_str!(
            "../../migrations/0006_transactional_publish.postgres.sql"
        )),
    ),
    (
        7,
        "azure",
        Sql::Portable(include_str!("../../migrations/0007_azure.sql")),
    ),
    (
        8,
        "webhooks",
        Sql::Portable(include_str!("../../migrations/0008_webhooks.sql")),
    ),
    (
        9,
        "undelivered_index",
        Sql::Portable(include_str!("../../migrations/0009_undelivered_index.sql")),
    ),
    (
        10,
        "node_address",
        Sql::Portable(include_str!("../../migrations/0010_node_address.sql")),
    ),
    (
        11,
        "broadcasts",
        Sql::Portable(include_str!("../../migrations/0011_broadcasts.sql")),
    ),
];

/// Every migration for `backend`, oldest first.
fn migrations(backend: Backend) -> Vec<(i64, &'static str, &'static str)> {
    PORTABLE
        .iter()
        .map(|&(version, description, sql)| (version, description, Sql::Portable(sql)))
        .chain(SPECIFIC.iter().copied())
        .map(|(version, description, sql)| (version, description, sql.for_backend(backend)))
        .collect()
}

/// The embedded migrations of one backend as a sqlx migration source.
#[derive(Debug)]
struct Embedded(Backend);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(migrations(self.0)
                .into_iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Applies the migrations of `backend` not yet applied.
pub(super) async fn run(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let migrator = Migrator::new(Embedded(backend)).await?;
    migrator.run(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_the_same_on_both_backends_and_increasing() {
        let sqlite = migrations(Backend::Sqlite);
        let postgres = migrations(Backend::Postgres);
        let versions = |m: &[(i64, &str, &str)]| m.iter().map(|m| m.0).collect::<Vec<_>>();
        assert_eq!(versions(&sqlite), versions(&postgres));
        assert!(versions(&sqlite).windows(2).all(|w| w[0] + 1 == w[1]));
        let publish = |m: &[(i64, &'static str, &'static str)]| {
            m.iter()
                .find(|m| m.1 == "transactional_publish")
                .map(|m| m.2)
        };
        assert_eq!(publish(&sqlite), Some(SQLITE_NO_OP));
        assert!(publish(&postgres).is_some_and(|sql| sql.contains("signalbox_publish")));
    }
}
