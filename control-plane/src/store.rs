//! The database boundary: connection pools, migrations and the helpers every
//! domain's queries share.
//!
//! Domain modules keep their SQL next to their logic (`*/queries.rs`) and
//! reach the database only through [`Db`], [`Tx`] and the helpers here.
//! The SQL sticks to what SQLite and PostgreSQL both accept (`$n`
//! placeholders, `RETURNING`, `ON CONFLICT`), so a PostgreSQL backend joins
//! by adding a pool kind here and a migrations folder, not by touching the
//! domains.

use std::{path::Path, str::FromStr, time::Duration};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{AppError, AppResult};

/// The database the store runs on.
pub type Database = sqlx::Sqlite;
/// A pool of connections.
pub type Pool = SqlitePool;
/// A transaction: multi-step writes go through one so nothing is half-written.
pub type Tx = sqlx::Transaction<'static, Database>;

/// Connections to the store. SQLite allows one writer at a time, so writes
/// go through a one-connection pool and start `BEGIN IMMEDIATE` (no
/// lock-upgrade failures), while reads use a pool of their own and never
/// wait for a writer (WAL).
#[derive(Clone, Debug)]
pub struct Db {
    reader: Pool,
    writer: Pool,
}

impl Db {
    /// Opens the database named by `url` (default: SQLite in `data_dir`) and
    /// runs the migrations.
    pub async fn connect(url: Option<&str>, data_dir: &Path) -> anyhow::Result<Db> {
        let options = match url {
            Some(url) if url.starts_with("sqlite:") => SqliteConnectOptions::from_str(url)
                .with_context(|| format!("parse database url {url}"))?,
            Some(url) => anyhow::bail!(
                "unsupported database url `{}`: this build supports sqlite: URLs",
                url.split(':').next().unwrap_or(url)
            ),
            None => SqliteConnectOptions::new().filename(data_dir.join("minispod.db")),
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .context("open database")?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&writer)
            .await
            .context("run migrations")?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.read_only(true))
            .await
            .context("open database for reading")?;
        Ok(Db { reader, writer })
    }

    /// The pool for reads.
    pub fn read(&self) -> &Pool {
        &self.reader
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> AppResult<Tx> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Closes both pools, waiting for connections in use.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A stored time as a protobuf timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A fresh id: a UUIDv7, so ids sort roughly by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Maps a unique-constraint violation to ALREADY_EXISTS with `message`;
/// other database errors stay internal.
pub fn unique_violation(message: &str) -> impl FnOnce(sqlx::Error) -> AppError + '_ {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            AppError::AlreadyExists(message.to_owned())
        }
        _ => e.into(),
    }
}

/// `LIKE` pattern for "contains `text`", any case, with wildcards escaped
/// (use with `ESCAPE '\'`).
pub fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Default and largest page sizes of every listing.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// The largest page a listing returns.
pub const MAX_PAGE_SIZE: i64 = 500;

/// Where a page starts and how long it is, from a request's page fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows to skip.
    pub offset: i64,
    /// Rows to return.
    pub limit: i64,
}

impl Page {
    /// Parses `page_size` (0 = default) and an opaque `page_token`.
    pub fn parse(page_size: i32, page_token: &str) -> AppResult<Page> {
        if page_size < 0 || i64::from(page_size) > MAX_PAGE_SIZE {
            return Err(AppError::invalid(
                "page_size",
                format!("must be between 0 and {MAX_PAGE_SIZE}"),
            ));
        }
        let limit = if page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            i64::from(page_size)
        };
        let offset = if page_token.is_empty() {
            0
        } else {
            URL_SAFE_NO_PAD
                .decode(page_token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("o:").and_then(|n| n.parse::<i64>().ok()))
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    AppError::invalid("page_token", "is not a token this server issued")
                })?
        };
        Ok(Page { offset, limit })
    }

    /// The token of the page after this one, or empty when `total` rows end here.
    pub fn next_token(&self, total: i64) -> String {
        let next = self.offset + self.limit;
        if next >= total {
            String::new()
        } else {
            URL_SAFE_NO_PAD.encode(format!("o:{next}"))
        }
    }
}

/// Reads a one-time setting.
pub async fn get_setting(db: &Db, key: &str) -> AppResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(db.read())
            .await?,
    )
}

/// Writes a setting inside `tx`; returns false when it was already set.
pub async fn insert_setting(tx: &mut Tx, key: &str, value: &str) -> AppResult<bool> {
    let done = sqlx::query(
        "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(value)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip() {
        let first = Page::parse(0, "").unwrap();
        assert_eq!(
            first,
            Page {
                offset: 0,
                limit: 50
            }
        );
        let token = first.next_token(120);
        let second = Page::parse(0, &token).unwrap();
        assert_eq!(second.offset, 50);
        assert_eq!(second.next_token(100), "");
    }

    #[test]
    fn bad_page_fields_are_invalid_arguments() {
        assert!(Page::parse(-1, "").is_err());
        assert!(Page::parse(501, "").is_err());
        assert!(Page::parse(10, "garbage!").is_err());
        assert!(Page::parse(10, &URL_SAFE_NO_PAD.encode("o:-5")).is_err());
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("A_b%"), "%a\\_b\\%%");
    }

    #[test]
    fn timestamps_split_milliseconds() {
        let t = timestamp(1_500);
        assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
    }
}
