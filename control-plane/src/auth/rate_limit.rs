//! In-memory rate limits for Login and Register.
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

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::error::AppError;

/// Most keys one limiter tracks before it forgets idle ones.
const MAX_KEYS: usize = 100_000;
/// How long a successful login makes its address known to the account.
const KNOWN_ADDRESS_TTL: Duration = Duration::from_secs(30 * 86_400);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token bucket per key: `burst` tokens, one more every `interval`.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    burst: f64,
    interval: Duration,
}

impl RateLimiter {
    /// A limiter allowing `burst` at once and one more every `interval`.
    pub fn new(burst: u32, interval: Duration) -> Self {
        RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            burst: f64::from(burst.max(1)),
            interval: interval.max(Duration::from_millis(1)),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let gained = now.duration_since(b.updated).as_secs_f64() / self.interval.as_secs_f64();
        Bucket {
            tokens: (b.tokens + gained).min(self.burst),
            updated: now,
        }
    }

    fn wait_for_one(&self, b: Bucket) -> Duration {
        self.interval.mul_f64((1.0 - b.tokens).max(0.0))
    }

    /// Ok when `key` has a token left, without spending it; else how long
    /// until it has one.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match buckets.get(key) {
            Some(b) => {
                let b = self.refilled(*b, now);
                if b.tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(self.wait_for_one(b))
                }
            }
            None => Ok(()),
        }
    }

    /// Spends one token of `key`; Err(wait) when there is none.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            // Full buckets hold no information: forget them first.
            let burst = self.burst;
            buckets.retain(|_, b| {
                let gained =
                    now.duration_since(b.updated).as_secs_f64() / self.interval.as_secs_f64();
                b.tokens + gained < burst
            });
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let mut fresh = self.refilled(*b, now);
        let outcome = if fresh.tokens >= 1.0 {
            fresh.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait_for_one(fresh))
        };
        *b = fresh;
        outcome
    }

    /// Forgets `key`, giving it a full bucket.
    pub fn reset(&self, key: &str) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
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
    known: Mutex<HashMap<String, Instant>>,
}

fn too_many(what: &str, wait: Duration) -> AppError {
    AppError::ResourceExhausted {
        message: format!("too many {what}; retry in {}s", wait.as_secs().max(1)),
        retry_after: Some(wait),
    }
}

impl LoginLimiter {
    /// Limiter with these limits.
    pub fn new(l: LoginLimits) -> Self {
        let per_minute = Duration::from_secs(60) / l.ip_per_minute.max(1);
        let per_hour = Duration::from_secs(3600) / l.account_per_hour.max(1);
        LoginLimiter {
            per_ip: RateLimiter::new(l.ip_burst, per_minute),
            per_account_ip: RateLimiter::new(l.account_burst, per_hour),
            per_account: RateLimiter::new(l.account_burst.saturating_mul(10), per_hour / 10),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt (Login or Register) from `ip`.
    pub fn attempt(&self, ip: Option<IpAddr>) -> Result<(), AppError> {
        self.per_ip
            .take(&ip_key(ip))
            .map_err(|w| too_many("attempts from this address", w))
    }

    /// Whether `email` may try a password from `ip` now.
    pub fn check_account(&self, email: &str, ip: Option<IpAddr>) -> Result<(), AppError> {
        let pair = pair_key(email, ip);
        self.per_account_ip
            .check(&pair)
            .map_err(|w| too_many("failed logins for this account", w))?;
        if !self.is_known(&pair) {
            self.per_account
                .check(email)
                .map_err(|w| too_many("failed logins for this account", w))?;
        }
        Ok(())
    }

    /// Records a wrong password for `email` from `ip`.
    pub fn failed(&self, email: &str, ip: Option<IpAddr>) {
        let pair = pair_key(email, ip);
        let _ = self.per_account_ip.take(&pair);
        if !self.is_known(&pair) {
            let _ = self.per_account.take(email);
        }
    }

    /// Records a successful login: the address becomes known to the account.
    pub fn succeeded(&self, email: &str, ip: Option<IpAddr>) {
        let pair = pair_key(email, ip);
        self.per_account_ip.reset(&pair);
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= MAX_KEYS {
            let now = Instant::now();
            known.retain(|_, t| now.duration_since(*t) < KNOWN_ADDRESS_TTL);
        }
        if known.len() < MAX_KEYS {
            known.insert(pair, Instant::now());
        }
    }

    fn is_known(&self, pair: &str) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pair)
            .is_some_and(|t| t.elapsed() < KNOWN_ADDRESS_TTL)
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

    #[test]
    fn buckets_allow_a_burst_then_refill() {
        let l = RateLimiter::new(3, Duration::from_millis(50));
        assert!((0..3).all(|_| l.take("k").is_ok()));
        let wait = l.take("k").unwrap_err();
        assert!(wait <= Duration::from_millis(50));
        assert!(l.take("other").is_ok());
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.take("k").is_ok());
    }

    #[test]
    fn an_attacker_elsewhere_does_not_lock_out_a_known_address() {
        let limits = LoginLimits {
            ip_burst: 1000,
            ip_per_minute: 1000,
            account_burst: 2,
            account_per_hour: 1,
        };
        let l = LoginLimiter::new(limits);
        let home: IpAddr = "192.0.2.1".parse().unwrap();
        l.succeeded("ada@example.org", Some(home));
        // Many attacker addresses drain the account-wide bucket (20 tokens).
        for i in 0..40u8 {
            let ip: IpAddr = format!("198.51.100.{i}").parse().unwrap();
            l.failed("ada@example.org", Some(ip));
        }
        let fresh: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(l.check_account("ada@example.org", Some(fresh)).is_err());
        assert!(l.check_account("ada@example.org", Some(home)).is_ok());
    }

    #[test]
    fn one_address_guessing_one_account_is_stopped() {
        let limits = LoginLimits {
            ip_burst: 1000,
            ip_per_minute: 1000,
            account_burst: 2,
            account_per_hour: 1,
        };
        let l = LoginLimiter::new(limits);
        let ip = Some("198.51.100.7".parse().unwrap());
        l.failed("ada@example.org", ip);
        assert!(l.check_account("ada@example.org", ip).is_ok());
        l.failed("ada@example.org", ip);
        assert!(matches!(
            l.check_account("ada@example.org", ip),
            Err(AppError::ResourceExhausted { .. })
        ));
    }
}
