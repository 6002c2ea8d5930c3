//! Rate limits: token buckets for Login, Register, password checks and
//! Enroll, and the client address they are keyed by.
//!
//! Three token buckets guard every password check (Login, and the checks of
//! ChangePassword, DeactivateAccount and an email change):
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
//! A password check takes its tokens before the hash is verified (and gets
//! them back if the password was right), so concurrent guesses cannot all
//! pass a check made before any of them failed.
//!
//! Buckets and known addresses live in memory when the store is this
//! process's alone, and in the store when replicas share it, so a limit
//! holds across replicas (an attacker gains nothing by spreading attempts
//! over them). Keys are fixed-size (an address, a hash of the account), a
//! map holds at most `MAX_KEYS` of them, and idle ones are purged on a
//! timer, so memory stays bounded whatever clients send. IPv6 clients are
//! keyed by their /64, the block one subscriber usually gets.

pub mod queries;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
    sync::Mutex,
    time::Duration,
};

use self::queries as limits_db;
use crate::{
    error::AppError,
    store::{Db, now_ms},
};
// The retry hint's helpers live with the error they build; these paths stay.
pub use crate::error::{ceil_secs, too_many};

/// Most keys one limiter tracks in memory; beyond it the idle ones are
/// forgotten first, then the longest untouched.
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
            // Full buckets hold no information: forget them first, then
            // the longest untouched (they are the nearest to full).
            buckets.retain(|_, b| self.refilled(*b, now).tokens < self.burst);
            evict_oldest(&mut buckets, |b| b.updated_ms);
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

    /// Gives back one token of `key` (a check that turned out fine).
    pub async fn give_back(&self, key: &str) {
        let now = now_ms();
        match &self.buckets {
            Buckets::Memory(m) => {
                let mut buckets = m.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(b) = buckets.get_mut(key) {
                    let mut fresh = self.refilled(*b, now);
                    fresh.tokens = (fresh.tokens + 1.0).min(self.burst);
                    *b = fresh;
                }
            }
            Buckets::Store { db, name } => {
                let key = format!("{name}|{key}");
                let outcome: crate::error::AppResult<()> = async {
                    let mut tx = db.begin().await?;
                    if let Some(b) = limits_db::bucket_for_update(&mut tx, &key).await? {
                        let mut fresh = self.refilled(b, now);
                        fresh.tokens = (fresh.tokens + 1.0).min(self.burst);
                        limits_db::put_bucket(&mut tx, &key, fresh).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }
                .await;
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "rate limit refund failed");
                }
            }
        }
    }

    /// Forgets in-memory buckets that have refilled (they hold nothing a
    /// fresh bucket would not); the store's are purged with its other
    /// stale rows.
    pub fn purge_idle(&self) -> usize {
        let Buckets::Memory(m) = &self.buckets else {
            return 0;
        };
        let now = now_ms();
        let mut buckets = m.lock().unwrap_or_else(|p| p.into_inner());
        let before = buckets.len();
        buckets.retain(|_, b| self.refilled(*b, now).tokens < self.burst);
        before - buckets.len()
    }

    /// Keys held in memory.
    pub fn keys_in_memory(&self) -> usize {
        match &self.buckets {
            Buckets::Memory(m) => m.lock().unwrap_or_else(|p| p.into_inner()).len(),
            Buckets::Store { .. } => 0,
        }
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
                if known.len() >= MAX_KEYS && !known.contains_key(pair) {
                    known.retain(|_, t| !expired(*t, now));
                    evict_oldest(&mut known, |t| *t);
                }
                known.insert(pair.to_owned(), now);
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

/// When `map` is still full, forgets its tenth with the oldest times.
fn evict_oldest<V>(map: &mut HashMap<String, V>, time: impl Fn(&V) -> i64) {
    if map.len() < MAX_KEYS {
        return;
    }
    let mut times: Vec<i64> = map.values().map(&time).collect();
    let nth = times.len() / 10;
    let (_, cutoff, _) = times.select_nth_unstable(nth);
    let cutoff = *cutoff;
    map.retain(|_, v| time(v) > cutoff);
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

    /// Takes the tokens of one password check of `account` from `ip`,
    /// before the password is verified; Err when either bucket is empty.
    /// Call [`LoginLimiter::finish`] with the outcome.
    pub async fn begin(&self, account: &str, ip: Option<IpAddr>) -> Result<(), AppError> {
        let pair = pair_key(account, ip);
        self.per_account_ip
            .take(&pair)
            .await
            .map_err(|w| too_many("failed password checks for this account", w))?;
        if !self.known.contains(&pair).await
            && let Err(w) = self.per_account.take(account).await
        {
            self.per_account_ip.give_back(&pair).await;
            return Err(too_many("failed password checks for this account", w));
        }
        Ok(())
    }

    /// Ends a check begun with [`LoginLimiter::begin`]: a right password
    /// gives the tokens back and makes the address known to the account; a
    /// wrong one leaves them spent.
    pub async fn finish(&self, account: &str, ip: Option<IpAddr>, right: bool) {
        if !right {
            return;
        }
        let pair = pair_key(account, ip);
        if !self.known.contains(&pair).await {
            self.per_account.give_back(account).await;
        }
        self.per_account_ip.reset(&pair).await;
        self.known.remember(&pair).await;
    }

    /// Forgets idle in-memory buckets and expired known addresses.
    pub fn purge_idle(&self) -> usize {
        let mut purged = self.per_ip.purge_idle()
            + self.per_account_ip.purge_idle()
            + self.per_account.purge_idle();
        if let KnownAddresses::Memory(m) = &self.known {
            let now = now_ms();
            let mut known = m.lock().unwrap_or_else(|p| p.into_inner());
            let before = known.len();
            known.retain(|_, t| !expired(*t, now));
            purged += before - known.len();
        }
        purged
    }

    /// Keys held in memory over all buckets.
    pub fn keys_in_memory(&self) -> usize {
        self.per_ip.keys_in_memory()
            + self.per_account_ip.keys_in_memory()
            + self.per_account.keys_in_memory()
    }
}

/// The key an address is limited by: IPv4 as is (also when mapped into
/// IPv6), IPv6 by its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// An address block, `192.0.2.0/24` or `2001:db8::/32` (a bare address is
/// a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the block (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                mask(u128::from(u32::from(n)), 32, self.prefix)
                    == mask(u128::from(u32::from(a)), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                mask(u128::from(n), 128, self.prefix) == mask(u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn mask(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits >> (width - prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR block"))?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {width}"))?,
            None => width,
        };
        Ok(Cidr { network, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The client behind a connection from `peer`: `peer` itself unless it is
/// a trusted proxy, in which case the right-most address of
/// `x-forwarded-for` that is not a trusted proxy (proxies append the
/// address they saw, so everything left of the first untrusted hop may be
/// forged). With no usable header, the proxy itself.
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let Some(header) = forwarded_for else {
        return Some(peer);
    };
    let mut last_trusted = peer;
    for hop in header.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // Garbage where a hop should be: the last trusted hop is the
            // best we know.
            return Some(last_trusted);
        };
        if !is_trusted(ip) {
            return Some(ip);
        }
        last_trusted = ip;
    }
    Some(last_trusted)
}

fn ip_key(ip: Option<IpAddr>) -> String {
    ip.map(|i| address_key(i).to_string())
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

    fn strict() -> LoginLimiter {
        LoginLimiter::new(LoginLimits {
            ip_burst: 1000,
            ip_per_minute: 1000,
            account_burst: 2,
            account_per_hour: 1,
        })
    }

    #[tokio::test]
    async fn an_attacker_elsewhere_does_not_lock_out_a_known_address() {
        let l = strict();
        let home: IpAddr = "192.0.2.1".parse().unwrap();
        l.begin("ada", Some(home)).await.unwrap();
        l.finish("ada", Some(home), true).await;
        // Many attacker addresses drain the account-wide bucket (20 tokens).
        for i in 0..40u8 {
            let ip: IpAddr = format!("198.51.100.{i}").parse().unwrap();
            if l.begin("ada", Some(ip)).await.is_ok() {
                l.finish("ada", Some(ip), false).await;
            }
        }
        let fresh: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(l.begin("ada", Some(fresh)).await.is_err());
        assert!(l.begin("ada", Some(home)).await.is_ok());
    }

    #[tokio::test]
    async fn one_address_guessing_one_account_is_stopped() {
        let l = strict();
        let ip = Some("198.51.100.7".parse().unwrap());
        for _ in 0..2 {
            l.begin("ada", ip).await.unwrap();
            l.finish("ada", ip, false).await;
        }
        assert!(matches!(
            l.begin("ada", ip).await,
            Err(AppError::ResourceExhausted { .. })
        ));
    }

    #[tokio::test]
    async fn concurrent_guesses_take_their_tokens_before_any_verdict() {
        // Every guess is begun before any of them has been judged: only the
        // burst gets through, not all of them.
        let l = strict();
        let ip = Some("198.51.100.8".parse().unwrap());
        let mut passed = 0;
        for _ in 0..10 {
            if l.begin("ada", ip).await.is_ok() {
                passed += 1;
            }
        }
        assert_eq!(passed, 2);
    }

    #[tokio::test]
    async fn a_right_password_gives_its_tokens_back() {
        let l = strict();
        let ip = Some("198.51.100.9".parse().unwrap());
        for _ in 0..5 {
            l.begin("ada", ip).await.unwrap();
            l.finish("ada", ip, true).await;
        }
    }

    #[tokio::test]
    async fn ipv6_clients_share_a_bucket_per_64() {
        let l = RateLimiter::new(1, Duration::from_secs(60));
        let a = address_key("2001:db8:0:1::1".parse().unwrap());
        let b = address_key("2001:db8:0:1:ffff::2".parse().unwrap());
        let c = address_key("2001:db8:0:2::1".parse().unwrap());
        assert_eq!(a, b);
        assert!(l.take(&a.to_string()).await.is_ok());
        assert!(l.take(&b.to_string()).await.is_err());
        assert!(l.take(&c.to_string()).await.is_ok());
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn memory_stays_bounded_and_idle_buckets_are_purged() {
        let l = RateLimiter::new(2, Duration::from_millis(20));
        for i in 0..(MAX_KEYS + 5_000) {
            let _ = l.take(&format!("k{i}")).await;
        }
        assert!(
            l.keys_in_memory() <= MAX_KEYS,
            "{} keys",
            l.keys_in_memory()
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(l.purge_idle() > 0);
        assert_eq!(l.keys_in_memory(), 0, "refilled buckets are forgotten");
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.200.1.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.org".parse::<Cidr>().is_err());
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop() {
        let trusted: Vec<Cidr> = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // Direct clients cannot name anyone else.
        assert_eq!(
            client_address(ip("198.51.100.1"), Some("203.0.113.7"), &trusted),
            ip("198.51.100.1")
        );
        // Through the proxy, a forged left part is ignored.
        assert_eq!(
            client_address(ip("127.0.0.1"), Some("203.0.113.7, 198.51.100.2"), &trusted),
            ip("198.51.100.2")
        );
        // Through two trusted proxies.
        assert_eq!(
            client_address(ip("127.0.0.1"), Some("198.51.100.3, 10.1.1.1"), &trusted),
            ip("198.51.100.3")
        );
        // No header, or only trusted hops: the proxy itself.
        assert_eq!(
            client_address(ip("127.0.0.1"), None, &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), Some("10.2.2.2"), &trusted),
            ip("10.2.2.2")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), Some("junk, 10.2.2.2"), &trusted),
            ip("10.2.2.2")
        );
        // Nothing trusted: the header means nothing.
        assert_eq!(
            client_address(ip("127.0.0.1"), Some("198.51.100.4"), &[]),
            ip("127.0.0.1")
        );
    }
}
