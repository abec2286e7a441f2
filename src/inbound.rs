//! A node's inbound connections, all served by the node task: which connection has input, its
//! messages through the sketch, and its acks written back without the node ever waiting on one
//! client's socket.
//!
//! Each connection is polled with a waker of its own that, when woken, queues the connection's
//! slot on a ready list (what `FuturesUnordered` does, minus its allocation per poll). Writes
//! are never awaited: acks are fed, then flushed as far as the socket takes them now. A
//! connection that cannot take its acks is not read any further (so it cannot make the node
//! hold more), is woken by its own write readiness, and is dropped once it stays that way past
//! the node's write timeout.

use std::{
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Poll, Wake, Waker},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    sync::{OwnedSemaphorePermit, mpsc},
    time::{Instant, Sleep, sleep, timeout},
};
use tokio_tungstenite::tungstenite::{
    self, Message,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

use crate::{
    client,
    events::{Event, Events},
    message::{Ack, Input},
    runtime::{Halt, Report, Stopped, run_loop},
    shape::node::{Offered, Released, Shaper, released},
    sketch::{Context, Sketch},
    wire::{Accepted, Origin, Wire},
};

/// How many messages one connection may have handled in a row before the others get a turn.
/// Also the most acks a connection can owe: it is read no further until they are written.
const FAIR_SHARE: usize = 64;
/// When the node stops, how many messages already received on one connection are answered
/// `error: the node is stopping` before its close frame.
const STOP_ANSWERS: usize = 4 * FAIR_SHARE;
/// When the node stops, how long its clients have to take their last acks and close frames.
const CLOSE_GRACE: Duration = Duration::from_millis(200);
/// The longest a close frame's reason may be (RFC 6455: 125 bytes of payload, 2 for the code).
const MAX_CLOSE_REASON: usize = 123;

/// The node's inbound connections, in slots, and the list of slots that may have work.
pub(crate) struct Inbound {
    slots: Vec<Option<Connection>>,
    free: Vec<usize>,
    ready_tx: mpsc::UnboundedSender<usize>,
    ready_rx: mpsc::UnboundedReceiver<usize>,
    write_timeout: Duration,
    watchdog: Watchdog,
    events: Events,
    /// The node's `[node.input]` operator; none for a plain node, which never looks at it.
    shaper: Option<Shaper>,
}

struct Connection {
    ws: Wire,
    client: Origin,
    channel: String,
    wake: Arc<SlotWake>,
    waker: Waker,
    /// Acks were fed since the last flush that completed.
    owed: bool,
    /// Since when the connection has not taken what it owes (a flush came back pending).
    unwritable_since: Option<Instant>,
    /// The connection is ending: its close frame is queued, and this is logged once it is out.
    closing: Option<(String, bool)>,
    /// Its message waits in the throttle's queue: it is read no further until that is done.
    held: bool,
    _permit: OwnedSemaphorePermit,
}

/// The connection a held message came from, to answer it later: its slot, and which
/// connection that was (a slot is reused once its connection ends).
#[derive(Clone)]
pub(crate) struct Owner {
    slot: usize,
    wake: Arc<SlotWake>,
    /// When its message was read: a held message's ack says how long it was held too.
    read_at: std::time::Instant,
}

struct SlotWake {
    slot: usize,
    queued: AtomicBool,
    ready_tx: mpsc::UnboundedSender<usize>,
}

impl Wake for SlotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            // The receiver lives as long as the node task; after that nobody listens.
            let _ = self.ready_tx.send(self.slot);
        }
    }
}

/// One timer for all connections that cannot take their acks, set to the earliest deadline.
/// Deadlines come in the order connections get stuck (the write timeout is the same for all),
/// so the earliest is the first one armed.
struct Watchdog {
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl Watchdog {
    fn arm(&mut self, since: Instant, write_timeout: Duration) {
        if self.armed {
            return;
        }
        // A deadline past the end of time never fires.
        if let Some(deadline) = since.checked_add(write_timeout) {
            self.sleep.as_mut().reset(deadline);
            self.armed = true;
        }
    }
}

/// What the node task should do next for its connections.
pub(crate) enum Work {
    /// Serve the connection in this slot.
    Ready(usize),
    /// Drop the connections stuck past the write timeout.
    Sweep,
    /// The input operator released a message, a tick or a batch.
    Released(Released),
}

/// How a connection ended, for the log and the close frame.
enum Ending {
    Normal(&'static str),
    Close(CloseCode, String),
    Broken(String),
}

impl Inbound {
    pub(crate) fn new(write_timeout: Duration, events: Events) -> Self {
        let (ready_tx, ready_rx) = mpsc::unbounded_channel();
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            ready_tx,
            ready_rx,
            write_timeout,
            watchdog: Watchdog {
                sleep: Box::pin(sleep(Duration::ZERO)),
                armed: false,
            },
            events,
            shaper: None,
        }
    }

    /// Put the node's messages through `shaper` before its sketch.
    pub(crate) fn shape(&mut self, shaper: Shaper) {
        self.shaper = Some(shaper);
    }

    pub(crate) async fn next(&mut self) -> Option<Work> {
        tokio::select! {
            biased;
            slot = self.ready_rx.recv() => slot.map(Work::Ready),
            () = &mut self.watchdog.sleep, if self.watchdog.armed => Some(Work::Sweep),
            released = released(&mut self.shaper), if self.shaper.is_some() => {
                Some(Work::Released(released))
            }
        }
    }

    /// Put timer tick `n` through the input operator; false when it does not shape ticks.
    pub(crate) fn offer_tick(&mut self, n: u64) -> bool {
        self.shaper
            .as_mut()
            .is_some_and(|shaper| shaper.offer_tick(n))
    }

    /// Run the sketch on what the input operator released, and answer whom it settles.
    pub(crate) async fn release<S: Sketch>(
        &mut self,
        released: Released,
        sketch: &mut S,
        ctx: &mut Context,
        report: &mut Report,
        stopped: Stopped<'_, '_>,
    ) {
        let Some(shaper) = &mut self.shaper else {
            return;
        };
        let resume = shaper.handle(released, sketch, ctx, stopped, report).await;
        self.deliver(report);
        // A connection whose message left the throttle's queue is read again.
        if let Some(owner) = resume
            && let Some(Some(conn)) = self.slots.get_mut(owner.slot)
            && Arc::ptr_eq(&conn.wake, &owner.wake)
        {
            conn.held = false;
            conn.wake.wake_by_ref();
        }
    }

    /// Write the acks the input operator has settled, each on its own connection, as far as
    /// the socket takes them now (the rest goes when it can take more, as for any ack).
    fn deliver(&mut self, report: &mut Report) {
        let Some(shaper) = &mut self.shaper else {
            return;
        };
        let mut outbox = std::mem::take(&mut shaper.outbox);
        for (owner, ack) in outbox.drain(..) {
            report.handled += 1;
            let Some(Some(conn)) = self.slots.get_mut(owner.slot) else {
                continue;
            };
            // Its sender went away (and the slot may serve another): the ack has nobody to go to.
            if !Arc::ptr_eq(&conn.wake, &owner.wake) || conn.closing.is_some() {
                continue;
            }
            self.events.emit(Event::AckOut {
                client: conn.client.client(),
                ack: ack.as_str(),
                took: owner.read_at.elapsed(),
            });
            if conn.ws.start_send_unpin(Message::Text(ack.0)).is_err() {
                self.end(
                    owner.slot,
                    Ending::Broken("could not take its acknowledgements".into()),
                );
                continue;
            }
            conn.owed = true;
            match flush_now(conn) {
                Poll::Ready(Err(error)) => {
                    self.end(owner.slot, Ending::Broken(client::describe(&error)))
                }
                Poll::Pending => self.watch(owner.slot),
                Poll::Ready(Ok(())) => {}
            }
        }
        // The outbox keeps its memory for the next time.
        if let Some(shaper) = &mut self.shaper {
            shaper.outbox = outbox;
        }
    }

    pub(crate) fn add(&mut self, accepted: Accepted) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let wake = Arc::new(SlotWake {
            slot,
            queued: AtomicBool::new(false),
            ready_tx: self.ready_tx.clone(),
        });
        let waker = Waker::from(wake.clone());
        // Said here, where the connection joins the node, so that every client up is followed
        // by its client down, even when the node stops as the handshake ends.
        self.events.emit(Event::ClientUp {
            client: accepted.origin.client(),
            channel: &accepted.channel,
        });
        self.slots[slot] = Some(Connection {
            ws: accepted.wire,
            client: accepted.origin,
            channel: accepted.channel,
            wake: wake.clone(),
            waker,
            owed: false,
            unwritable_since: None,
            closing: None,
            held: false,
            _permit: accepted.permit,
        });
        // The handshake may have read the first message already: look at once.
        wake.wake_by_ref();
    }

    /// Handle what the connection in `slot` has sent: each text message goes through the
    /// sketch (or the input operator), and its acknowledgement back on the same connection.
    /// Never waits on the connection's socket; only on the sketch.
    pub(crate) async fn serve<S: Sketch>(
        &mut self,
        slot: usize,
        sketch: &mut S,
        ctx: &mut Context,
        report: &mut Report,
        stop: &Halt,
        stopped: Stopped<'_, '_>,
    ) {
        self.serve_connection(slot, sketch, ctx, report, stop, stopped)
            .await;
        if self.shaper.is_some() {
            self.deliver(report);
        }
    }

    async fn serve_connection<S: Sketch>(
        &mut self,
        slot: usize,
        sketch: &mut S,
        ctx: &mut Context,
        report: &mut Report,
        stop: &Halt,
        mut stopped: Stopped<'_, '_>,
    ) {
        // A stale wake-up for a slot since freed (or reused) costs one poll, nothing more.
        let Some(Some(conn)) = self.slots.get_mut(slot) else {
            return;
        };
        // Cleared before polling, so a wake-up during the poll queues the slot again.
        conn.wake.queued.store(false, Ordering::Release);
        if conn.closing.is_some() {
            if flush_now(conn).is_pending() {
                return;
            }
            let (reason, normal) = conn.closing.take().unwrap_or_default();
            self.finish(slot, &reason, normal);
            return;
        }
        // Backpressure: what the connection owes goes out before anything more is read.
        if conn.unwritable_since.is_some() {
            match flush_now(conn) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => {
                    self.end(slot, Ending::Broken(client::describe(&error)));
                    return;
                }
                Poll::Pending => return,
            }
        }
        // Its message waits in the throttle's queue: what it owes is written, nothing read.
        if conn.held {
            return;
        }
        let Connection {
            ws,
            client,
            channel,
            wake,
            waker,
            owed,
            unwritable_since,
            held,
            ..
        } = conn;
        let mut handled = 0;
        let ending = loop {
            if handled == FAIR_SHARE {
                wake.wake_by_ref();
                break None;
            }
            // A stop is noticed between two messages: the ones not started get no grace.
            if stop.is_set() || unwritable_since.is_some() {
                break None;
            }
            let polled = {
                let mut cx = std::task::Context::from_waker(waker);
                match ws.poll_ready_unpin(&mut cx) {
                    Poll::Ready(Ok(())) => ws.poll_next_unpin(&mut cx),
                    Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error))),
                    Poll::Pending => {
                        unwritable_since.get_or_insert_with(Instant::now);
                        break None;
                    }
                }
            };
            let (text, read_at) = match polled {
                Poll::Pending => break None,
                // The one clock read per message: how long it took shows in its ack's event.
                Poll::Ready(Some(Ok(Message::Text(text)))) => (text, std::time::Instant::now()),
                Poll::Ready(Some(Ok(Message::Binary(_)))) => {
                    break Some(Ending::Close(
                        CloseCode::Unsupported,
                        "binary frames are not accepted".to_owned(),
                    ));
                }
                Poll::Ready(Some(Ok(_))) => continue, // ping, pong, close: tungstenite answers
                Poll::Ready(Some(Err(error))) => break Some(ending_of(error)),
                Poll::Ready(None) => break Some(Ending::Normal("closed the connection")),
            };
            self.events.emit(Event::MessageIn {
                client: client.client(),
                channel,
                text: &text,
            });
            if let Some(shaper) = &mut self.shaper {
                let owner = Owner {
                    slot,
                    wake: wake.clone(),
                    read_at,
                };
                // Boxed: inline, the operator's future (which runs the sketch too) would
                // double the memory of every node, shaped or not, while it idles.
                let offered = Box::pin(shaper.offer(
                    owner,
                    channel,
                    text,
                    sketch,
                    ctx,
                    stopped.as_mut(),
                    report,
                ))
                .await;
                handled += 1;
                if offered == Offered::Hold {
                    *held = true;
                    break None;
                }
                continue;
            }
            let input = Input::Message {
                channel,
                text: &text,
            };
            let mut handling = pin!(run_loop(sketch, ctx, input, stopped.as_mut()));
            let ack = match futures_util::poll!(&mut handling) {
                Poll::Ready(ack) => ack,
                Poll::Pending => {
                    // The sketch waits on something (a peer): acks held back for batching
                    // must not wait with it. A failure here shows at the next write.
                    if *owed {
                        let _ = flush_parts(ws, waker, owed, unwritable_since);
                    }
                    handling.await
                }
            };
            report.handled += 1;
            self.events.emit(Event::AckOut {
                client: client.client(),
                ack: ack.as_str(),
                took: read_at.elapsed(),
            });
            // Feed, don't flush: acks for messages that arrived together leave together.
            match ws.start_send_unpin(Message::Text(ack.0)) {
                Ok(()) => *owed = true,
                Err(tungstenite::Error::WriteBufferFull(_)) => {
                    break Some(Ending::Broken(format!(
                        "owed more than {} bytes of acknowledgements",
                        ws.max_write_buffer()
                    )));
                }
                Err(error) => break Some(Ending::Broken(client::describe(&error))),
            }
            handled += 1;
        };
        let ending = match ending {
            Some(ending) => ending,
            None if !*owed => return self.watch(slot),
            None => match flush_parts(ws, waker, owed, unwritable_since) {
                Poll::Ready(Err(error)) => Ending::Broken(client::describe(&error)),
                _ => return self.watch(slot),
            },
        };
        self.end(slot, ending);
    }

    /// If the connection in `slot` cannot take its acks, make sure the watchdog runs.
    fn watch(&mut self, slot: usize) {
        if let Some(Some(Connection {
            unwritable_since: Some(since),
            ..
        })) = self.slots.get(slot)
        {
            self.watchdog.arm(*since, self.write_timeout);
        }
    }

    /// End the connection in `slot`: acks it is owed go out first, then its close frame if
    /// the ending has one, as far as its socket takes them now; the rest is written when it
    /// can take more, until the write timeout.
    fn end(&mut self, slot: usize, ending: Ending) {
        let Some(Some(conn)) = self.slots.get_mut(slot) else {
            return;
        };
        let (reason, normal) = match ending {
            Ending::Normal(reason) => (reason.to_owned(), true),
            Ending::Broken(reason) => (reason, false),
            Ending::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: shorten(&reason).into(),
                };
                let _ = conn.ws.start_send_unpin(Message::Close(Some(frame)));
                let reason = format!("{reason} (closed with {})", u16::from(code));
                if flush_now(conn).is_pending() {
                    conn.closing = Some((reason, false));
                    self.watch(slot);
                    return;
                }
                (reason, false)
            }
        };
        self.finish(slot, &reason, normal);
    }

    /// Free `slot` and say why its connection ended.
    fn finish(&mut self, slot: usize, reason: &str, normal: bool) {
        let Some(conn) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        self.events.emit(Event::ClientDown {
            client: conn.client.client(),
            reason,
            normal,
        });
    }

    /// Drop the connections that have not taken their acks within the write timeout.
    pub(crate) fn sweep(&mut self) {
        self.watchdog.armed = false;
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for slot in 0..self.slots.len() {
            let Some(Some(conn)) = self.slots.get_mut(slot) else {
                continue;
            };
            let Some(since) = conn.unwritable_since else {
                continue;
            };
            let Some(deadline) = since.checked_add(self.write_timeout) else {
                continue;
            };
            if deadline > now {
                next = Some(next.map_or(since, |next| next.min(since)));
                continue;
            }
            let waited = self.write_timeout.as_secs_f64();
            let reason = match conn.closing.take() {
                Some((reason, _)) => format!("{reason}; it took no more data for {waited}s"),
                None => format!("did not take its acknowledgements for {waited}s"),
            };
            self.finish(slot, &reason, false);
        }
        if let Some(since) = next {
            self.watchdog.arm(since, self.write_timeout);
        }
    }

    /// The node stops: messages already received but not started are answered `error: the
    /// node is stopping` where the connection takes them without waiting, then every
    /// connection gets a close frame with 1001 (going away), all within a short grace.
    pub(crate) async fn close_all(&mut self, report: &mut Report) {
        let frame = CloseFrame {
            code: CloseCode::Away,
            reason: "node stopping".into(),
        };
        let stopping = Ack::error("the node is stopping");
        // Held messages were read first: their acks go before any answered below.
        if let Some(shaper) = &mut self.shaper {
            for owner in shaper.drain() {
                shaper.outbox.push((owner, stopping.clone()));
            }
            self.deliver(report);
        }
        for conn in self.slots.iter_mut().flatten() {
            if conn.closing.is_some() {
                continue;
            }
            let mut cx = std::task::Context::from_waker(&conn.waker);
            for _ in 0..STOP_ANSWERS {
                if conn.unwritable_since.is_some() || !conn.ws.poll_ready_unpin(&mut cx).is_ready()
                {
                    break;
                }
                let text = match conn.ws.poll_next_unpin(&mut cx) {
                    Poll::Ready(Some(Ok(Message::Text(text)))) => text,
                    Poll::Ready(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                    _ => break,
                };
                let read_at = std::time::Instant::now();
                self.events.emit(Event::MessageIn {
                    client: conn.client.client(),
                    channel: &conn.channel,
                    text: &text,
                });
                report.handled += 1;
                self.events.emit(Event::AckOut {
                    client: conn.client.client(),
                    ack: stopping.as_str(),
                    took: read_at.elapsed(),
                });
                if conn
                    .ws
                    .start_send_unpin(Message::Text(stopping.0.clone()))
                    .is_err()
                {
                    break;
                }
            }
            let _ = conn
                .ws
                .start_send_unpin(Message::Close(Some(frame.clone())));
        }
        let flushing =
            self.slots.iter_mut().flatten().map(|conn| {
                std::future::poll_fn(move |cx| conn.ws.poll_flush_unpin(cx).map(|_| ()))
            });
        let _ = timeout(CLOSE_GRACE, futures_util::future::join_all(flushing)).await;
        for conn in self.slots.drain(..).flatten() {
            self.events.emit(Event::ClientDown {
                client: conn.client.client(),
                reason: "the node stopped",
                normal: true,
            });
        }
    }
}

/// Write what `conn` owes as far as its socket takes it now.
fn flush_now(conn: &mut Connection) -> Poll<Result<(), tungstenite::Error>> {
    flush_parts(
        &mut conn.ws,
        &conn.waker,
        &mut conn.owed,
        &mut conn.unwritable_since,
    )
}

/// [`flush_now`] on a connection's parts, for when its other parts are borrowed. Pending
/// means the socket is full: the connection's own waker is woken when it can take more.
fn flush_parts(
    ws: &mut Wire,
    waker: &Waker,
    owed: &mut bool,
    unwritable_since: &mut Option<Instant>,
) -> Poll<Result<(), tungstenite::Error>> {
    let flushed = ws.poll_flush_unpin(&mut std::task::Context::from_waker(waker));
    match flushed {
        Poll::Ready(Ok(())) => {
            *owed = false;
            *unwritable_since = None;
        }
        Poll::Pending => {
            unwritable_since.get_or_insert_with(Instant::now);
        }
        Poll::Ready(Err(_)) => {}
    }
    flushed
}

/// `reason`, cut on a character boundary to fit in a close frame.
fn shorten(reason: &str) -> String {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// The close code for what went wrong reading a connection.
fn ending_of(error: tungstenite::Error) -> Ending {
    match error {
        tungstenite::Error::Capacity(_) => {
            Ending::Close(CloseCode::Size, "message too big".to_owned())
        }
        tungstenite::Error::Utf8(_) => {
            Ending::Close(CloseCode::Invalid, "text is not valid UTF-8".to_owned())
        }
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => Ending::Normal("went away without a close frame"),
        tungstenite::Error::Protocol(error) => {
            Ending::Close(CloseCode::Protocol, format!("protocol error: {error}"))
        }
        other => Ending::Broken(client::describe(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn close_reasons_fit_in_a_frame() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(100);
        let cut = shorten(&long);
        assert!(cut.len() <= 123 && long.starts_with(&cut), "{cut}");
    }
}
