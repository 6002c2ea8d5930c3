//! Migrations that rewrite data, run on a database as an older release
//! left it (every migration before the one under test applied, rows
//! written), then brought up to date as a new release starts: on SQLite,
//! and (`on_postgres_*`, the test command's second pass) on the PostgreSQL
//! server `MINISPOD_TEST_POSTGRES` names.

use std::borrow::Cow;

use sqlx::migrate::Migrator;

/// The migrator with only the migrations before `version`.
fn before(full: &Migrator, version: i64) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            full.migrations
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}

/// Workers as release 0016 stored them: two machines named "web-1" (a
/// reinstalled machine enrolled as a second worker), one "db-1".
const OLD_WORKERS: &str = "INSERT INTO workers
    (id, name, machine_id, status, online, ready, cert_serial, cert_expires_at, enrolled_at, created_at, updated_at)
    VALUES
    ('00000000-0000-0000-0000-0000000000aa', 'web-1', 'm-old', 'INACTIVE', FALSE, TRUE, 's1', 0, 100, 100, 100),
    ('00000000-0000-0000-0000-0000000000bb', 'web-1', 'm-new', 'ACTIVE', TRUE, TRUE, 's2', 0, 200, 200, 200),
    ('00000000-0000-0000-0000-0000000000cc', 'db-1', 'm-db', 'INACTIVE', FALSE, TRUE, 's3', 0, 150, 150, 150)";

const NAMES: &str = "SELECT id, name, ready FROM workers ORDER BY id";

fn expected() -> Vec<(String, String, bool)> {
    vec![
        // The older duplicate is renamed with the end of its id; the newer
        // keeps the name GetWorker by name answered; readiness without a
        // stream is cleared.
        (
            "00000000-0000-0000-0000-0000000000aa".into(),
            "web-1-000000aa".into(),
            false,
        ),
        (
            "00000000-0000-0000-0000-0000000000bb".into(),
            "web-1".into(),
            true,
        ),
        (
            "00000000-0000-0000-0000-0000000000cc".into(),
            "db-1".into(),
            false,
        ),
    ]
}

#[tokio::test]
async fn duplicate_worker_names_of_an_older_sqlite_database_are_renamed_once() {
    let dir = std::env::temp_dir().join(format!("minispod-migrate-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("store.db"))
        .create_if_missing(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let full = sqlx::migrate!("../migrations/sqlite");
    before(&full, 17).run(&pool).await.unwrap();
    sqlx::query(OLD_WORKERS).execute(&pool).await.unwrap();
    full.run(&pool).await.unwrap();
    let rows: Vec<(String, String, bool)> = sqlx::query_as(NAMES).fetch_all(&pool).await.unwrap();
    assert_eq!(rows, expected());
    // The name is unique from now on.
    let again = sqlx::query(
        "INSERT INTO workers (id, name, machine_id, status, cert_serial, cert_expires_at, enrolled_at, created_at, updated_at)
         VALUES ('x', 'web-1', 'm-x', 'PENDING', 's', 0, 1, 1, 1)",
    )
    .execute(&pool)
    .await;
    assert!(again.is_err(), "a second web-1 was accepted");
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn on_postgres_duplicate_worker_names_of_an_older_database_are_renamed_once() {
    let url = super::fresh_test_database().await.unwrap().expect(
        "this test needs PostgreSQL: set MINISPOD_TEST_POSTGRES (the README's test command does)",
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let full = sqlx::migrate!("../migrations/postgres");
    before(&full, 17).run(&pool).await.unwrap();
    sqlx::query(OLD_WORKERS).execute(&pool).await.unwrap();
    full.run(&pool).await.unwrap();
    let rows: Vec<(String, String, bool)> = sqlx::query_as(NAMES).fetch_all(&pool).await.unwrap();
    assert_eq!(rows, expected());
    pool.close().await;
}
