//! Rate limits for Login, Register and Enroll.
//!
//! Three token buckets guard a login:
//! - per client address, every attempt: stops one source from flooding;
//! - per (account, client address), failed attempts: stops one source from
//!   guessing one account's password;
//! - per account, failed attempts, ten times looser: slows guessing spread
//!   over many addresses.
//!
//! None of them locks a real user out for good: buckets refill with time,
//! and an address that signed in to an account successfully in the last 30
//! days skips the account-wide bucket, so an attacker elsewhere who drains it
//! does not lock the owner out of their usual machine.
//!
//! Buckets and known addresses live in memory when the store is this
//! process's alone, and in the store when replicas share it, so a limit
//! holds across replicas (an attacker gains nothing by spreading attempts
//! over them).

use std::{collections::HashMap, net::IpAddr, sync::Mutex, time::Duration};

use super::queries as limits_db;
use crate::{
    error::AppError,
    store::{Db, now_ms},
};

/// Most keys one limiter tracks in memory before it forgets idle ones.
const MAX_KEYS: usize = 100_000;
/// How long a successful login makes its address known to the account.
const KNOWN_ADDRESS_TTL: Duration = Duration::from_secs(30 * 86_400);

/// A bucket's tokens at a time (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Tokens left.
    pub tokens: f64,
    /// When they were counted.
    pub updated_ms: i64,
}

/// Where a limiter keeps its buckets.
#[derive(Debug)]
enum Buckets {
    Memory(Mutex<HashMap<String, Bucket>>),
    /// In the store, keyed `<name>|<key>`.
    Store {
        db: Db,
        name: &'static str,
    },
}

/// A token bucket per key: `burst` tokens, one more every `interval`.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Buckets,
    burst: f64,
    interval: Duration,
}

impl RateLimiter {
    /// An in-memory limiter allowing `burst` at once and one more every
    /// `interval`.
    pub fn new(burst: u32, interval: Duration) -> Self {
        RateLimiter {
            buckets: Buckets::Memory(Mutex::new(HashMap::new())),
            burst: f64::from(burst.max(1)),
            interval: interval.max(Duration::from_millis(1)),
        }
    }

    /// A limiter named `name` whose buckets live in `db` when replicas may
    /// share it, else in memory.
    pub fn for_store(db: &Db, name: &'static str, burst: u32, interval: Duration) -> Self {
        let mut limiter = RateLimiter::new(burst, interval);
        if !db.single_process() {
            limiter.buckets = Buckets::Store {
                db: db.clone(),
                name,
            };
        }
        limiter
    }

    fn refilled(&self, b: Bucket, now_ms: i64) -> Bucket {
        let elapsed = Duration::from_millis(now_ms.saturating_sub(b.updated_ms).max(0) as u64);
        let gained = elapsed.as_secs_f64() / self.interval.as_secs_f64();
        Bucket {
            tokens: (b.tokens + gained).min(self.burst),
            updated_ms: now_ms.max(b.updated_ms),
        }
    }

    fn full(&self, now_ms: i64) -> Bucket {
        Bucket {
            tokens: self.burst,
            updated_ms: now_ms,
        }
    }

    fn wait_for_one(&self, b: Bucket) -> Duration {
        self.interval.mul_f64((1.0 - b.tokens).max(0.0))
    }

    /// Ok when `key` has a token left, without spending it; else how long
    /// until it has one.
    pub async fn check(&self, key: &str) -> Result<(), Duration> {
        let now = now_ms();
        let bucket = match &self.buckets {
            Buckets::Memory(m) => m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(key)
                .copied(),
            Buckets::Store { db, name } => {
                match limits_db::bucket(db, &format!("{name}|{key}")).await {
                    Ok(b) => b,
                    Err(e) => {
                        // Fail open: the call that follows needs the store too.
                        tracing::warn!(error = %e, "rate limit lookup failed");
                        None
                    }
                }
            }
        };
        match bucket.map(|b| self.refilled(b, now)) {
            Some(b) if b.tokens < 1.0 => Err(self.wait_for_one(b)),
            _ => Ok(()),
        }
    }

    /// Spends one token of `key`; Err(wait) when there is none.
    pub async fn take(&self, key: &str) -> Result<(), Duration> {
        match &self.buckets {
            Buckets::Memory(m) => self.take_in_memory(m, key),
            Buckets::Store { db, name } => {
                // An empty bucket is refused without a write.
                self.check(key).await?;
                match self.take_in_store(db, &format!("{name}|{key}")).await {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        tracing::warn!(error = %e, "rate limit update failed");
                        Ok(())
                    }
                }
            }
        }
    }

    fn take_in_memory(
        &self,
        m: &Mutex<HashMap<String, Bucket>>,
        key: &str,
    ) -> Result<(), Duration> {
        let now = now_ms();
        let mut buckets = m.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            // Full buckets hold no information: forget them first.
            buckets.retain(|_, b| self.refilled(*b, now).tokens < self.burst);
        }
        let b = buckets.entry(key.to_owned()).or_insert(self.full(now));
        let (fresh, outcome) = self.spend(*b, now);
        *b = fresh;
        outcome
    }

    fn spend(&self, b: Bucket, now: i64) -> (Bucket, Result<(), Duration>) {
        let mut fresh = self.refilled(b, now);
        if fresh.tokens >= 1.0 {
            fresh.tokens -= 1.0;
            (fresh, Ok(()))
        } else {
            let wait = self.wait_for_one(fresh);
            (fresh, Err(wait))
        }
    }

    async fn take_in_store(
        &self,
        db: &Db,
        key: &str,
    ) -> crate::error::AppResult<Result<(), Duration>> {
        let now = now_ms();
        // Write transactions are serialised, so no two replicas spend the
        // same token.
        let mut tx = db.begin().await?;
        let stored = limits_db::bucket_for_update(&mut tx, key).await?;
        let (fresh, outcome) = self.spend(stored.unwrap_or(self.full(now)), now);
        limits_db::put_bucket(&mut tx, key, fresh).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Forgets `key`, giving it a full bucket.
    pub async fn reset(&self, key: &str) {
        match &self.buckets {
            Buckets::Memory(m) => {
                m.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
            }
            Buckets::Store { db, name } => {
                if let Err(e) = limits_db::delete_bucket(db, &format!("{name}|{key}")).await {
                    tracing::warn!(error = %e, "rate limit reset failed");
                }
            }
        }
    }
}

/// Which addresses signed in to which account, and when.
#[derive(Debug)]
enum KnownAddresses {
    Memory(Mutex<HashMap<String, i64>>),
    Store(Db),
}

impl KnownAddresses {
    async fn remember(&self, pair: &str) {
        let now = now_ms();
        match self {
            KnownAddresses::Memory(m) => {
                let mut known = m.lock().unwrap_or_else(|p| p.into_inner());
                if known.len() >= MAX_KEYS {
                    known.retain(|_, t| !expired(*t, now));
                }
                if known.len() < MAX_KEYS {
                    known.insert(pair.to_owned(), now);
                }
            }
            KnownAddresses::Store(db) => {
                if let Err(e) = limits_db::remember_address(db, pair, now).await {
                    tracing::warn!(error = %e, "could not remember a login address");
                }
            }
        }
    }

    async fn contains(&self, pair: &str) -> bool {
        let seen =
            match self {
                KnownAddresses::Memory(m) => m
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(pair)
                    .copied(),
                KnownAddresses::Store(db) => limits_db::address_seen_at(db, pair)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "login address lookup failed");
                        None
                    }),
            };
        seen.is_some_and(|t| !expired(t, now_ms()))
    }
}

fn expired(seen_ms: i64, now_ms: i64) -> bool {
    now_ms.saturating_sub(seen_ms) >= KNOWN_ADDRESS_TTL.as_millis() as i64
}

/// Oldest `seen_at` a known address may have and still count.
pub fn known_address_cutoff(now_ms: i64) -> i64 {
    now_ms - KNOWN_ADDRESS_TTL.as_millis() as i64
}

/// Limits of Login and Register.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Attempts one address may burst.
    pub ip_burst: u32,
    /// Sustained attempts per minute per address.
    pub ip_per_minute: u32,
    /// Failed logins per (account, address) before slowing down.
    pub account_burst: u32,
    /// Failed logins per hour an (account, address) recovers.
    pub account_per_hour: u32,
}

/// The three buckets of a login and the addresses known to each account.
#[derive(Debug)]
pub struct LoginLimiter {
    per_ip: RateLimiter,
    per_account_ip: RateLimiter,
    per_account: RateLimiter,
    known: KnownAddresses,
}

/// Whole seconds, rounded up, at least one.
pub fn ceil_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

fn too_many(what: &str, wait: Duration) -> AppError {
    AppError::ResourceExhausted {
        // Rounded up: "retry in 59s" for a wait of 59.9 s would be too early.
        message: format!("too many {what}; retry in {}s", ceil_secs(wait)),
        retry_after: Some(wait),
    }
}

impl LoginLimiter {
    /// An in-memory limiter with these limits.
    pub fn new(l: LoginLimits) -> Self {
        Self::with(l, None)
    }

    /// A limiter with these limits, kept in `db` when replicas may share it.
    pub fn for_store(db: &Db, l: LoginLimits) -> Self {
        Self::with(l, Some(db))
    }

    fn with(l: LoginLimits, db: Option<&Db>) -> Self {
        let per_minute = Duration::from_secs(60) / l.ip_per_minute.max(1);
        let per_hour = Duration::from_secs(3600) / l.account_per_hour.max(1);
        let limiter = |name, burst, interval| match db {
            Some(db) => RateLimiter::for_store(db, name, burst, interval),
            None => RateLimiter::new(burst, interval),
        };
        LoginLimiter {
            per_ip: limiter("login-ip", l.ip_burst, per_minute),
            per_account_ip: limiter("login-account-ip", l.account_burst, per_hour),
            per_account: limiter(
                "login-account",
                l.account_burst.saturating_mul(10),
                per_hour / 10,
            ),
            known: match db {
                Some(db) if !db.single_process() => KnownAddresses::Store(db.clone()),
                _ => KnownAddresses::Memory(Mutex::new(HashMap::new())),
            },
        }
    }

    /// Counts one attempt (Login or Register) from `ip`.
    pub async fn attempt(&self, ip: Option<IpAddr>) -> Result<(), AppError> {
        self.per_ip
            .take(&ip_key(ip))
            .await
            .map_err(|w| too_many("attempts from this address", w))
    }

    /// Whether `email` may try a password from `ip` now.
    pub async fn check_account(&self, email: &str, ip: Option<IpAddr>) -> Result<(), AppError> {
        let pair = pair_key(email, ip);
        self.per_account_ip
            .check(&pair)
            .await
            .map_err(|w| too_many("failed logins for this account", w))?;
        if !self.known.contains(&pair).await {
            self.per_account
                .check(email)
                .await
                .map_err(|w| too_many("failed logins for this account", w))?;
        }
        Ok(())
    }

    /// Records a wrong password for `email` from `ip`.
    pub async fn failed(&self, email: &str, ip: Option<IpAddr>) {
        let pair = pair_key(email, ip);
        let _ = self.per_account_ip.take(&pair).await;
        if !self.known.contains(&pair).await {
            let _ = self.per_account.take(email).await;
        }
    }

    /// Records a successful login: the address becomes known to the account.
    pub async fn succeeded(&self, email: &str, ip: Option<IpAddr>) {
        let pair = pair_key(email, ip);
        self.per_account_ip.reset(&pair).await;
        self.known.remember(&pair).await;
    }
}

fn ip_key(ip: Option<IpAddr>) -> String {
    ip.map(|i| i.to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn pair_key(email: &str, ip: Option<IpAddr>) -> String {
    format!("{email}|{}", ip_key(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buckets_allow_a_burst_then_refill() {
        let l = RateLimiter::new(3, Duration::from_millis(50));
        for _ in 0..3 {
            assert!(l.take("k").await.is_ok());
        }
        let wait = l.take("k").await.unwrap_err();
        assert!(wait <= Duration::from_millis(50));
        assert!(l.take("other").await.is_ok());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(l.take("k").await.is_ok());
    }

    #[tokio::test]
    async fn an_attacker_elsewhere_does_not_lock_out_a_known_address() {
        let limits = LoginLimits {
            ip_burst: 1000,
            ip_per_minute: 1000,
            account_burst: 2,
            account_per_hour: 1,
        };
        let l = LoginLimiter::new(limits);
        let home: IpAddr = "192.0.2.1".parse().unwrap();
        l.succeeded("ada@example.org", Some(home)).await;
        // Many attacker addresses drain the account-wide bucket (20 tokens).
        for i in 0..40u8 {
            let ip: IpAddr = format!("198.51.100.{i}").parse().unwrap();
            l.failed("ada@example.org", Some(ip)).await;
        }
        let fresh: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(
            l.check_account("ada@example.org", Some(fresh))
                .await
                .is_err()
        );
        assert!(l.check_account("ada@example.org", Some(home)).await.is_ok());
    }

    #[tokio::test]
    async fn one_address_guessing_one_account_is_stopped() {
        let limits = LoginLimits {
            ip_burst: 1000,
            ip_per_minute: 1000,
            account_burst: 2,
            account_per_hour: 1,
        };
        let l = LoginLimiter::new(limits);
        let ip = Some("198.51.100.7".parse().unwrap());
        l.failed("ada@example.org", ip).await;
        assert!(l.check_account("ada@example.org", ip).await.is_ok());
        l.failed("ada@example.org", ip).await;
        assert!(matches!(
            l.check_account("ada@example.org", ip).await,
            Err(AppError::ResourceExhausted { .. })
        ));
    }
}
