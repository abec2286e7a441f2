//! A node's events on NATS: each one, as the JSON line its `GET /events` feed gives, published
//! on `arduino.events.<node>`, for `arduino listen` and `arduino view` to follow without
//! reaching the node itself.
//!
//! Publishing never slows the node nor grows its memory: the node hands each line to a bounded
//! queue without waiting, and a task of its own publishes them, waiting for the server to have
//! seen each batch before it sends more. While the client is not connected, or the queue is
//! full, events are dropped, counted, and said in the log at most once every few seconds.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::{
    sync::mpsc,
    time::{MissedTickBehavior, interval_at, timeout},
};
use tracing::{Instrument, debug, info, warn};

use super::Client;
use crate::{
    events::{Event, Events, Observer},
    observe::feed::event_line,
};

/// How many events may wait to be published; more are dropped.
const QUEUE: usize = 1024;
/// How many events are published before the server is asked to confirm it saw them: what the
/// client may hold unwritten is bounded by it.
const BATCH: u32 = 256;
/// How often dropped events are said in the log, at most.
const SAY_EVERY: Duration = Duration::from_secs(5);
/// How long the last events have to reach the server once the node has stopped.
const LAST_FLUSH: Duration = Duration::from_millis(100);

/// Also publish the events of `events`' node on `arduino.events.<node>` through `client`, when
/// there is one. `node` is the node's name in the mesh (a copy of a node with replicas
/// publishes as the node it is a copy of).
pub(crate) fn publish(events: Events, client: Option<&Client>, node: &str) -> Events {
    let Some(client) = client else {
        return events;
    };
    let subject = match super::events_subject(node) {
        Ok(subject) => Bytes::from(subject),
        Err(why) => {
            debug!("events not published on NATS: {why}");
            return events;
        }
    };
    let (lines_tx, lines_rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(Dropped::default());
    let forwarding = forward(client.clone(), subject, lines_rx, dropped.clone());
    tokio::spawn(forwarding.in_current_span());
    events.observe(Arc::new(Publisher {
        client: client.clone(),
        lines_tx,
        dropped,
    }))
}

/// The observer on the node's task: a line into the queue, or a count when it cannot go.
struct Publisher {
    client: Client,
    lines_tx: mpsc::Sender<Bytes>,
    dropped: Arc<Dropped>,
}

/// Events not published since the log last said so, by why.
#[derive(Default)]
struct Dropped {
    /// The client was not connected: the client says so in the log itself.
    offline: AtomicU64,
    /// The queue was full: the server takes them more slowly than the node makes them.
    full: AtomicU64,
}

impl Dropped {
    fn offline(&self) {
        self.offline.fetch_add(1, Ordering::Relaxed);
    }

    fn full(&self) {
        self.full.fetch_add(1, Ordering::Relaxed);
    }

    /// Say what was dropped since the last time, if anything. Once the node has stopped, its
    /// last events went as its connection closed: that is no news.
    fn say(&self, subject: &[u8], stopped: bool) {
        let subject = String::from_utf8_lossy(subject);
        let full = self.full.swap(0, Ordering::Relaxed);
        if full > 0 {
            warn!(
                dropped = full,
                "{full} events not published on {subject}: the NATS server takes them more slowly \
                 than the node makes them"
            );
        }
        let offline = self.offline.swap(0, Ordering::Relaxed);
        if offline > 0 && stopped {
            debug!(
                dropped = offline,
                "{offline} events not published on {subject}: the connection closed as the node stopped"
            );
        } else if offline > 0 {
            info!(
                dropped = offline,
                "{offline} events not published on {subject}: not connected to the NATS server"
            );
        }
    }
}

impl Observer for Publisher {
    fn observe(&self, node: &str, event: &Event<'_>) {
        // Checked before the line is made: an event that cannot go costs no formatting.
        if !self.client.is_connected() {
            return self.dropped.offline();
        }
        if self.lines_tx.capacity() == 0 || self.lines_tx.try_send(event_line(node, event)).is_err()
        {
            self.dropped.full();
        }
    }
}

/// Publish the queued lines on `subject` until the node is gone (every sender dropped).
async fn forward(
    client: Client,
    subject: Bytes,
    mut lines_rx: mpsc::Receiver<Bytes>,
    dropped: Arc<Dropped>,
) {
    let mut say = interval_at(tokio::time::Instant::now() + SAY_EVERY, SAY_EVERY);
    say.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut unconfirmed = 0u32;
    loop {
        tokio::select! {
            line = lines_rx.recv() => {
                let Some(line) = line else { break };
                if !client.is_connected() {
                    dropped.offline();
                    continue;
                }
                client.publish(subject.clone(), None, line);
                unconfirmed += 1;
                // The client's own queue is unbounded: waiting here for the server to have
                // seen this batch bounds it, while new events wait in (or overflow) ours.
                if unconfirmed >= BATCH {
                    unconfirmed = 0;
                    client.flush().await;
                }
            }
            _ = say.tick() => dropped.say(&subject, false),
        }
    }
    let _ = timeout(LAST_FLUSH, client.flush()).await;
    dropped.say(&subject, true);
}
