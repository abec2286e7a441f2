//! A node's shaped input: the one operator its messages (and ticks) go through, the sketch
//! run on what it releases, and the acks that are owed to connections as a result. The
//! reading and writing of connections stays in `inbound`; see the module docs above for the
//! rules that keep acks in order.

use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::warn;

use super::{Batch, Buffer, Debounce, Policy, Received, SUPERSEDED, Sample, Throttle};
use crate::{
    inbound::Owner,
    message::{Ack, Input, Text},
    runtime::{Report, Stopped, guarded, run_loop},
    shape::Admit,
    sketch::{Context, Sketch},
};

/// A message or a tick, held by the operator, with whom its ack is owed to.
pub(crate) struct Pending {
    owner: Option<Owner>,
    item: Item,
}

enum Item {
    Message(Received),
    Tick(u64),
}

enum Operator {
    Debounce(Debounce<Pending>),
    Sample(Sample<Pending>),
    Throttle(Throttle<Pending>),
    Buffer(Buffer<Pending>),
}

/// What an operator released: one message or tick, or a batch.
pub(crate) enum Released {
    One(Pending),
    Batch(Vec<Pending>),
}

/// What the connection a message came from may do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Go on reading it.
    Read,
    /// Read nothing more from it until its message leaves the throttle's queue.
    Hold,
}

/// A node's input shaping, and the acks it owes, in the order they were settled.
pub(crate) struct Shaper {
    operator: Operator,
    /// Whether the sketch takes batches whole.
    batches: bool,
    /// Acks settled and not yet written, each to the connection that is owed it.
    pub(crate) outbox: Vec<(Owner, Ack)>,
}

impl Shaper {
    pub(crate) fn new<S: Sketch>(policy: &Policy) -> Self {
        let operator = match *policy {
            Policy::Debounce(quiet) => Operator::Debounce(Debounce::new(quiet)),
            Policy::Sample(period) => Operator::Sample(Sample::new(period)),
            Policy::Throttle { rate, burst, queue } => {
                Operator::Throttle(Throttle::new(rate, burst, queue))
            }
            Policy::Buffer { count, within } => Operator::Buffer(Buffer::new(count, within)),
        };
        Self {
            operator,
            batches: S::TAKES_BATCHES,
            outbox: Vec::new(),
        }
    }

    /// Put a message that connection `owner` sent through the operator: it is held, handled
    /// now, superseded or refused, and the acks this settles go to the outbox.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn offer<S: Sketch>(
        &mut self,
        owner: Owner,
        channel: &str,
        text: Utf8Bytes,
        sketch: &mut S,
        ctx: &mut Context,
        stopped: Stopped<'_, '_>,
        report: &mut Report,
    ) -> Offered {
        let pending = Pending {
            owner: Some(owner),
            item: Item::Message(Received {
                channel: channel.to_owned(),
                text: Text(text),
            }),
        };
        match &mut self.operator {
            Operator::Debounce(debounce) => {
                let superseded = debounce.push(pending);
                self.supersede(superseded);
            }
            Operator::Sample(sample) => {
                let superseded = sample.push(pending);
                self.supersede(superseded);
            }
            Operator::Throttle(throttle) => match throttle.push(pending) {
                Admit::Now(pending) => self.handle_one(pending, sketch, ctx, stopped, report).await,
                Admit::Queued => return Offered::Hold,
                Admit::Refused(pending) => {
                    if let Some(owner) = pending.owner {
                        let ack = Ack::error(
                            "over the node's throttle (too many messages a second, and its \
                             queue is full): send it again later",
                        );
                        self.outbox.push((owner, ack));
                    }
                }
            },
            Operator::Buffer(buffer) => {
                if let Some(batch) = buffer.push(pending) {
                    self.handle_batch(batch, sketch, ctx, stopped, report).await;
                }
            }
        }
        Offered::Read
    }

    /// Put timer tick `n` through the operator, when it shapes ticks (debounce and sample do;
    /// throttle and buffer leave them alone). False: run the tick as it is.
    pub(crate) fn offer_tick(&mut self, n: u64) -> bool {
        let pending = Pending {
            owner: None,
            item: Item::Tick(n),
        };
        let superseded = match &mut self.operator {
            Operator::Debounce(debounce) => debounce.push(pending),
            Operator::Sample(sample) => sample.push(pending),
            Operator::Throttle(_) | Operator::Buffer(_) => return false,
        };
        self.supersede(superseded);
        true
    }

    fn supersede(&mut self, superseded: Option<Pending>) {
        if let Some(Pending {
            owner: Some(owner), ..
        }) = superseded
        {
            self.outbox.push((owner, SUPERSEDED));
        }
    }

    /// What the operator releases next, when its time comes. Cancel-safe.
    pub(crate) async fn released(&mut self) -> Released {
        match &mut self.operator {
            Operator::Debounce(debounce) => Released::One(debounce.ready().await),
            Operator::Sample(sample) => Released::One(sample.ready().await),
            Operator::Throttle(throttle) => Released::One(throttle.ready().await),
            Operator::Buffer(buffer) => Released::Batch(buffer.ready().await),
        }
    }

    /// Run the sketch on what was released; acks go to the outbox. Returns the connection to
    /// read again, for a message that left a throttle's queue.
    pub(crate) async fn handle<S: Sketch>(
        &mut self,
        released: Released,
        sketch: &mut S,
        ctx: &mut Context,
        stopped: Stopped<'_, '_>,
        report: &mut Report,
    ) -> Option<Owner> {
        match released {
            Released::One(pending) => {
                let resume = match self.operator {
                    Operator::Throttle(_) => pending.owner.clone(),
                    _ => None,
                };
                self.handle_one(pending, sketch, ctx, stopped, report).await;
                resume
            }
            Released::Batch(batch) => {
                self.handle_batch(batch, sketch, ctx, stopped, report).await;
                None
            }
        }
    }

    async fn handle_one<S: Sketch>(
        &mut self,
        pending: Pending,
        sketch: &mut S,
        ctx: &mut Context,
        stopped: Stopped<'_, '_>,
        report: &mut Report,
    ) {
        match pending.item {
            Item::Message(received) => {
                let input = Input::Message {
                    channel: &received.channel,
                    text: received.text.as_str(),
                };
                let ack = run_loop(sketch, ctx, input, stopped).await;
                if let Some(owner) = pending.owner {
                    self.outbox.push((owner, ack));
                }
            }
            Item::Tick(n) => {
                let ack = run_loop(sketch, ctx, Input::Tick(n), stopped).await;
                if let Some(reason) = ack.error_reason() {
                    report.ticks_failed += 1;
                    warn!(tick = n, "tick {n} failed: {reason}");
                }
            }
        }
    }

    /// A complete batch: whole to a sketch that takes batches (every message gets its ack),
    /// else one message at a time, in order, each with its own ack.
    async fn handle_batch<S: Sketch>(
        &mut self,
        batch: Vec<Pending>,
        sketch: &mut S,
        ctx: &mut Context,
        mut stopped: Stopped<'_, '_>,
        report: &mut Report,
    ) {
        if !self.batches {
            for pending in batch {
                self.handle_one(pending, sketch, ctx, stopped.as_mut(), report)
                    .await;
            }
            return;
        }
        let mut owners = Vec::with_capacity(batch.len());
        let mut messages = Vec::with_capacity(batch.len());
        for pending in batch {
            if let Item::Message(received) = pending.item {
                owners.push(pending.owner);
                messages.push(received);
            }
        }
        let ack = run_batch(sketch, ctx, Batch::new(&messages), stopped).await;
        for owner in owners.into_iter().flatten() {
            self.outbox.push((owner, ack.clone()));
        }
    }

    /// Everything held, at once: the node stops. Returns whom acks are owed to, in order.
    pub(crate) fn drain(&mut self) -> Vec<Owner> {
        let held: Vec<Pending> = match &mut self.operator {
            Operator::Debounce(debounce) => debounce.take().into_iter().collect(),
            Operator::Sample(sample) => sample.take().into_iter().collect(),
            Operator::Throttle(throttle) => throttle.drain().collect(),
            Operator::Buffer(buffer) => buffer.take(),
        };
        held.into_iter()
            .filter_map(|pending| pending.owner)
            .collect()
    }
}

/// What the input operator releases next; never, for a node without one.
pub(crate) async fn released(shaper: &mut Option<Shaper>) -> Released {
    match shaper {
        Some(shaper) => shaper.released().await,
        None => std::future::pending().await,
    }
}

/// Run the sketch's batch hook, as `run_loop` runs its loop: a panic becomes an `error: ` ack,
/// and a stop gives the batch a short grace.
async fn run_batch<S: Sketch>(
    sketch: &mut S,
    ctx: &mut Context,
    batch: Batch<'_>,
    stopped: Stopped<'_, '_>,
) -> Ack {
    guarded(sketch.loop_batch(ctx, batch), stopped)
        .await
        .unwrap_or_else(|_| Ack::error("the sketch panicked on a batch"))
}
