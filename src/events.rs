//! The runtime's events (listening, a client in or out, a message in, an ack out, a peer up or
//! down) in one place: every one is logged here, and handed to any [`Observer`] a program
//! registers, such as a live view of the mesh.

use std::{fmt, net::SocketAddr, sync::Arc, time::Duration};

use crate::logging::shown;

/// Who is on the other end of one of a node's inbound connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client<'a> {
    /// A websocket client, by its address.
    Addr(SocketAddr),
    /// A node of the same process, by its name: it reached this one without a socket.
    Node(&'a str),
}

impl fmt::Display for Client<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::Addr(addr) => addr.fmt(f),
            Client::Node(name) => f.write_str(name),
        }
    }
}

impl serde::Serialize for Client<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Something that happened in a node.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The node accepts connections on `addr` (the bound address, which matters with port 0).
    Listening {
        /// The bound address.
        addr: SocketAddr,
    },
    /// A client finished its websocket handshake on `channel`.
    ClientUp {
        /// The client's address.
        client: Client<'a>,
        /// The path it connected to.
        channel: &'a str,
    },
    /// A client's connection ended, normally or not.
    ClientDown {
        /// The client's address.
        client: Client<'a>,
        /// Why, in words.
        reason: &'a str,
        /// Whether the client went away normally (close frame or end of stream).
        normal: bool,
    },
    /// A connection was refused before or during its handshake.
    ClientRefused {
        /// The client's address.
        client: Client<'a>,
        /// Why, in words.
        reason: &'a str,
    },
    /// A text message arrived.
    MessageIn {
        /// Who sent it.
        client: Client<'a>,
        /// On which channel.
        channel: &'a str,
        /// The message.
        text: &'a str,
    },
    /// The acknowledgement of a message was sent back.
    AckOut {
        /// To whom.
        client: Client<'a>,
        /// The acknowledgement.
        ack: &'a str,
        /// From the message read to its acknowledgement sent.
        took: Duration,
    },
    /// A link to a peer is open.
    PeerUp {
        /// The peer's name.
        peer: &'a str,
        /// Its URL, channel included.
        url: &'a str,
    },
    /// A peer that was never up is not up yet: the node waits for it as long as it runs.
    /// Said once per peer.
    PeerWaiting {
        /// The peer's name.
        peer: &'a str,
        /// Its URL, without a channel.
        url: &'a str,
        /// Why the last attempt failed, in words.
        reason: &'a str,
    },
    /// A link to a peer that was up went down. Each [`Event::PeerUp`] is followed by one,
    /// except when the node stops.
    PeerDown {
        /// The peer's name.
        peer: &'a str,
        /// Why, in words.
        reason: &'a str,
    },
    /// A peer acknowledged a message, with its own ack or with an `error: `.
    PeerAck {
        /// The peer's name.
        peer: &'a str,
        /// Its acknowledgement.
        ack: &'a str,
        /// From the message sent to its acknowledgement read.
        took: Duration,
    },
    /// A message to a peer failed: it was not acknowledged.
    SendFailed {
        /// The peer's name.
        peer: &'a str,
        /// Why, in words.
        reason: &'a str,
    },
    /// The node was asked to stop.
    Stopping,
}

/// A subscriber to a node's events. Called on the node's own task, in order, so it must not
/// block: forward to a channel for anything slow.
pub trait Observer: Send + Sync + 'static {
    /// `node` had `event`.
    fn observe(&self, node: &str, event: &Event<'_>);
}

/// Where a node's events go: the log, then each observer.
#[derive(Clone)]
pub struct Events {
    node: Arc<str>,
    observers: Vec<Arc<dyn Observer>>,
    /// The node's own comings and goings are logged at debug: one of very many.
    quiet: bool,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("node", &self.node)
            .field("observers", &self.observers.len())
            .finish()
    }
}

impl Events {
    /// Events of the node called `node`, logged and handed to no observer yet.
    pub fn new(node: &str) -> Self {
        Self {
            node: Arc::from(node),
            observers: Vec::new(),
            quiet: false,
        }
    }

    /// Log the node's comings and goings (`stopping`, a link up) at debug, not info: for a node
    /// among so many that a line each would bury the rest. Events go to observers as ever.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// Also hand every event to `observer`.
    pub fn observe(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// The node these events are about.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub(crate) fn emit(&self, event: Event<'_>) {
        log(&event, self.quiet);
        for observer in &self.observers {
            observer.observe(&self.node, &event);
        }
    }
}

/// The log target of the line per message and per ack: what the sketches were handed and
/// what they answered.
const MESSAGES: &str = "arduino::sketches::messages";

/// Every text that came from outside (a message, an ack, a channel, a reason, a peer's URL)
/// goes through [`shown`]: escaped and cut, so that a client cannot forge log lines, reach the
/// terminal with escape codes or make a line as long as its message.
fn log(event: &Event<'_>, quiet: bool) {
    use tracing::{debug, info, warn};
    match *event {
        Event::Listening { addr } => info!(%addr, "listening on ws://{addr}"),
        Event::ClientUp { client, channel } => {
            debug!(%client, channel = %shown(channel), "client connected");
        }
        Event::ClientDown {
            client,
            reason,
            normal: true,
        } => debug!(%client, "client left: {}", shown(reason)),
        Event::ClientDown { client, reason, .. } => {
            warn!(%client, "client dropped: {}", shown(reason));
        }
        Event::ClientRefused { client, reason } => {
            warn!(%client, "refused a connection: {}", shown(reason));
        }
        // Every message and its ack, at info under the target of the sketches' own lines
        // per message, so that `-q` (`arduino::sketches=warn`) drops them with those. The macro checks the level before it evaluates its
        // arguments, and `shown` formats only when the line is written: a message costs no
        // formatting and no allocation here when the line is filtered out.
        Event::MessageIn {
            client,
            channel,
            text,
        } => info!(
            target: MESSAGES,
            %client,
            channel = %shown(channel),
            "< {} on {}",
            shown(text),
            shown(channel)
        ),
        Event::AckOut { client, ack, .. } => info!(target: MESSAGES, %client, "> {}", shown(ack)),
        // One of very many nodes: its links coming up are not news.
        Event::PeerUp { peer, url } if quiet => {
            debug!(peer = %shown(peer), "link to {} up ({})", shown(peer), shown(url));
        }
        // A peer given as a URL is named by it: say it once.
        Event::PeerUp { peer, url } if url.starts_with(peer) => {
            info!(peer = %shown(peer), "link to {} up", shown(url));
        }
        Event::PeerUp { peer, url } => {
            info!(peer = %shown(peer), "link to {} up ({})", shown(peer), shown(url));
        }
        Event::PeerWaiting { peer, url, reason } if url.starts_with(peer) => {
            info!(peer = %shown(peer), "waiting for {}: not up yet ({})", shown(url), shown(reason));
        }
        Event::PeerWaiting { peer, url, reason } => info!(
            peer = %shown(peer),
            "waiting for {} at {}: not up yet ({})",
            shown(peer),
            shown(url),
            shown(reason)
        ),
        Event::PeerDown { peer, reason } => {
            info!(peer = %shown(peer), "link to {} down: {}", shown(peer), shown(reason));
        }
        Event::PeerAck { peer, ack, .. } => {
            match ack.strip_prefix(crate::message::Ack::ERROR_PREFIX) {
                // Said as the failure it is, in the words of the error it becomes.
                Some(reason) => warn!(
                    peer = %shown(peer),
                    "message to {} failed: {} answered: {}",
                    shown(peer),
                    shown(peer),
                    shown(reason)
                ),
                None => debug!(peer = %shown(peer), "{} > {}", shown(peer), shown(ack)),
            }
        }
        Event::SendFailed { peer, reason } => {
            warn!(peer = %shown(peer), "message to {} failed: {}", shown(peer), shown(reason));
        }
        Event::Stopping if quiet => debug!("stopping"),
        Event::Stopping => info!("stopping"),
    }
}
