//! A history request's range and step, checked once and lined up.

use super::HistorySettings;
use crate::error::{AppError, AppResult};

/// Most steps an answer spans (24 hours of 1-minute points).
pub const MAX_STEPS: i64 = 1440;

/// The time an answer covers, in Unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start of the first step: a multiple of `step`.
    pub start: i64,
    /// The answer's time; the last step ends here.
    pub end: i64,
    /// Width of each point.
    pub step: i64,
    /// Width of the stored points read: the fine or the coarse step.
    pub resolution: i64,
}

impl Window {
    /// The start of the step holding `at`.
    pub fn step_of(&self, at: i64) -> i64 {
        self.start + (at - self.start).div_euclid(self.step) * self.step
    }

    /// How many steps the window spans.
    pub fn steps(&self) -> i64 {
        (self.end - self.start + self.step - 1) / self.step
    }
}

fn duration_ms(d: Option<&prost_types::Duration>, field: &str) -> AppResult<i64> {
    let Some(d) = d else { return Ok(0) };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(AppError::invalid(field, "must not be negative"));
    }
    d.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(d.nanos / 1_000_000)))
        .ok_or_else(|| AppError::invalid(field, "is too long"))
}

/// `a / b` rounded up, for positive numbers.
fn div_up(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

fn human(ms: i64) -> String {
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{} d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

/// The window of a request for the last `range` with points `step` wide
/// (0: chosen) at `now`. INVALID_ARGUMENT for a missing, negative or too
/// long range, and for a step giving more than [`MAX_STEPS`] points.
pub fn window(
    now: i64,
    range: Option<&prost_types::Duration>,
    step: Option<&prost_types::Duration>,
    s: &HistorySettings,
) -> AppResult<Window> {
    let range = duration_ms(range, "range")?;
    let asked = duration_ms(step, "step")?;
    if range <= 0 {
        return Err(AppError::invalid("range", "is required (for example 6 h)"));
    }
    if range > s.coarse_retention_ms() {
        return Err(AppError::invalid(
            "range",
            format!(
                "must be at most {} (history is kept that long)",
                human(s.coarse_retention_ms())
            ),
        ));
    }
    let resolution = if range <= s.fine_retention_ms() {
        s.fine_ms()
    } else {
        s.coarse_ms()
    };
    let round_up = |ms: i64| div_up(ms, resolution).max(1) * resolution;
    let step = if asked == 0 {
        round_up(div_up(range, MAX_STEPS).max(resolution))
    } else {
        let step = round_up(asked);
        if div_up(range, step) > MAX_STEPS {
            return Err(AppError::invalid(
                "step",
                format!(
                    "gives more than {MAX_STEPS} points over {}: use at least {}",
                    human(range),
                    human(round_up(div_up(range, MAX_STEPS)))
                ),
            ));
        }
        step
    };
    Ok(Window {
        start: (now - range).div_euclid(step) * step,
        end: now,
        step,
        resolution,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(seconds: i64) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos: 0 }
    }

    const NOW: i64 = 1_800_000_123_456;

    #[test]
    fn six_and_twenty_four_hours_come_from_minute_points_and_thirty_days_from_hour_points() {
        let s = HistorySettings::default();
        let w = window(NOW, Some(&d(6 * 3600)), None, &s).unwrap();
        assert_eq!((w.step, w.resolution), (60_000, 60_000));
        assert!(w.steps() <= 361, "{}", w.steps());
        let w = window(NOW, Some(&d(24 * 3600)), None, &s).unwrap();
        assert_eq!((w.step, w.resolution), (60_000, 60_000));
        let w = window(NOW, Some(&d(30 * 86400)), None, &s).unwrap();
        assert_eq!((w.step, w.resolution), (3_600_000, 3_600_000));
        assert_eq!(w.start % w.step, 0, "steps line up");
        assert!(w.start <= NOW - 30 * 86_400_000 && w.end == NOW);
    }

    #[test]
    fn a_step_is_rounded_up_to_the_resolution_and_widened_to_at_most_1440_points() {
        let s = HistorySettings::default();
        let w = window(NOW, Some(&d(3600)), Some(&d(90)), &s).unwrap();
        assert_eq!(w.step, 120_000);
        // 25 h fits the fine retention: 1,500 minutes is too many points.
        let w = window(NOW, Some(&d(25 * 3600)), None, &s).unwrap();
        assert_eq!(w.step, 120_000);
        assert!(w.steps() <= MAX_STEPS + 1);
    }

    #[test]
    fn bad_ranges_and_steps_are_invalid_arguments() {
        let s = HistorySettings::default();
        for (range, step, field) in [
            (None, None, "range"),
            (Some(d(0)), None, "range"),
            (Some(d(-5)), None, "range"),
            (Some(d(32 * 86400)), None, "range"),
            (Some(d(25 * 3600)), Some(d(60)), "step"),
            (Some(d(3600)), Some(d(-1)), "step"),
        ] {
            match window(NOW, range.as_ref(), step.as_ref(), &s) {
                Err(AppError::InvalidArgument { violations, .. }) => {
                    assert_eq!(violations[0].field, field)
                }
                other => panic!("{range:?} {step:?}: {other:?}"),
            }
        }
    }
}
