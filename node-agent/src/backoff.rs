//! Exponential backoff with full jitter: each wait is uniform in
//! `[0, ceiling]`, and the ceiling doubles per failure up to `max`. After a
//! control-plane restart, thousands of agents spread their reconnects over
//! the whole window instead of arriving together.

use std::time::Duration;

use rand::Rng;

/// Backoff state of one connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    /// Starts at `base`, never waits more than `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            ceiling: base,
        }
    }

    /// The ceiling of the next wait.
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// The next wait: uniform in `[0, ceiling]`; the ceiling then doubles
    /// (`min(ceiling * 2, max)`).
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let ms = cap.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }

    /// A wait for when nothing will change soon (a refusal, an expired
    /// certificate): uniform in `[max / 2, max]`, so refused agents neither
    /// hammer the control plane nor retry together.
    pub fn slow_delay(&self) -> Duration {
        let max = self.max.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(max / 2..=max))
    }

    /// Back to the first step, after a connection that worked.
    pub fn reset(&mut self) {
        self.ceiling = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_maximum() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let mut ceilings = vec![];
        for _ in 0..6 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(1000));
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn slow_delays_stay_in_the_upper_half_of_the_maximum() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        for _ in 0..200 {
            let d = b.slow_delay();
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_millis(1000),
                "{d:?}"
            );
        }
    }

    #[test]
    fn delays_are_spread_over_the_whole_window() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
        let delays: Vec<u128> = (0..200).map(|_| b.next_delay().as_millis()).collect();
        let min = *delays.iter().min().unwrap();
        let max = *delays.iter().max().unwrap();
        assert!(min < 2000 && max > 8000, "min {min} max {max}");
    }
}
