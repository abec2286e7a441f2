//! `sample`: keep the newest, hand it over on a beat.

use std::time::Duration;

use tokio::time::Instant;

use super::held::Held;

/// On a steady beat of `period` (counted from when the sample was made), releases the newest
/// item that arrived since the last beat; an item that a newer one replaced before the beat
/// is handed back, *superseded*. A beat with nothing new releases nothing. Holds at most one
/// item: Rx's `sample`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use arduino::shape::Sample;
///
/// let mut sample = Sample::new(Duration::from_millis(500));
/// assert_eq!(sample.push("a"), None);
/// assert_eq!(sample.push("b"), Some("a"));
/// assert_eq!(sample.ready().await, "b"); // on the beat, 500 ms after the sample was made
/// # }
/// ```
#[derive(Debug)]
pub struct Sample<T> {
    period: Duration,
    start: Instant,
    held: Held<T>,
}

impl<T> Sample<T> {
    /// A sample that beats every `period` (at least a microsecond), from now.
    pub fn new(period: Duration) -> Self {
        Self {
            period: period.max(Duration::from_micros(1)),
            start: Instant::now(),
            held: Held::new(),
        }
    }

    /// Hold `item` for the next beat; the item it replaces, if one was held, is handed back.
    pub fn push(&mut self, item: T) -> Option<T> {
        let due = match self.held.due() {
            Some(due) => due,
            None => self.next_beat(Instant::now()),
        };
        self.held.replace(item, due)
    }

    /// The first beat strictly after `now`.
    fn next_beat(&self, now: Instant) -> Instant {
        let since = now.saturating_duration_since(self.start).as_nanos();
        let period = self.period.as_nanos();
        let beats = since / period + 1;
        let offset = period.saturating_mul(beats);
        let offset = Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX));
        self.start
            .checked_add(offset)
            .unwrap_or_else(|| super::after(Duration::MAX))
    }

    /// When the held item will be released, if one is held.
    pub fn due(&self) -> Option<Instant> {
        self.held.due()
    }

    /// The held item, on the beat after it arrived; never, while none is held.
    /// Cancel-safe: dropped before it completes, it loses nothing.
    pub async fn ready(&mut self) -> T {
        self.held.ready().await
    }

    /// Take the held item at once, without waiting.
    pub fn take(&mut self) -> Option<T> {
        self.held.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{advance, timeout};

    const PERIOD: Duration = Duration::from_millis(500);

    #[tokio::test(start_paused = true)]
    async fn releases_the_newest_on_each_beat() {
        let start = Instant::now();
        let mut sample = Sample::new(PERIOD);
        advance(Duration::from_millis(100)).await;
        assert_eq!(sample.push(1), None);
        advance(Duration::from_millis(100)).await;
        assert_eq!(sample.push(2), Some(1));
        assert_eq!(sample.ready().await, 2);
        assert_eq!(start.elapsed(), PERIOD);
        // A quiet beat releases nothing; the next item goes out on the beat after it came.
        advance(Duration::from_millis(700)).await;
        assert_eq!(sample.push(3), None);
        assert_eq!(sample.ready().await, 3);
        assert_eq!(start.elapsed(), 3 * PERIOD);
        assert!(timeout(10 * PERIOD, sample.ready()).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn unlike_debounce_a_steady_stream_still_gets_through() {
        let start = Instant::now();
        let mut sample = Sample::new(PERIOD);
        let mut released = Vec::new();
        let mut superseded = 0;
        // One item every 100 ms for 2 s: a debounce of 500 ms would release nothing.
        for n in 0..20 {
            superseded += usize::from(sample.push(n).is_some());
            advance(Duration::from_millis(100)).await;
            if sample.due().is_some_and(|due| due <= Instant::now()) {
                released.push(sample.ready().await);
            }
        }
        assert_eq!(released, [4, 9, 14, 19]);
        assert_eq!(superseded, 16);
        assert_eq!(start.elapsed(), 4 * PERIOD);
    }
}
