//! Connecting, migrating and checking the store.

use crate::error::StoreError;
use crate::now_ms;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor, Row};
use std::time::Duration;

/// Which engine is behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file (embedded default).
    Sqlite,
    /// PostgreSQL (optionally with PostGIS).
    Postgres,
}

/// A migration carried by the binary.
struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sqlite: include_str!("../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "events",
        sqlite: include_str!("../migrations/sqlite/0002_events.sql"),
        postgres: include_str!("../migrations/postgres/0002_events.sql"),
    },
    Migration {
        version: 3,
        name: "crisis",
        sqlite: include_str!("../migrations/sqlite/0003_crisis.sql"),
        postgres: include_str!("../migrations/postgres/0003_crisis.sql"),
    },
    Migration {
        version: 4,
        name: "alerts",
        sqlite: include_str!("../migrations/sqlite/0004_alerts.sql"),
        postgres: include_str!("../migrations/postgres/0004_alerts.sql"),
    },
    Migration {
        version: 5,
        name: "health_education",
        sqlite: include_str!("../migrations/sqlite/0005_health_education.sql"),
        postgres: include_str!("../migrations/postgres/0005_health_education.sql"),
    },
    Migration {
        version: 6,
        name: "care_index",
        sqlite: include_str!("../migrations/sqlite/0006_care_index.sql"),
        postgres: include_str!("../migrations/postgres/0006_care_index.sql"),
    },
    Migration {
        version: 7,
        name: "alert_approval",
        sqlite: include_str!("../migrations/sqlite/0007_alert_approval.sql"),
        postgres: include_str!("../migrations/postgres/0007_alert_approval.sql"),
    },
    Migration {
        version: 8,
        name: "alert_ingest",
        sqlite: include_str!("../migrations/sqlite/0008_alert_ingest.sql"),
        postgres: include_str!("../migrations/postgres/0008_alert_ingest.sql"),
    },
    Migration {
        version: 9,
        name: "alert_device_location",
        sqlite: include_str!("../migrations/sqlite/0009_alert_device_location.sql"),
        postgres: include_str!("../migrations/postgres/0009_alert_device_location.sql"),
    },
];

/// Arbitrary constant for PostgreSQL's advisory lock serializing migrations across nodes.
const MIGRATION_LOCK: i64 = 0x006e_6578_7573;

/// A handle on the store; cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects to `sqlite://PATH` (the file and its directory are created when missing) or
    /// `postgres://…`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(parent) = std::path::Path::new(path.split('?').next().unwrap_or(path))
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Database(sqlx::Error::Configuration(
                        format!("cannot create {}: {e}", parent.display()).into(),
                    ))
                })?;
            }
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = if path.contains("mode=") {
                url.to_string()
            } else {
                format!("{url}{sep}mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(&url).await?;
        Ok(Store { pool, backend })
    }

    /// The engine behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations and returns the versions applied now.
    ///
    /// Safe to run concurrently from several nodes on PostgreSQL (advisory lock). A migration
    /// whose text changed after it was applied is refused.
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        let result = self.migrate_locked(&mut conn).await;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        result
    }

    async fn migrate_locked(&self, conn: &mut sqlx::AnyConnection) -> Result<Vec<i64>, StoreError> {
        conn.execute(
            "CREATE TABLE IF NOT EXISTS nexus_migrations (version BIGINT PRIMARY KEY, \
             name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .await?;
        if self.backend == Backend::Postgres {
            // PostGIS is optional: enable it when the server has it and we may.
            if let Err(e) = conn.execute("CREATE EXTENSION IF NOT EXISTS postgis").await {
                tracing::info!(error = %e, "PostGIS not enabled");
            }
        }
        let applied: Vec<(i64, String)> =
            sqlx::query("SELECT version, checksum FROM nexus_migrations ORDER BY version")
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?)))
                .collect::<Result<_, sqlx::Error>>()?;
        let mut done = Vec::new();
        for m in MIGRATIONS {
            let sql = match self.backend {
                Backend::Sqlite => m.sqlite,
                Backend::Postgres => m.postgres,
            };
            let checksum = checksum(sql);
            if let Some((_, stored)) = applied.iter().find(|(v, _)| *v == m.version) {
                if *stored != checksum {
                    return Err(StoreError::MigrationChanged { version: m.version });
                }
                continue;
            }
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO nexus_migrations (version, name, checksum, applied_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(&checksum)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(version = m.version, name = m.name, "migration applied");
            done.push(m.version);
        }
        if self.backend == Backend::Postgres && crate::crisis::postgis_step(conn).await? {
            tracing::debug!("PostGIS geometry columns and indexes in place");
        }
        Ok(done)
    }

    /// Whether PostGIS is available (always false on SQLite).
    pub async fn has_postgis(&self) -> Result<bool, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(false);
        }
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_extension WHERE extname = 'postgis'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// A cheap round trip, for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to return.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Begins a write transaction. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so a read-then-write transaction cannot fail half way with
    /// `SQLITE_BUSY` when another writer commits first.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

/// FNV-1a over the migration text: detects edits, not attacks.
fn checksum(sql: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The URL with any password replaced, for error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:<redacted>{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A statement that binds an `Option<f64>` that may be `None`, kept out of the connection's
/// prepared-statement cache.
///
/// sqlx 0.8's `Any` driver declares a null `f64` parameter to PostgreSQL as `float4` (its
/// null `Double` and `Real` kinds are swapped), and a cached statement keeps the parameter
/// types of its first preparation: once a statement was first prepared with a null there,
/// binding a number to it later on the same connection fails with "incorrect binary data
/// format". Preparing such statements afresh each time lets PostgreSQL see each execution's
/// own types (a `float4` null converts to `DOUBLE PRECISION` silently); the cost is one parse
/// per execution. SQLite is untyped and unaffected.
pub(crate) fn nullable_floats(
    sql: &str,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(sql).persistent(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("postgres://nexus:secret@db:5432/x"),
            "postgres://nexus:<redacted>@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://data/n.db"), "sqlite://data/n.db");
    }

    #[test]
    fn checksum_changes_with_text() {
        assert_ne!(checksum("a"), checksum("b"));
        assert_eq!(checksum("a"), checksum("a"));
    }
}
