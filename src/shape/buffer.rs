//! `buffer`: group items into batches, by count and by time.

use std::time::Duration;

use tokio::time::{Instant, sleep_until};

/// Groups items into batches of `count`, or fewer when `within` has passed since the first
/// item of the batch. Holds one batch, at most `count` items: Rx's `buffer_with_count` and
/// `buffer_with_time` in one, except that the time counts from a batch's first item, so that
/// no empty batch is ever released.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use arduino::shape::Buffer;
///
/// let mut buffer = Buffer::new(3, Some(Duration::from_secs(1)));
/// assert_eq!(buffer.push('a'), None);
/// assert_eq!(buffer.push('b'), None);
/// assert_eq!(buffer.push('c'), Some(vec!['a', 'b', 'c']));
/// buffer.push('d');
/// assert_eq!(buffer.ready().await, ['d']); // a second after 'd'
/// # }
/// ```
#[derive(Debug)]
pub struct Buffer<T> {
    count: usize,
    within: Option<Duration>,
    batch: Vec<T>,
    due: Option<Instant>,
}

impl<T> Buffer<T> {
    /// Batches of `count` items (at least 1), or what came within `within` of a batch's first.
    pub fn new(count: usize, within: Option<Duration>) -> Self {
        Self {
            count: count.max(1),
            within,
            batch: Vec::new(),
            due: None,
        }
    }

    /// Add `item` to the batch; the batch, once it has `count` items.
    pub fn push(&mut self, item: T) -> Option<Vec<T>> {
        if self.batch.is_empty() {
            self.batch.reserve_exact(self.count);
            self.due = self.within.map(super::after);
        }
        self.batch.push(item);
        (self.batch.len() >= self.count).then(|| self.take())
    }

    /// How many items the batch holds.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// When the batch will be released by time, if it holds anything and has a `within`.
    pub fn due(&self) -> Option<Instant> {
        self.due.filter(|_| !self.batch.is_empty())
    }

    /// The batch, once `within` has passed since its first item; never without a `within`
    /// or while the batch is empty. Cancel-safe: dropped before it completes, it loses nothing.
    pub async fn ready(&mut self) -> Vec<T> {
        let Some(due) = self.due() else {
            return std::future::pending().await;
        };
        sleep_until(due).await;
        self.take()
    }

    /// Take the batch as it is, at once (maybe empty).
    pub fn take(&mut self) -> Vec<T> {
        self.due = None;
        std::mem::take(&mut self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{advance, timeout};

    #[tokio::test(start_paused = true)]
    async fn batches_by_count() {
        let mut buffer = Buffer::new(3, None);
        let batches: Vec<_> = (0..7).filter_map(|n| buffer.push(n)).collect();
        assert_eq!(batches, [vec![0, 1, 2], vec![3, 4, 5]]);
        assert_eq!(buffer.len(), 1);
        // Without `within`, a partial batch waits for company.
        assert!(
            timeout(Duration::from_secs(3600), buffer.ready())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn batches_by_time_from_the_first_item() {
        let start = Instant::now();
        let mut buffer = Buffer::new(100, Some(Duration::from_secs(1)));
        assert!(
            timeout(Duration::from_secs(5), buffer.ready())
                .await
                .is_err()
        );
        let first = Instant::now();
        buffer.push(1);
        advance(Duration::from_millis(600)).await;
        buffer.push(2);
        assert_eq!(buffer.ready().await, [1, 2]);
        assert_eq!(first.elapsed(), Duration::from_secs(1));
        buffer.push(3);
        assert_eq!(buffer.ready().await, [3]);
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_holds_at_most_one_batch() {
        let mut buffer = Buffer::new(10, Some(Duration::from_secs(1)));
        let mut most = 0;
        for n in 0..100_000 {
            if let Some(batch) = buffer.push(n) {
                assert_eq!(batch.len(), 10);
            }
            most = most.max(buffer.len());
        }
        assert_eq!(most, 9);
    }
}
