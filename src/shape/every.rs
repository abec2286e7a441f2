//! `every`: a timer merged with the network.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior, interval};

/// Ticks every `period`, the first at once, counting from 0. A tick that comes while the
/// previous one is still being handled is not made up for later: the next one is `period`
/// after it (tokio's [`MissedTickBehavior::Delay`]), so a slow loop is not run back to back.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use arduino::shape::Every;
///
/// let mut every = Every::new(Duration::from_secs(5));
/// assert_eq!(every.tick().await, 0); // at once
/// assert_eq!(every.tick().await, 1); // 5 s later
/// # }
/// ```
#[derive(Debug)]
pub struct Every {
    interval: Interval,
    count: u64,
}

impl Every {
    /// Ticks `period` apart (at least a microsecond), the first at once.
    pub fn new(period: Duration) -> Self {
        let mut timer = interval(period.max(Duration::from_micros(1)));
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            interval: timer,
            count: 0,
        }
    }

    /// The next tick's number. Cancel-safe.
    pub async fn tick(&mut self) -> u64 {
        self.interval.tick().await;
        self.count += 1;
        self.count - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{Instant, advance};

    #[tokio::test(start_paused = true)]
    async fn ticks_on_time_and_never_catches_up() {
        let start = Instant::now();
        let mut every = Every::new(Duration::from_secs(5));
        assert_eq!(every.tick().await, 0);
        assert_eq!(every.tick().await, 1);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        // A loop that took 12 s: one tick now, the next 5 s later, not three at once.
        advance(Duration::from_secs(12)).await;
        assert_eq!(every.tick().await, 2);
        let late = Instant::now();
        assert_eq!(every.tick().await, 3);
        assert_eq!(late.elapsed(), Duration::from_secs(5));
    }
}
