//! `debounce`: wait for quiet, keep the last.

use std::time::Duration;

use tokio::time::Instant;

use super::held::Held;

/// Holds the newest item until `quiet` passes with no newer one, then releases it. A newer
/// item takes the held one's place (it is handed back, *superseded*) and restarts the wait.
/// Holds at most one item, whatever comes in: Rx's `debounce`, trailing edge.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use arduino::shape::Debounce;
///
/// let mut debounce = Debounce::new(Duration::from_millis(200));
/// assert_eq!(debounce.push("a"), None);
/// assert_eq!(debounce.push("b"), Some("a")); // "a" is superseded
/// assert_eq!(debounce.ready().await, "b"); // 200 ms after "b"
/// # }
/// ```
#[derive(Debug)]
pub struct Debounce<T> {
    quiet: Duration,
    held: Held<T>,
}

impl<T> Debounce<T> {
    /// A debounce that releases an item once `quiet` has passed with no newer one.
    pub fn new(quiet: Duration) -> Self {
        Self {
            quiet,
            held: Held::new(),
        }
    }

    /// Hold `item`, now; the item it supersedes, if one was held, is handed back.
    pub fn push(&mut self, item: T) -> Option<T> {
        self.held.replace(item, super::after(self.quiet))
    }

    /// When the held item will be released, if one is held.
    pub fn due(&self) -> Option<Instant> {
        self.held.due()
    }

    /// The held item, once its quiet time has passed; never, while none is held.
    /// Cancel-safe: dropped before it completes, it loses nothing.
    pub async fn ready(&mut self) -> T {
        self.held.ready().await
    }

    /// Take the held item at once, without waiting (the node stops, say).
    pub fn take(&mut self) -> Option<T> {
        self.held.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{advance, timeout};

    const QUIET: Duration = Duration::from_millis(200);

    #[tokio::test(start_paused = true)]
    async fn releases_the_last_item_after_quiet() {
        let start = Instant::now();
        let mut debounce = Debounce::new(QUIET);
        assert_eq!(debounce.push(1), None);
        advance(Duration::from_millis(150)).await;
        assert_eq!(debounce.push(2), Some(1));
        advance(Duration::from_millis(150)).await;
        assert_eq!(debounce.push(3), Some(2));
        assert_eq!(debounce.ready().await, 3);
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        // Nothing held: nothing comes, however long one waits.
        assert!(
            timeout(Duration::from_secs(60), debounce.ready())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_holds_one_item() {
        let mut debounce = Debounce::new(QUIET);
        let superseded = (0..100_000).filter_map(|n| debounce.push(n)).count();
        assert_eq!(superseded, 99_999);
        assert_eq!(debounce.ready().await, 99_999);
    }

    #[tokio::test(start_paused = true)]
    async fn any_duration_is_no_panic() {
        let mut debounce = Debounce::new(Duration::MAX);
        debounce.push(1);
        assert!(
            timeout(Duration::from_secs(3600), debounce.ready())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_is_cancel_safe() {
        let mut debounce = Debounce::new(QUIET);
        debounce.push("x");
        assert!(timeout(QUIET / 2, debounce.ready()).await.is_err());
        assert_eq!(debounce.ready().await, "x");
    }
}
