//! Test support: a fresh, empty PostgreSQL database per test.
//!
//! Tests find PostgreSQL through `NEXUS_TEST_DATABASE_URL` (a URL whose user may create
//! databases; `make test` starts the server and sets it). When it is unset the PostgreSQL half
//! of a test is skipped with a note, unless `NEXUS_TEST_REQUIRE_ENGINES=1`, in which case the
//! test fails: CI must never pass by skipping.

use crate::db::Store;
use sqlx::Executor;

/// Whether missing engines must fail tests instead of skipping them.
pub fn engines_required() -> bool {
    std::env::var("NEXUS_TEST_REQUIRE_ENGINES").is_ok_and(|v| v == "1")
}

/// Creates a new database and returns its URL, or `None` (after printing why) when PostgreSQL
/// is not configured for tests.
///
/// # Panics
/// When PostgreSQL is configured but unreachable, or missing while engines are required.
pub async fn fresh_postgres_url() -> Option<String> {
    let Ok(base) = std::env::var("NEXUS_TEST_DATABASE_URL") else {
        assert!(
            !engines_required(),
            "NEXUS_TEST_DATABASE_URL is unset but NEXUS_TEST_REQUIRE_ENGINES=1"
        );
        eprintln!("note: NEXUS_TEST_DATABASE_URL unset; skipping the PostgreSQL half of this test");
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("nexus_t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot reach test PostgreSQL: {e}"));
    // A database prepared with PostGIS, when the test setup made one, is cloned as template.
    let template = std::env::var("NEXUS_TEST_DATABASE_TEMPLATE").ok();
    let sql = match &template {
        Some(t) => format!("CREATE DATABASE {name} TEMPLATE {t}"),
        None => format!("CREATE DATABASE {name}"),
    };
    admin
        .execute(sql.as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
    let (head, _) = base.rsplit_once('/').expect("database URL has a path");
    let query = base
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    Some(format!("{head}/{name}{query}"))
}

/// A migrated store on a fresh PostgreSQL database (see [`fresh_postgres_url`]).
pub async fn fresh_postgres_store() -> Option<Store> {
    let url = fresh_postgres_url().await?;
    let store = Store::connect(&url)
        .await
        .expect("connect to test database");
    store.migrate().await.expect("migrate test database");
    Some(store)
}

/// A migrated store in a new SQLite file inside `dir`.
pub async fn sqlite_store(dir: &std::path::Path) -> Store {
    let url = format!("sqlite://{}/nexus.db", dir.display());
    let store = Store::connect(&url).await.expect("open sqlite store");
    store.migrate().await.expect("migrate sqlite store");
    store
}
