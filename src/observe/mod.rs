//! Watching a node: its events as a live feed (`GET /events`, server-sent events), its counts
//! in Prometheus text format (`GET /metrics`), both answered on the node's own port, and
//! `arduino listen`, which follows the feeds of one or many nodes.
//!
//! - [`feed`]: the [`Feed`], an observer that turns events into JSON lines, only when someone
//!   listens;
//! - [`metrics`]: [`Metrics`], an observer that counts in atomics and renders the exposition;
//! - [`http`]: telling `GET /events` and `GET /metrics` apart from websocket handshakes on an
//!   accepted connection, and answering them;
//! - [`listen`](mod@listen): the client side of the feed, for `arduino listen`.
//!
//! A [`Watch`] bundles a node's feed and metrics: register it as the node's observer, and hand
//! it to [`http::route`] for every accepted connection.

pub mod feed;
pub mod http;
pub mod listen;
pub mod metrics;

use std::sync::Arc;

use crate::events::{Event, Observer};

pub use feed::{Feed, Subscription};
pub use http::{HttpOptions, Route, route};
pub use listen::{Format, NatsSource, Source, listen, listen_with};
pub use metrics::Metrics;

/// What a node shows to those who watch it: its event feed and its metrics. Cheap to clone;
/// clones share everything.
#[derive(Debug, Clone)]
pub struct Watch {
    feed: Feed,
    metrics: Arc<Metrics>,
    secret: Option<Arc<str>>,
    options: HttpOptions,
    /// `/events` streams open now.
    listeners: Arc<std::sync::atomic::AtomicUsize>,
}

/// One `/events` listener counted while it lives.
pub(crate) struct Listening(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Watch {
    /// What the node `node`, streaming to `peers` (by name, as its events name them), shows.
    /// With `secret`, `/events` and `/metrics` need it as `Authorization: Bearer <secret>`.
    pub fn new<'p>(
        node: &str,
        peers: impl IntoIterator<Item = &'p str>,
        secret: Option<&str>,
    ) -> Self {
        Self {
            feed: Feed::new(node, feed::CAPACITY),
            metrics: Arc::new(Metrics::new(peers)),
            secret: secret.map(Arc::from),
            options: HttpOptions::default(),
            listeners: Arc::default(),
        }
    }

    /// Count one more `/events` listener, unless `max_listeners` listen already.
    pub(crate) fn listening(&self) -> Option<Listening> {
        use std::sync::atomic::Ordering;
        let limit = self.options.max_listeners;
        self.listeners
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Listening(self.listeners.clone()))
    }

    /// The same, with other time limits for the HTTP side.
    pub fn with_options(mut self, options: HttpOptions) -> Self {
        self.options = options;
        self
    }

    /// The event feed.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// The counts.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    pub(crate) fn options(&self) -> &HttpOptions {
        &self.options
    }
}

impl Observer for Watch {
    fn observe(&self, node: &str, event: &Event<'_>) {
        self.metrics.observe(node, event);
        self.feed.observe(node, event);
    }
}
