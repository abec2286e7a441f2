//! One connection, whatever carries it: a websocket, or a pair of in-process queues between two
//! nodes of one `arduino up`. Both speak websocket messages, so the node's inbound side and its
//! peer links handle either without knowing which it is; only opening one differs (see
//! [`crate::link`], which decides how each peer is reached).
//!
//! An in-process connection moves each message (a reference-counted text, never copied) into
//! the other node's queue and wakes its task: no socket, no system call, no framing. It only
//! ever joins two nodes of ours, whose links send one message and wait for its ack, so neither
//! queue holds more than a message and a close at a time.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use futures_util::{Sink, Stream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::{
    client::Ws,
    events::Client,
    nats::{NatsMesh, link::NatsLink},
};

/// A connection of a node, inbound or to a peer.
pub(crate) enum Wire {
    /// A websocket, over TCP.
    Ws(Box<Ws>),
    /// In-process queues to a node of the same process.
    Local(Local),
    /// Requests through a NATS server, to any copy of a peer: see [`crate::nats`].
    Nats(Box<NatsLink>),
}

impl Wire {
    /// The most an inbound connection may owe before it is dropped, in bytes, for the log.
    pub(crate) fn max_write_buffer(&self) -> usize {
        match self {
            Wire::Ws(ws) => ws.get_config().max_write_buffer_size,
            Wire::Local(_) | Wire::Nats(_) => 0,
        }
    }

    /// Whether an idle link of this kind needs pings to notice that its peer went away: a
    /// websocket does; in process, nothing between can hang, and through NATS each message
    /// finds a copy of the peer that is up.
    pub(crate) fn needs_pings(&self) -> bool {
        matches!(self, Wire::Ws(_))
    }

    /// Whether the last message sent certainly reached no one (through NATS: no copy of the
    /// peer was up), so that sending it again is safe.
    pub(crate) fn undelivered(&self) -> bool {
        match self {
            Wire::Nats(link) => link.undelivered(),
            _ => false,
        }
    }
}

impl From<Ws> for Wire {
    fn from(ws: Ws) -> Self {
        Wire::Ws(Box::new(ws))
    }
}

impl Stream for Wire {
    type Item = Result<Message, tungstenite::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Wire::Ws(ws) => Pin::new(ws.as_mut()).poll_next(cx),
            Wire::Local(local) => local.poll_next(cx),
            Wire::Nats(link) => link.poll_next(cx),
        }
    }
}

impl Sink<Message> for Wire {
    type Error = tungstenite::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            Wire::Ws(ws) => Pin::new(ws.as_mut()).poll_ready(cx),
            Wire::Local(local) => Poll::Ready(local.ready()),
            Wire::Nats(link) => Poll::Ready(link.ready()),
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        match self.get_mut() {
            Wire::Ws(ws) => Pin::new(ws.as_mut()).start_send(item),
            Wire::Local(local) => local.send(item),
            Wire::Nats(link) => link.send(item),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            Wire::Ws(ws) => Pin::new(ws.as_mut()).poll_flush(cx),
            Wire::Local(_) | Wire::Nats(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            Wire::Ws(ws) => Pin::new(ws.as_mut()).poll_close(cx),
            Wire::Local(local) => {
                local.tx = None;
                Poll::Ready(Ok(()))
            }
            Wire::Nats(link) => Poll::Ready(link.send(Message::Close(None))),
        }
    }
}

/// One end of an in-process connection.
pub(crate) struct Local {
    tx: Option<mpsc::UnboundedSender<Message>>,
    rx: mpsc::UnboundedReceiver<Message>,
    /// A close frame came: what follows is the end of the stream.
    closed: bool,
    /// This end sent its close frame: nothing more may be sent.
    sent_close: bool,
    /// The largest message this end takes, as a websocket's `max_message_size`: the limits of
    /// a node are the same whatever carries its messages.
    max_message: usize,
}

impl Local {
    /// Two ends of a new connection, the link's and the node's, each taking messages up to its
    /// own limit.
    fn pair(link_max: usize, node_max: usize) -> (Local, Local) {
        let (a_tx, a_rx) = mpsc::unbounded_channel();
        let (b_tx, b_rx) = mpsc::unbounded_channel();
        let end = |tx, rx, max_message| Local {
            tx: Some(tx),
            rx,
            closed: false,
            sent_close: false,
            max_message,
        };
        (end(a_tx, b_rx, link_max), end(b_tx, a_rx, node_max))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, tungstenite::Error>>> {
        if self.closed {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(message)) => {
                let size = message.len();
                if size > self.max_message {
                    self.closed = true;
                    return Poll::Ready(Some(Err(tungstenite::Error::Capacity(
                        tungstenite::error::CapacityError::MessageTooLong {
                            size,
                            max_size: self.max_message,
                        },
                    ))));
                }
                if let Message::Close(_) = message {
                    self.closed = true;
                    // As a websocket does, answer a close that this end did not start.
                    if !self.sent_close
                        && let Some(tx) = self.tx.take()
                    {
                        let _ = tx.send(Message::Close(None));
                    }
                }
                Poll::Ready(Some(Ok(message)))
            }
            // The other end is gone without a close frame (its node stopped abruptly).
            Poll::Ready(None) => {
                self.closed = true;
                Poll::Ready(Some(Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Ready to take a message, as far as this end knows: a close that came in, or the other
    /// end gone, shows when the stream is read next, as it does on a websocket.
    fn ready(&self) -> Result<(), tungstenite::Error> {
        match self.sent_close {
            false => Ok(()),
            true => Err(tungstenite::Error::AlreadyClosed),
        }
    }

    fn send(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        self.ready()?;
        let closing = matches!(message, Message::Close(_));
        // Pings need no answer in process: the other end is this program.
        if matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return Ok(());
        }
        let sent = self.tx.as_ref().map(|tx| tx.send(message));
        if closing {
            self.sent_close = true;
        }
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(tungstenite::Error::AlreadyClosed),
        }
    }
}

/// Who is on the other end of an inbound connection, kept with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    Addr(SocketAddr),
    Node(Arc<str>),
}

impl Origin {
    pub(crate) fn client(&self) -> Client<'_> {
        match self {
            Origin::Addr(addr) => Client::Addr(*addr),
            Origin::Node(name) => Client::Node(name),
        }
    }
}

/// A client whose handshake is done (or that needed none), on its way to the node task.
pub(crate) struct Accepted {
    pub(crate) wire: Wire,
    pub(crate) origin: Origin,
    pub(crate) channel: String,
    pub(crate) permit: OwnedSemaphorePermit,
}

/// How many accepted connections may wait for the node task to take them. Each waits boxed:
/// the queue's memory, which every node has, stays a few hundred bytes.
const WAITING: usize = 64;

/// Where a node takes its connections from: its accept loop's and those of nodes of the same
/// process. Made before the node runs, so that a peer can connect before it has started.
pub(crate) struct Door {
    pub(crate) tx: mpsc::Sender<Box<Accepted>>,
    pub(crate) limit: Arc<Semaphore>,
    /// The largest message the node takes.
    max_message: usize,
    rx: Mutex<Option<mpsc::Receiver<Box<Accepted>>>>,
}

impl Door {
    pub(crate) fn new(max_connections: usize, max_message: usize) -> Self {
        let (tx, rx) = mpsc::channel(WAITING);
        Self {
            tx,
            limit: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            max_message,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// The receiving side, for the node task: once.
    pub(crate) fn take(&self) -> Option<mpsc::Receiver<Box<Accepted>>> {
        self.rx.lock().ok()?.take()
    }
}

/// Why an in-process connection could not be opened.
pub(crate) enum Refused {
    /// The node is at its connection limit (as an HTTP 503 would say): not retried.
    Full,
    /// The node is not running (any more).
    Gone,
}

/// A node's limits, as its in-process peers meet them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How many connections it takes at once.
    pub max_connections: usize,
    /// The largest message it takes, in bytes.
    pub max_message: usize,
}

/// The nodes of one process that can be reached without a socket, by name. Made by
/// `arduino up` before any node starts; every node of the process gets it.
#[derive(Clone, Default)]
pub struct Directory {
    doors: Arc<HashMap<String, Arc<Door>>>,
    serving: Arc<Serving>,
    /// The mesh goes through NATS: peers not in the process are reached through it.
    nats: Option<Arc<NatsMesh>>,
}

/// How many nodes of the process have yet to start serving, and a wake-up for when none has.
#[derive(Default)]
struct Serving {
    left: AtomicUsize,
    all: Notify,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("nodes", &self.doors.len())
            .finish()
    }
}

impl Directory {
    /// A directory of the process's `nodes` that take messages, each with its limits (how
    /// many connections, how large a message), for a process of `all` nodes in all.
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a str, Limits)>, all: usize) -> Self {
        Self {
            doors: Arc::new(
                nodes
                    .into_iter()
                    .map(|(name, limits)| {
                        let door = Door::new(limits.max_connections, limits.max_message);
                        (name.to_owned(), Arc::new(door))
                    })
                    .collect(),
            ),
            serving: Arc::new(Serving {
                left: AtomicUsize::new(all),
                all: Notify::new(),
            }),
            nats: None,
        }
    }

    /// Reach the peers that are not in the process through the NATS server at `url`
    /// (trusting `tls`'s CA for a `tls://` one); the nodes called `serving` answer through
    /// it, and publish their `events` on it when asked to. Each node connects with a client
    /// of its own, named after it.
    pub fn over_nats(
        mut self,
        url: String,
        tls: Option<crate::tls::Tls>,
        serving: impl IntoIterator<Item = String>,
        events: bool,
    ) -> Self {
        self.nats = Some(Arc::new(NatsMesh {
            url,
            tls,
            serving: serving.into_iter().collect(),
            events,
        }));
        self
    }

    pub(crate) fn nats(&self) -> Option<&NatsMesh> {
        self.nats.as_deref()
    }

    /// A node of the process has set up and serves.
    pub(crate) fn serving(&self) {
        if self.serving.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.serving.all.notify_one();
        }
    }

    /// Completes once every node of the process serves.
    pub async fn all_serving(&self) {
        if self.serving.left.load(Ordering::Acquire) > 0 {
            self.serving.all.notified().await;
        }
    }

    /// Whether the node called `name` is in this process.
    pub fn has(&self, name: &str) -> bool {
        self.doors.contains_key(name)
    }

    pub(crate) fn door(&self, name: &str) -> Option<Arc<Door>> {
        self.doors.get(name).cloned()
    }
}

/// Open an in-process connection from the node `from` to the node behind `door`, on `channel`,
/// taking acks up to `max_ack` bytes.
pub(crate) async fn connect(
    door: &Door,
    from: &Arc<str>,
    channel: &str,
    max_ack: usize,
) -> Result<Wire, Refused> {
    let permit = door
        .limit
        .clone()
        .try_acquire_owned()
        .map_err(|_| Refused::Full)?;
    let (ours, theirs) = Local::pair(max_ack, door.max_message);
    let accepted = Accepted {
        wire: Wire::Local(theirs),
        origin: Origin::Node(from.clone()),
        channel: channel.to_owned(),
        permit,
    };
    door.tx
        .send(Box::new(accepted))
        .await
        .map_err(|_| Refused::Gone)?;
    Ok(Wire::Local(ours))
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};

    use super::*;

    #[tokio::test]
    async fn a_local_pair_carries_messages_both_ways_and_closes_like_a_websocket() {
        let (mut a, mut b) = {
            let (a, b) = Local::pair(64, 64);
            (Wire::Local(a), Wire::Local(b))
        };
        a.send(Message::text("0")).await.unwrap();
        assert_eq!(b.next().await.unwrap().unwrap(), Message::text("0"));
        b.send(Message::text("acknowledged")).await.unwrap();
        assert_eq!(
            a.next().await.unwrap().unwrap(),
            Message::text("acknowledged")
        );
        // A close is answered, then both ends see the end of the stream.
        a.send(Message::Close(None)).await.unwrap();
        assert!(matches!(b.next().await, Some(Ok(Message::Close(None)))));
        assert!(b.next().await.is_none());
        assert!(matches!(a.next().await, Some(Ok(Message::Close(None)))));
        assert!(a.next().await.is_none());
        assert!(a.send(Message::text("late")).await.is_err());
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_refused_as_a_websocket_would() {
        let (a, b) = Local::pair(1 << 20, 8);
        let (mut a, mut b) = (Wire::Local(a), Wire::Local(b));
        a.send(Message::text("12345678")).await.unwrap();
        assert_eq!(b.next().await.unwrap().unwrap(), Message::text("12345678"));
        a.send(Message::text("123456789")).await.unwrap();
        assert!(matches!(
            b.next().await,
            Some(Err(tungstenite::Error::Capacity(_)))
        ));
        assert!(b.next().await.is_none());
    }

    #[tokio::test]
    async fn an_end_dropped_without_a_close_is_a_reset() {
        let (a, b) = Local::pair(64, 64);
        let mut a = Wire::Local(a);
        drop(b);
        assert!(matches!(a.next().await, Some(Err(_))));
        assert!(a.send(Message::text("0")).await.is_err());
    }

    #[tokio::test]
    async fn a_door_refuses_past_its_limit_and_once_its_node_is_gone() {
        let limits = Limits {
            max_connections: 1,
            max_message: 64,
        };
        let directory = Directory::new([("buzzer", limits)], 1);
        let door = directory.door("buzzer").unwrap();
        let from: Arc<str> = Arc::from("iopin");
        let first = connect(&door, &from, "/datafeed", 64).await;
        assert!(first.is_ok());
        assert!(matches!(
            connect(&door, &from, "/other", 64).await,
            Err(Refused::Full)
        ));
        let mut rx = door.take().unwrap();
        assert!(door.take().is_none());
        let accepted = rx.recv().await.unwrap();
        assert_eq!(accepted.channel, "/datafeed");
        assert_eq!(accepted.origin, Origin::Node(from.clone()));
        drop((accepted, rx, first));
        assert!(matches!(
            connect(&door, &from, "/datafeed", 64).await,
            Err(Refused::Gone)
        ));
    }
}
