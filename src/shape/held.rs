//! One item held until a time: what debounce and sample share. They differ only in when
//! the item held is due.

use tokio::time::{Instant, sleep_until};

/// At most one item, and when it is due.
#[derive(Debug)]
pub(super) struct Held<T>(Option<(T, Instant)>);

impl<T> Held<T> {
    pub(super) fn new() -> Self {
        Self(None)
    }

    /// Hold `item` until `due`; the item it replaces, if one was held, is handed back.
    pub(super) fn replace(&mut self, item: T, due: Instant) -> Option<T> {
        self.0.replace((item, due)).map(|(old, _)| old)
    }

    /// When the held item is due, if one is held.
    pub(super) fn due(&self) -> Option<Instant> {
        self.0.as_ref().map(|(_, due)| *due)
    }

    /// The held item once it is due; never, while none is held. Cancel-safe: dropped before
    /// it completes, it loses nothing.
    pub(super) async fn ready(&mut self) -> T {
        let Some(due) = self.due() else {
            return std::future::pending().await;
        };
        sleep_until(due).await;
        match self.0.take() {
            Some((item, _)) => item,
            None => std::future::pending().await,
        }
    }

    /// The held item at once, without waiting.
    pub(super) fn take(&mut self) -> Option<T> {
        self.0.take().map(|(item, _)| item)
    }
}
