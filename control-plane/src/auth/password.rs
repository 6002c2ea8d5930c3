//! Password hashing with argon2id, bounded so a login flood cannot exhaust
//! memory or starve the runtime.
//!
//! Each hash takes 19 MiB and tens of milliseconds of CPU (OWASP's argon2id
//! minimum: m = 19 MiB, t = 2, p = 1). At most `max_concurrent` run at once
//! on the blocking pool; at most `max_queued` more wait for a slot, and any
//! beyond that are refused with RESOURCE_EXHAUSTED instead of piling up.
//!
//! Hashing outside Login (Register, ChangePassword, DeactivateAccount, an
//! email change, administrators setting passwords) runs in
//! [`Lane::Other`], which may hold at most half the slots (rounded up), so
//! a flood of those from signed-in accounts cannot keep users from signing
//! in.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::anyhow;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use tokio::sync::Semaphore;

use crate::error::{AppError, AppResult};

/// Memory of one hash, KiB.
const MEMORY_KIB: u32 = 19 * 1024;
/// Passes over the memory.
const ITERATIONS: u32 = 2;

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Which share of the hasher a check may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Login: every slot.
    Login,
    /// Everything else: at most half the slots, rounded up.
    Other,
}

/// Hashes and verifies passwords within a concurrency bound.
#[derive(Clone)]
pub struct PasswordHasher {
    slots: Arc<Semaphore>,
    /// Slots [`Lane::Other`] may hold.
    others: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_queued: usize,
    /// Verified against when an email is unknown, so the answer takes as long
    /// as for a known one and timing does not reveal which emails exist.
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher running at most `max_concurrent` hashes with `max_queued` waiting.
    pub fn new(max_concurrent: usize, max_queued: usize) -> anyhow::Result<Self> {
        let dummy = argon2()
            .hash_password(b"minispod dummy password")
            .map_err(|e| anyhow!("argon2: {e}"))?
            .to_string();
        let max_concurrent = max_concurrent.max(1);
        Ok(PasswordHasher {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            others: Arc::new(Semaphore::new(max_concurrent - max_concurrent / 2)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_queued,
            dummy_hash: dummy.into(),
        })
    }

    /// The PHC string of an argon2id hash of `password` with a fresh salt
    /// (never on the Login lane: Login only verifies).
    pub async fn hash(&self, password: &str) -> AppResult<String> {
        let password = password.to_owned();
        self.run(Lane::Other, move || {
            argon2()
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| AppError::Internal(anyhow!("argon2 hash: {e}")))
        })
        .await
    }

    /// True when `password` matches `hash`. With no hash (unknown account) it
    /// does the same work against a dummy and answers false.
    pub async fn verify(&self, lane: Lane, password: &str, hash: Option<&str>) -> AppResult<bool> {
        let password = password.to_owned();
        let (hash, real) = match hash {
            Some(h) => (h.to_owned(), true),
            None => (self.dummy_hash.to_string(), false),
        };
        self.run(lane, move || {
            Ok(argon2()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
                && real)
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        work: impl FnOnce() -> AppResult<T> + Send + 'static,
    ) -> AppResult<T> {
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        // Refuse only when every slot is busy and the queue is full.
        let permits = if self.slots.available_permits() == 0 && queued >= self.max_queued {
            None
        } else {
            let share = match lane {
                Lane::Login => None,
                Lane::Other => self.others.clone().acquire_owned().await.ok(),
            };
            self.slots
                .clone()
                .acquire_owned()
                .await
                .ok()
                .map(|slot| (slot, share))
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let Some(permit) = permits else {
            return Err(AppError::ResourceExhausted {
                message: "the server is busy checking passwords; retry shortly".into(),
                retry_after: Some(Duration::from_secs(1)),
            });
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| AppError::Internal(anyhow!("hashing task: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ_by_salt() {
        let h = PasswordHasher::new(2, 8).unwrap();
        let a = h.hash("correct horse").await.unwrap();
        let b = h.hash("correct horse").await.unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            h.verify(Lane::Login, "correct horse", Some(&a))
                .await
                .unwrap()
        );
        assert!(
            !h.verify(Lane::Login, "wrong horse", Some(&a))
                .await
                .unwrap()
        );
        assert!(
            !h.verify(Lane::Login, "minispod dummy password", None)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_flood_beyond_the_queue_is_refused() {
        let h = PasswordHasher::new(1, 0).unwrap();
        let hash = h.hash("correct horse").await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (h, hash) = (h.clone(), hash.clone());
                tokio::spawn(
                    async move { h.verify(Lane::Login, "correct horse", Some(&hash)).await },
                )
            })
            .collect();
        let mut refused = 0;
        for t in tasks {
            if let Err(AppError::ResourceExhausted { .. }) = t.await.unwrap() {
                refused += 1;
            }
        }
        assert!(refused > 0, "no request was refused");
    }

    #[tokio::test]
    async fn checks_outside_login_leave_login_a_slot() {
        let h = PasswordHasher::new(2, 64).unwrap();
        let hash = h.hash("correct horse").await.unwrap();
        let others: Vec<_> = (0..3)
            .map(|_| {
                let (h, hash) = (h.clone(), hash.clone());
                tokio::spawn(async move {
                    h.verify(Lane::Other, "correct horse", Some(&hash))
                        .await
                        .unwrap()
                })
            })
            .collect();
        // However the three are scheduled, they never hold Login's slot.
        let mut saw_busy = false;
        while !others.iter().all(|t| t.is_finished()) {
            assert!(
                h.slots.available_permits() >= 1,
                "checks outside Login took every slot"
            );
            saw_busy |= h.others.available_permits() == 0;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(saw_busy, "the other lane never ran");
        for t in others {
            assert!(t.await.unwrap());
        }
        assert!(
            h.verify(Lane::Login, "correct horse", Some(&hash))
                .await
                .unwrap()
        );
    }
}
