//! The database boundary: connection pools, migrations, transactions and the
//! helpers every domain's queries share.
//!
//! Two backends: SQLite (the embedded default, one file in the data dir) and
//! PostgreSQL (for production and for several control-plane replicas).
//! Domain modules keep their SQL next to their logic (`*/queries.rs`) and
//! reach the database only through [`Db`], [`Tx`] and [`with_conn!`]: the
//! macro runs one query body against whichever backend the store is on, so
//! the domains never name a database. The SQL sticks to what both accept
//! (`$n` placeholders, `RETURNING`, `ON CONFLICT`, `CAST(.. AS BIGINT)`).

use std::{
    path::Path,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sqlx::{
    Connection, Database, Pool,
    pool::PoolConnection,
    postgres::{PgConnectOptions, PgPoolOptions, Postgres},
    sqlite::{
        Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    },
};

use crate::error::{AppError, AppResult};

/// Pool sizes and timeouts of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most connections a PostgreSQL pool opens (SQLite: most readers).
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// How long start-up keeps retrying a database that is not up yet.
    pub connect_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(60),
        }
    }
}

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the data dir: one machine, one control plane.
    Sqlite,
    /// PostgreSQL: one or several control-plane replicas.
    Postgres,
}

#[derive(Clone, Debug)]
enum Pools {
    /// SQLite allows one writer at a time, so writes go through a
    /// one-connection pool and start `BEGIN IMMEDIATE` (no lock-upgrade
    /// failures), while reads use a pool of their own and never wait for a
    /// writer (WAL).
    Sqlite {
        reader: Pool<Sqlite>,
        writer: Pool<Sqlite>,
        /// See [`Db::write_generation`].
        writes: Arc<AtomicU64>,
    },
    /// PostgreSQL: one pool; write transactions serialise on an advisory lock
    /// (see [`Db::begin`]).
    Postgres(Pool<Postgres>),
}

/// Connections to the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pools: Pools,
}

/// The advisory lock every PostgreSQL write transaction takes first.
const WRITE_LOCK: i64 = 0x6d69_6e69_7370_6f64; // "minispod"

impl Db {
    /// Opens the database named by `url` (default: SQLite in `data_dir`) and
    /// runs the migrations. A PostgreSQL server that is not up yet is retried
    /// for `options.connect_timeout`.
    pub async fn connect(
        url: Option<&str>,
        data_dir: &Path,
        options: &StoreOptions,
    ) -> anyhow::Result<Db> {
        match url {
            Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => {
                Self::connect_postgres(url, options).await
            }
            Some(url) if url.starts_with("sqlite:") => {
                let sqlite = SqliteConnectOptions::from_str(url)
                    .with_context(|| format!("parse database url {url}"))?;
                Self::connect_sqlite(sqlite, options).await
            }
            Some(url) => anyhow::bail!(
                "unsupported database url scheme `{}`: use sqlite: or postgres:",
                url.split(':').next().unwrap_or(url)
            ),
            None => {
                let sqlite = SqliteConnectOptions::new().filename(data_dir.join("minispod.db"));
                Self::connect_sqlite(sqlite, options).await
            }
        }
    }

    async fn connect_sqlite(sqlite: SqliteConnectOptions, o: &StoreOptions) -> anyhow::Result<Db> {
        let sqlite = sqlite
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .acquire_timeout(o.acquire_timeout)
            .connect_with(sqlite.clone())
            .await
            .context("open database")?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&writer)
            .await
            .context("run migrations")?;
        // No ping before handing out a connection: a SQLite connection is a
        // file handle that cannot go stale, and the ping is one more round
        // trip to the connection's thread on every query.
        let reader = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(o.max_connections.clamp(1, 64))
            .acquire_timeout(o.acquire_timeout)
            .connect_with(sqlite.read_only(true))
            .await
            .context("open database for reading")?;
        Ok(Db {
            pools: Pools::Sqlite {
                reader,
                writer,
                writes: Arc::default(),
            },
        })
    }

    async fn connect_postgres(url: &str, o: &StoreOptions) -> anyhow::Result<Db> {
        // The URL may hold a password: never print it.
        let pg = PgConnectOptions::from_str(url)
            .map_err(|e| anyhow::anyhow!("parse the PostgreSQL database url: {e}"))?
            .application_name("minispod-control-plane");
        let deadline = tokio::time::Instant::now() + o.connect_timeout;
        let mut wait = Duration::from_millis(100);
        let pool = loop {
            let attempt = PgPoolOptions::new()
                .max_connections(o.max_connections.max(2))
                .acquire_timeout(o.acquire_timeout)
                .connect_with(pg.clone())
                .await;
            match attempt {
                Ok(pool) => break pool,
                Err(e) if tokio::time::Instant::now() + wait < deadline => {
                    tracing::warn!(error = %e, retry_in = ?wait, "PostgreSQL is not reachable yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(anyhow::Error::new(e).context("connect to PostgreSQL")),
            }
        };
        // sqlx serialises concurrent migrators with an advisory lock, so
        // replicas may start together.
        sqlx::migrate!("../migrations/postgres")
            .run(&pool)
            .await
            .context("run migrations")?;
        Ok(Db {
            pools: Pools::Postgres(pool),
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    /// The PostgreSQL pool, when on PostgreSQL (for LISTEN).
    pub fn postgres(&self) -> Option<&Pool<Postgres>> {
        match &self.pools {
            Pools::Postgres(p) => Some(p),
            Pools::Sqlite { .. } => None,
        }
    }

    /// True when no other process may share this store (SQLite: the file in
    /// this control plane's data dir); false when replicas may (PostgreSQL).
    pub fn single_process(&self) -> bool {
        matches!(self.pools, Pools::Sqlite { .. })
    }

    /// A message channel to every other process on this store, named
    /// `channel` (PostgreSQL LISTEN/NOTIFY); None when the store is this
    /// process's alone. Messages sent are delivered to every listener but
    /// this process's own... and this process's too: filter by content.
    /// Messages sent while a listener reconnects are lost to it.
    pub async fn open_channel(
        &self,
        channel: &'static str,
    ) -> anyhow::Result<Option<StoreChannel>> {
        let Pools::Postgres(pool) = &self.pools else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool)
            .await
            .context("connect to PostgreSQL for LISTEN")?;
        listener
            .listen(channel)
            .await
            .with_context(|| format!("LISTEN on {channel}"))?;
        let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (in_tx, in_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let pool = pool.clone();
        let sender = tokio::spawn(async move {
            while let Some(message) = out_rx.recv().await {
                let sent = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(channel)
                    .bind(&message)
                    .execute(&pool)
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(error = %e, channel, "could not tell other replicas of a change");
                }
            }
        });
        let receiver = tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(n) => {
                        if in_tx.send(n.payload().to_owned()).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        // PgListener reconnects on the next recv.
                        tracing::warn!(error = %e, channel, "LISTEN connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(Some(StoreChannel {
            sender: out_tx,
            receiver: in_rx,
            flushed: sender,
            listening: ListenGuard(receiver),
        }))
    }

    /// On SQLite, where this process is the only writer: a number that
    /// changes whenever a committed transaction may have changed rows, so
    /// that a result computed under one value still holds while it is
    /// unchanged. Read it before the query whose result is kept. The
    /// heartbeat-metrics flush and lease renewals leave it alone (see
    /// [`Tx::commit_no_listing_change`]). None on PostgreSQL, where other
    /// replicas write too.
    pub fn write_generation(&self) -> Option<u64> {
        match &self.pools {
            Pools::Sqlite { writes, .. } => Some(writes.load(Ordering::Acquire)),
            Pools::Postgres(_) => None,
        }
    }

    /// A handle for reads outside a transaction.
    pub fn read(&self) -> Conn<'_> {
        match &self.pools {
            Pools::Sqlite { reader, .. } => Conn::Sqlite(Handle::Pool(reader)),
            Pools::Postgres(p) => Conn::Postgres(Handle::Pool(p)),
        }
    }

    /// Starts a write transaction. Writes are serialised on both backends:
    /// SQLite has one writer, and on PostgreSQL every write transaction
    /// first takes one transaction-scoped advisory lock, so read-check-write
    /// sequences (the last administrator, one record per machine, a refresh
    /// token spent once) hold across replicas as they do on SQLite.
    pub async fn begin(&self) -> AppResult<Tx> {
        match &self.pools {
            Pools::Sqlite { writer, writes, .. } => Ok(Tx::Sqlite(
                writer.begin_with("BEGIN IMMEDIATE").await?,
                writes.clone(),
            )),
            Pools::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Ok(Tx::Postgres(tx))
            }
        }
    }

    /// Ok when the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match &self.pools {
            Pools::Sqlite { reader, .. } => reader.acquire().await?.ping().await,
            Pools::Postgres(p) => p.acquire().await?.ping().await,
        }
    }

    /// Closes the pools, waiting for connections in use.
    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { reader, writer, .. } => {
                writer.close().await;
                reader.close().await;
            }
            Pools::Postgres(p) => p.close().await,
        }
    }
}

/// See [`Db::open_channel`].
#[derive(Debug)]
pub struct StoreChannel {
    /// Messages for every process on the store.
    pub sender: tokio::sync::mpsc::UnboundedSender<String>,
    /// Messages received, from every process including this one.
    pub receiver: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Ends once every sender is dropped and what they sent went out.
    pub flushed: tokio::task::JoinHandle<()>,
    /// Stops listening when dropped.
    pub listening: ListenGuard,
}

/// Stops a channel's listener when dropped.
#[derive(Debug)]
pub struct ListenGuard(tokio::task::JoinHandle<()>);

impl Drop for ListenGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A write transaction: multi-step writes go through one so nothing is
/// half-written. Dropped without [`Tx::commit`], it rolls back.
#[derive(Debug)]
pub enum Tx {
    /// On SQLite, with the counter of [`Db::write_generation`].
    Sqlite(sqlx::Transaction<'static, Sqlite>, Arc<AtomicU64>),
    /// On PostgreSQL.
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx, writes) => {
                let done = tx.commit().await;
                // After the commit (and even when it failed, to be safe): a
                // reader that sees the new value sees the new rows.
                writes.fetch_add(1, Ordering::Release);
                done
            }
            Tx::Postgres(tx) => tx.commit().await,
        }
    }

    /// Commits a transaction that changed nothing a worker listing filters
    /// on (no worker added or removed; no status, online, ready, cordoned,
    /// name, IP or machine id changed), such as the heartbeat-metrics flush
    /// or a lease renewal, leaving [`Db::write_generation`] as it is, so
    /// the counts kept for listings stay valid.
    pub async fn commit_no_listing_change(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx, _) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// A pool or a borrowed connection of one backend.
#[derive(Debug)]
pub enum Handle<'a, DB: Database> {
    /// Take a connection from the pool for the query.
    Pool(&'a Pool<DB>),
    /// A connection taken from the pool.
    Owned(PoolConnection<DB>),
    /// A transaction's connection.
    Borrowed(&'a mut DB::Connection),
}

impl<DB: Database> Handle<'_, DB> {
    /// The connection to run a query on.
    pub async fn get(&mut self) -> Result<&mut DB::Connection, sqlx::Error> {
        if let Handle::Pool(p) = self {
            *self = Handle::Owned(p.acquire().await?);
        }
        match self {
            Handle::Owned(c) => Ok(&mut **c),
            Handle::Borrowed(c) => Ok(&mut **c),
            Handle::Pool(_) => unreachable!("acquired above"),
        }
    }
}

/// Where a query runs: [`Db::read`] or a transaction (`&mut Tx`).
#[derive(Debug)]
pub enum Conn<'a> {
    /// SQLite.
    Sqlite(Handle<'a, Sqlite>),
    /// PostgreSQL.
    Postgres(Handle<'a, Postgres>),
}

impl<'a> From<&'a mut Tx> for Conn<'a> {
    fn from(tx: &'a mut Tx) -> Self {
        match tx {
            Tx::Sqlite(t, _) => Conn::Sqlite(Handle::Borrowed(&mut **t)),
            Tx::Postgres(t) => Conn::Postgres(Handle::Borrowed(&mut **t)),
        }
    }
}

impl<'a> From<&'a Db> for Conn<'a> {
    fn from(db: &'a Db) -> Self {
        db.read()
    }
}

/// Runs `$body` with `$c` bound to a `&mut` connection of whichever backend
/// `$conn` (a `&mut Tx`, a `&Db` or a [`Conn`]) is on. The body is compiled
/// once per backend, so one SQL text and one set of binds serve both; it
/// evaluates to the body's value, and a failure to get a connection returns
/// early through `?`.
#[macro_export]
macro_rules! with_conn {
    ($conn:expr, |$c:ident| $body:expr) => {{
        let conn: $crate::store::Conn<'_> = ::core::convert::Into::into($conn);
        match conn {
            $crate::store::Conn::Sqlite(mut handle) => {
                let $c = handle.get().await?;
                $body
            }
            $crate::store::Conn::Postgres(mut handle) => {
                let $c = handle.get().await?;
                $body
            }
        }
    }};
}

/// Names the PostgreSQL server the test suites run against: an
/// administrator's URL such as `postgres://postgres@127.0.0.1:5433/postgres`.
/// Unset, tests use SQLite.
pub const TEST_POSTGRES_ENV: &str = "MINISPOD_TEST_POSTGRES";

/// Test support: a new, empty database on the server named by
/// [`TEST_POSTGRES_ENV`] and its URL, or None when the variable is unset
/// (the tests then run on SQLite in their data dir).
#[doc(hidden)]
pub async fn fresh_test_database() -> anyhow::Result<Option<String>> {
    let Some(admin_url) = std::env::var(TEST_POSTGRES_ENV)
        .ok()
        .filter(|u| !u.is_empty())
    else {
        return Ok(None);
    };
    let name = format!("minispod_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .context("connect to the test PostgreSQL server")?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .context("create a test database")?;
    conn.close().await?;
    let mut url = url_without_database(&admin_url);
    url.push('/');
    url.push_str(&name);
    Ok(Some(url))
}

/// `postgres://user@host:port/db?x` without `/db?x`.
fn url_without_database(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?']) {
        Some(i) => url[..after_scheme + i].to_owned(),
        None => url.to_owned(),
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
    Ok(with_conn!(db, |c| {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(c)
            .await?
    }))
}

/// Writes a setting inside `tx`; returns false when it was already set.
pub async fn insert_setting(tx: &mut Tx, key: &str, value: &str) -> AppResult<bool> {
    let done = with_conn!(tx, |c| {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(c)
        .await?
        .rows_affected()
    });
    Ok(done == 1)
}

#[cfg(test)]
mod migration_tests;

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
    fn test_database_urls_swap_the_database_name() {
        assert_eq!(
            url_without_database("postgres://postgres@127.0.0.1:5433/postgres"),
            "postgres://postgres@127.0.0.1:5433"
        );
        assert_eq!(url_without_database("postgres://h"), "postgres://h");
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
