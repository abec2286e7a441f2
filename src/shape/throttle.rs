//! `throttle`: a rate limit that lets through, queues, or refuses; it never drops in silence.

use std::{collections::VecDeque, time::Duration};

use tokio::time::{Instant, sleep_until};

/// What [`Throttle::push`] did with an item.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<T> {
    /// Within the limit: handle it now.
    Now(T),
    /// Over the limit, but there was room to wait: [`Throttle::ready`] releases it in turn.
    Queued,
    /// Over the limit with the queue full: refuse it.
    Refused(T),
}

/// At most `rate` items a second, with bursts of up to `burst` at once; an item over the
/// limit waits in a queue of `queue` places (first come, first served) or, when that is
/// full, is refused. Nothing is ever dropped without the caller being told: this is a rate
/// limit, not Node-RED's "drop intermediate messages".
///
/// The limit is a token bucket kept as one instant (GCRA): a bucket of `burst` tokens refills
/// one token every `1 / rate` seconds.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use arduino::shape::{Admit, Throttle};
///
/// let mut throttle = Throttle::new(2.0, 1, 1); // 2 a second, one may wait
/// assert_eq!(throttle.push("a"), Admit::Now("a"));
/// assert_eq!(throttle.push("b"), Admit::Queued);
/// assert_eq!(throttle.push("c"), Admit::Refused("c"));
/// assert_eq!(throttle.ready().await, "b"); // half a second after "a"
/// # }
/// ```
#[derive(Debug)]
pub struct Throttle<T> {
    interval: Duration,
    tolerance: Duration,
    /// When the bucket is full again: the theoretical arrival time of GCRA.
    full_at: Instant,
    queue: VecDeque<T>,
    capacity: usize,
}

impl<T> Throttle<T> {
    /// A throttle of `rate` items a second (a positive number; out-of-range values are brought
    /// to a microsecond or a day between items), bursts of `burst` (at least 1) and a queue
    /// of `queue` places (0: refuse at once). The queue's memory is taken now, not per item.
    pub fn new(rate: f64, burst: u32, queue: usize) -> Self {
        let seconds = if rate > 0.0 { 1.0 / rate } else { 86_400.0 };
        let interval = Duration::try_from_secs_f64(seconds.clamp(1e-6, 86_400.0))
            .unwrap_or(Duration::from_secs(1));
        Self {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
            full_at: Instant::now(),
            queue: VecDeque::with_capacity(queue),
            capacity: queue,
        }
    }

    /// When the next item may pass, given the bucket now.
    fn next_free(&self, now: Instant) -> Instant {
        self.full_at
            .max(now)
            .checked_sub(self.tolerance)
            .unwrap_or(now)
            .max(now)
    }

    /// Take a token: the bucket's state after an item passes at `now`.
    fn spend(&mut self, now: Instant) {
        self.full_at = self.full_at.max(now) + self.interval;
    }

    /// Admit `item` now, queue it, or refuse it. Items never overtake queued ones.
    pub fn push(&mut self, item: T) -> Admit<T> {
        let now = Instant::now();
        if self.queue.is_empty() && self.next_free(now) <= now {
            self.spend(now);
            return Admit::Now(item);
        }
        if self.queue.len() < self.capacity {
            self.queue.push_back(item);
            return Admit::Queued;
        }
        Admit::Refused(item)
    }

    /// How many items wait.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// When the first queued item may pass, if one waits.
    pub fn due(&self) -> Option<Instant> {
        (!self.queue.is_empty()).then(|| self.next_free(Instant::now()))
    }

    /// The first queued item, once the limit lets it pass; never, while none waits.
    /// Cancel-safe: dropped before it completes, it loses nothing.
    pub async fn ready(&mut self) -> T {
        let Some(due) = self.due() else {
            return std::future::pending().await;
        };
        sleep_until(due).await;
        self.spend(Instant::now());
        match self.queue.pop_front() {
            Some(item) => item,
            None => std::future::pending().await,
        }
    }

    /// Take every queued item at once, first first, without waiting.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.queue.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{advance, timeout};

    #[tokio::test(start_paused = true)]
    async fn passes_a_burst_then_one_per_interval() {
        let start = Instant::now();
        let mut throttle = Throttle::new(10.0, 3, 0);
        let admitted: Vec<_> = (0..5).map(|n| throttle.push(n)).collect();
        assert_eq!(
            admitted,
            [
                Admit::Now(0),
                Admit::Now(1),
                Admit::Now(2),
                Admit::Refused(3),
                Admit::Refused(4)
            ]
        );
        advance(Duration::from_millis(100)).await;
        assert_eq!(throttle.push(5), Admit::Now(5));
        assert_eq!(throttle.push(6), Admit::Refused(6));
        // Quiet refills the bucket, up to the burst and no more.
        advance(Duration::from_secs(10)).await;
        let passed = (0..10)
            .filter(|&n| matches!(throttle.push(n), Admit::Now(_)))
            .count();
        assert_eq!(passed, 3);
        assert_eq!(start.elapsed(), Duration::from_millis(10_100));
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_waits_in_turn_and_bounds_memory() {
        let start = Instant::now();
        let mut throttle = Throttle::new(10.0, 1, 2);
        assert_eq!(throttle.push(0), Admit::Now(0));
        assert_eq!(throttle.push(1), Admit::Queued);
        assert_eq!(throttle.push(2), Admit::Queued);
        // A flood: refused, never held.
        for n in 3..100_000 {
            assert_eq!(throttle.push(n), Admit::Refused(n));
        }
        assert_eq!(throttle.queued(), 2);
        assert_eq!(throttle.ready().await, 1);
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        // An item that comes while others wait queues behind them, even if a token is free.
        assert_eq!(throttle.push(3), Admit::Queued);
        assert_eq!(throttle.ready().await, 2);
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        assert_eq!(throttle.ready().await, 3);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert!(
            timeout(Duration::from_secs(5), throttle.ready())
                .await
                .is_err()
        );
    }

    #[test]
    fn any_rate_makes_a_throttle() {
        let _runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _enter = _runtime.enter();
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-300, 1e300] {
            let mut throttle = Throttle::new(rate, u32::MAX, 0);
            assert_eq!(throttle.push(1), Admit::Now(1));
        }
    }
}
