//! Timing operators for a node's input (`[node.input]` in the mesh file): [`Every`],
//! [`Debounce`], [`Sample`], [`Throttle`] and [`Buffer`], each a small type over
//! `tokio::time`, usable on their own from Rust, and [`Shape`], what a node is given.
//!
//! # The operators, and their policy in plain words
//!
//! - `every`: *also run on a timer*. The loop runs on a tick every so often, as well as on
//!   messages: the timer and the network merged (Rx's `merge` with `interval`).
//! - `debounce`: *wait for quiet, keep the last*. A message is handled once a quiet time
//!   passes with no newer one; a newer one takes its place and restarts the wait.
//! - `sample`: *keep the newest, on a beat*. Every period, the newest message that came since
//!   the last beat is handled; the ones it replaced are not. Unlike debounce, a steady stream
//!   still gets through, once a beat.
//! - `throttle`: *rate limit; wait in a queue or be refused, never dropped in silence*. At
//!   most N messages a second (bursts of `burst`); one over the limit waits in a queue of
//!   `queue` places, or is refused when that is full (Node-RED's "rate limit" with "queue",
//!   not its "drop intermediate messages").
//! - `buffer`: *group*. Messages are handed over in batches of `buffer`, or what came within
//!   `within` seconds of a batch's first message.
//!
//! # What each message's acknowledgement says
//!
//! Every message gets exactly one ack, in order on its connection: the sketch's ack once it
//! was handled (a batch's messages all get the batch's ack, when the sketch takes batches;
//! otherwise each is handed over on its own once the batch is complete, and gets its own);
//! [`SUPERSEDED`] when a newer message took its place (debounce, sample), which is not an
//! error; `error: ...` when it was refused (over a throttle's limit with its queue full) or
//! when the node stopped before its turn.
//!
//! # How they compose
//!
//! `every` goes with anything. Of `debounce`, `sample`, `throttle` and `buffer`, a node takes
//! one: each decides alone when a message reaches the sketch, and chained, a message would be
//! held twice with two owners for its one ack (a debounce after a buffer would supersede whole
//! batches). The mesh file refuses two of them at load, saying so. Ticks go through debounce
//! and sample (the seed's "merged stream, debounced": a message and a tick close together run
//! the loop once); they are never throttled (a timer is the node's own pace, not a sender to
//! refuse) nor batched (a tick carries no message).
//!
//! # Holding messages, reading connections, and acks in order
//!
//! A node reads a connection only while the acks it owes can still leave in order. An
//! operator that holds messages must keep reading, or a single pipelining sender could never
//! supersede its own message nor fill a batch; so the bound on memory moves from "one message
//! in hand" to the operator's own bound, and the rule for each is:
//!
//! - debounce, sample: the connection keeps being read. A held message is always the newest
//!   one read from its connection (the next one supersedes it, and its `superseded` goes out
//!   at once), so a connection owes at most one held ack, at the front of its queue: acks stay
//!   in order. One message is held per node, whatever the senders do.
//! - buffer: the connection keeps being read. A batch is handled as a whole, in arrival
//!   order, before the next batch: each connection's acks leave in the order its messages
//!   came. One batch (at most `buffer` messages) is held per node.
//! - throttle: a message within the limit is handled at once. One that is queued holds its
//!   connection: that connection is not read again until the message leaves the queue, so no
//!   later message of it can be answered (or refused) before it. At most `queue` messages
//!   are held per node, one per connection; a single sender is paced, not refused.
//!
//! Acks a shaped node owes to any connection go out after the message that settled them is
//! read (a superseding message, a batch completed), or when a timer releases a message. The
//! sender of a held message that goes away loses its ack, not its message: the sketch still
//! handles it. When the node stops, every held message is answered `error: the node is
//! stopping`. A node without `[node.input]` runs none of this: its read loop is the plain one.

mod buffer;
mod debounce;
mod every;
mod held;
pub(crate) mod node;
mod sample;
mod throttle;

use std::time::Duration;

pub use buffer::Buffer;
pub use debounce::Debounce;
pub use every::Every;
pub use sample::Sample;
pub use throttle::{Admit, Throttle};

use crate::message::{Ack, Text};

/// `wait` from now, or a far future for a wait too long to represent (no panic, whatever the
/// duration a caller gives).
pub(crate) fn after(wait: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    let now = tokio::time::Instant::now();
    now.checked_add(wait.min(FAR)).unwrap_or(now)
}

/// The ack of a message that a newer one took the place of (debounce, sample). Not an error:
/// the newer message carries what it meant.
pub const SUPERSEDED: Ack = Ack::from_static("superseded");

/// How a node's input is shaped: the `[node.input]` table of the mesh file, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Also run the loop on a tick this often.
    pub every: Option<Duration>,
    /// The one operator messages go through, if any.
    pub policy: Option<Policy>,
}

/// The operator a node's messages go through before its sketch; see the [module](self) docs.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// Handle a message once this long passes with no newer one.
    Debounce(Duration),
    /// Every period, handle the newest message that came.
    Sample(Duration),
    /// At most `rate` messages a second.
    Throttle {
        /// Messages a second.
        rate: f64,
        /// How many may pass at once after a quiet time.
        burst: u32,
        /// How many may wait for their turn before more are refused.
        queue: usize,
    },
    /// Batches of `count`, or fewer after `within`.
    Buffer {
        /// The most messages in a batch.
        count: usize,
        /// How long a batch waits for more after its first message.
        within: Option<Duration>,
    },
}

/// A message as a sketch gets it in a batch: the channel it came on, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The path its sender connected to, such as `/datafeed`.
    pub channel: String,
    /// The message itself.
    pub text: Text,
}

/// A `buffer`'s batch, as a sketch that takes batches gets it ([`Sketch::loop_batch`]): the
/// messages in the order they came, from any number of connections.
///
/// [`Sketch::loop_batch`]: crate::Sketch::loop_batch
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    messages: &'a [Received],
}

impl<'a> Batch<'a> {
    /// A batch of `messages`, for a sketch's own tests.
    pub fn new(messages: &'a [Received]) -> Self {
        Self { messages }
    }

    /// How many messages it holds (at least one, when the runtime hands it over).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The messages, in the order they came.
    pub fn messages(&self) -> &'a [Received] {
        self.messages
    }

    /// The texts, in the order they came.
    pub fn texts(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.messages.iter().map(|message| message.text.as_str())
    }
}
