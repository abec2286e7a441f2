//! Links from a node to its peers: one persistent websocket per peer and channel, opened on
//! first use, kept for the next message (at most [`LINKS_PER_PEER`] per peer, the least
//! recently used closed to make room), reopened with capped, jittered backoff when the peer
//! went away. A peer that was never up is waited for as long as the node runs, so the order
//! in which nodes start does not matter. Every message sent ends in the peer's
//! acknowledgement or in a [`SendError`] that is logged and counted.

use std::{sync::Arc, time::Duration};

use futures_util::{FutureExt, SinkExt, StreamExt};
use rand::{RngExt, SeedableRng, rngs::SmallRng};
use tokio::time::{Instant, sleep, timeout_at};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

use crate::{
    client,
    events::{Event, Events},
    logging::shown,
    message::{Ack, Text},
    wire::{self, Directory, Door, Refused, Wire},
};

/// Why a message to a peer was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// No link could be opened before the reconnect window closed.
    #[error("{peer} is unreachable at {url}: {reason}")]
    Unreachable {
        /// The peer's name.
        peer: String,
        /// Where it was looked for.
        url: String,
        /// The last connection error.
        reason: String,
    },
    /// The peer did not acknowledge in time (it may hang, or be overloaded).
    #[error("{peer} did not acknowledge within {}s", timeout.as_secs_f64())]
    TimedOut {
        /// The peer's name.
        peer: String,
        /// The deadline it missed.
        timeout: Duration,
    },
    /// The link broke after the message was sent, before its acknowledgement came.
    #[error("{peer} closed the link before acknowledging: {reason}")]
    Closed {
        /// The peer's name.
        peer: String,
        /// How the link broke.
        reason: String,
    },
    /// The peer acknowledged with an `error: `.
    #[error("{peer} answered: {reason}")]
    Rejected {
        /// The peer's name.
        peer: String,
        /// The peer's reason, after its `error: `.
        reason: String,
    },
    /// The sketch asked for a peer its node does not have.
    #[error("there is no peer number {index} (this node has {count})")]
    NoSuchPeer {
        /// The index asked for.
        index: usize,
        /// How many peers there are.
        count: usize,
    },
}

/// A peer as the links see it: a name and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's name in the mesh, or its URL when it came from the command line.
    pub name: String,
    /// `ws://host:port`, without a path: the channel is added per link. None for a node with
    /// no port, which only nodes of its own process reach.
    pub url: Option<String>,
    /// Whether the mesh's secret is sent to it: only a node of the mesh gets it, never an
    /// address from elsewhere.
    pub secret: bool,
}

/// How links behave; set per node.
#[derive(Debug, Clone)]
pub(crate) struct LinkOptions {
    pub timeout: Duration,
    pub secret: Option<Arc<str>>,
    pub tls: Option<crate::tls::Tls>,
    pub max_message: usize,
    pub seed: u64,
    /// The node's NATS client, when the mesh goes through NATS.
    pub nats: Option<crate::nats::Client>,
}

/// Counts of what a node sent to its peers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendStats {
    /// Messages sent.
    pub sent: u64,
    /// Messages acknowledged without an error.
    pub acked: u64,
    /// Messages that ended in a [`SendError`].
    pub failed: u64,
}

struct Link {
    channel: String,
    /// Where the link goes, channel included, as events show it.
    url: String,
    ws: Option<Wire>,
    /// A keepalive ping is out and nothing has come back on the link since.
    pinged: bool,
    /// When the link last carried a message, in messages sent to its peer.
    used: u64,
}

struct PeerLinks {
    peer: Peer,
    /// How the peer is reached.
    reach: Reach,
    /// At most [`LINKS_PER_PEER`].
    links: Vec<Link>,
    /// Messages sent to this peer: the clock by which links are least recently used.
    sent: u64,
    /// A link to the peer came up once: from then on, messages to it have deadlines.
    ever_up: bool,
    /// The node said it is waiting for the peer to come up for the first time.
    said_waiting: bool,
}

/// How a peer is reached: the one place that decides it. Everything else about a link (its
/// deadlines, reconnects, events and counts) is the same whatever carries it.
enum Reach {
    /// Through its door, without a socket: it runs in this process.
    Local(Arc<Door>),
    /// A websocket to its URL.
    Ws(String),
    /// Requests through the NATS server, answered by any copy of it that is up.
    Nats {
        client: crate::nats::Client,
        /// `nats:arduino.<peer>`, as events show where the peer is.
        at: String,
    },
    /// It has no address, and it is not in this process.
    Nowhere,
}

impl Reach {
    /// Where a link to this peer on `channel` goes, as events show it.
    fn url(&self, channel: &str) -> String {
        let channel = channel.trim_start_matches('/');
        match self {
            Reach::Local(_) => format!("in-process:/{channel}"),
            Reach::Ws(url) => format!("{url}/{channel}"),
            Reach::Nats { at, .. } => match channel {
                "" => at.clone(),
                _ => format!("{at}.{}", channel.replace('/', ".")),
            },
            Reach::Nowhere => format!("nowhere:/{channel}"),
        }
    }
}

pub(crate) struct Links {
    events: Events,
    /// The node's name, as in-process peers see their client.
    name: Arc<str>,
    peers: Vec<PeerLinks>,
    options: LinkOptions,
    rng: SmallRng,
    pub(crate) stats: SendStats,
}

/// How many links a node keeps to one peer. A link is per channel, and clients choose
/// channels: past this many, the least recently used link is closed (1000) to make room, so
/// that whatever its clients do, a node costs each peer at most this many connections.
pub const LINKS_PER_PEER: usize = 8;

/// The first pause between two connection attempts, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_millis(20);
const BACKOFF_CAP: Duration = Duration::from_millis(500);

impl Links {
    pub(crate) fn new(
        events: Events,
        peers: Vec<Peer>,
        options: LinkOptions,
        directory: &Directory,
    ) -> Self {
        Self {
            name: Arc::from(events.node()),
            events,
            rng: SmallRng::seed_from_u64(options.seed ^ 0x9e37_79b9_7f4a_7c15),
            peers: peers
                .into_iter()
                .map(|peer| PeerLinks {
                    // In the process, without a socket; else, when the mesh goes through NATS,
                    // a node of the mesh through it (a URL from outside the mesh stays a
                    // websocket); else a websocket to its address.
                    reach: match (directory.door(&peer.name), &options.nats, &peer.url) {
                        (Some(door), ..) => Reach::Local(door),
                        (None, Some(nats), _) if !peer.name.contains("://") => Reach::Nats {
                            client: nats.clone(),
                            at: format!("nats:{}.{}", crate::nats::ROOT, peer.name),
                        },
                        (None, _, Some(url)) => Reach::Ws(url.clone()),
                        (None, _, None) => Reach::Nowhere,
                    },
                    peer,
                    links: Vec::new(),
                    sent: 0,
                    ever_up: false,
                    said_waiting: false,
                })
                .collect(),
            options,
            stats: SendStats::default(),
        }
    }

    pub(crate) fn node(&self) -> &str {
        self.events.node()
    }

    /// Whether any peer is reached through a socket, whose idle links need pings.
    pub(crate) fn needs_keepalive(&self) -> bool {
        self.peers
            .iter()
            .any(|peer| !matches!(peer.reach, Reach::Local(_)))
    }

    pub(crate) fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub(crate) fn peer_name(&self, index: usize) -> &str {
        self.peers.get(index).map_or("", |p| p.peer.name.as_str())
    }

    pub(crate) async fn send(
        &mut self,
        peer: usize,
        channel: &str,
        text: Text,
    ) -> Result<Ack, SendError> {
        self.stats.sent += 1;
        let result = match self.deliver(peer, channel, text).await {
            Ok((ack, took)) => {
                let name = self.peer_name(peer);
                self.events.emit(Event::PeerAck {
                    peer: name,
                    ack: ack.as_str(),
                    took,
                });
                match ack.error_reason() {
                    Some(reason) => Err(SendError::Rejected {
                        peer: name.to_owned(),
                        reason: reason.to_owned(),
                    }),
                    None => Ok(ack),
                }
            }
            Err(error) => {
                let reason = error.to_string();
                self.events.emit(Event::SendFailed {
                    peer: self.peer_name(peer),
                    reason: &reason,
                });
                Err(error)
            }
        };
        match &result {
            Ok(_) => self.stats.acked += 1,
            Err(_) => self.stats.failed += 1,
        }
        result
    }

    /// Send `text` to the peer number `index` and read its acknowledgement, whatever it says
    /// (an `error: ` ack included), with the time from the message handed to the link to its
    /// ack read: a reconnect on the way counts, the wait for a peer never up does not.
    async fn deliver(
        &mut self,
        index: usize,
        channel: &str,
        text: Text,
    ) -> Result<(Ack, Duration), SendError> {
        let count = self.peers.len();
        let Some(peer) = self.peers.get_mut(index) else {
            return Err(SendError::NoSuchPeer { index, count });
        };
        let timeout = self.options.timeout;
        let mut started = Instant::now();
        let mut deadline = started + timeout;
        peer.sent += 1;
        let index = match peer.links.iter().position(|l| l.channel == channel) {
            Some(i) => i,
            None if peer.links.len() < LINKS_PER_PEER => {
                peer.links.push(Link {
                    channel: channel.to_owned(),
                    url: peer.reach.url(channel),
                    ws: None,
                    pinged: false,
                    used: 0,
                });
                peer.links.len() - 1
            }
            None => {
                // Every link is idle (this is the only message in flight): make room by
                // closing the one least recently used, and reuse its place.
                let lru = (0..peer.links.len())
                    .min_by_key(|&i| peer.links[i].used)
                    .unwrap_or(0);
                let link = &mut peer.links[lru];
                if let Some(ws) = link.ws.take() {
                    Box::pin(close_normally(ws, deadline)).await;
                    self.events.emit(Event::PeerDown {
                        peer: &peer.peer.name,
                        reason: "closed an idle link to make room for another channel",
                    });
                }
                link.channel.clear();
                link.channel.push_str(channel);
                link.url = peer.reach.url(channel);
                link.pinged = false;
                lru
            }
        };
        let link = &mut peer.links[index];
        link.used = peer.sent;
        let name = peer.peer.name.as_str();
        let peer_url = match &peer.reach {
            Reach::Nats { at, .. } => at.as_str(),
            _ => peer.peer.url.as_deref().unwrap_or("in-process:"),
        };
        let secret = match peer.peer.secret {
            true => self.options.secret.as_deref(),
            false => None,
        };

        // A link that went idle may have been closed by the peer since (it restarted, say):
        // notice before sending, so the message goes on a fresh link instead of into the void.
        if let Some(ws) = &mut link.ws
            && let Some(reason) = closed_while_idle(ws)
        {
            link.ws = None;
            self.events.emit(Event::PeerDown {
                peer: name,
                reason: &reason,
            });
        }
        // A peer that was never up is waited for as long as the node runs: the order in which
        // nodes start does not matter. Once it has been up, reconnect for half the timeout at
        // most, so that when this node relays for another, our error reaches upstream before
        // the upstream node's own deadline.
        let reconnect_until = peer.ever_up.then(|| Instant::now() + timeout / 2);
        let mut first_attempt = true;
        loop {
            let ws = match &mut link.ws {
                Some(ws) => ws,
                None => {
                    let target = Target {
                        peer: name,
                        peer_url,
                        url: &link.url,
                        channel: &link.channel,
                        reach: &peer.reach,
                        from: &self.name,
                        secret,
                    };
                    // Boxed: opening a link is rare, and its future (a TLS or websocket
                    // handshake) is large; inline, every node would carry it while idle.
                    let ws = Box::pin(connect(
                        &self.events,
                        &target,
                        &self.options,
                        &mut self.rng,
                        reconnect_until,
                        &mut peer.said_waiting,
                    ))
                    .await?;
                    if !std::mem::replace(&mut peer.ever_up, true) {
                        // The wait for the peer to come up was not the message's time.
                        started = Instant::now();
                        deadline = started + timeout;
                    }
                    link.ws.insert(ws)
                }
            };
            let sent = timeout_at(deadline, ws.send(Message::Text(text.0.clone()))).await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    // Nothing was acknowledged on this link and the message did not leave: it
                    // is safe to send it once more on a fresh link.
                    let reason = client::describe(&error);
                    link.ws = None;
                    self.events.emit(Event::PeerDown {
                        peer: name,
                        reason: &reason,
                    });
                    if std::mem::take(&mut first_attempt) {
                        continue;
                    }
                    return Err(SendError::Closed {
                        peer: name.to_owned(),
                        reason,
                    });
                }
                Err(_) => {
                    link.ws = None; // dropping the stream closes the socket
                    self.events.emit(Event::PeerDown {
                        peer: name,
                        reason: "could not take the message in time; link dropped",
                    });
                    return Err(SendError::TimedOut {
                        peer: name.to_owned(),
                        timeout,
                    });
                }
            }
            return match timeout_at(deadline, read_ack(ws)).await {
                Ok(Ok(ack)) => {
                    link.pinged = false; // an ack is as good as a pong
                    Ok((ack, started.elapsed()))
                }
                Ok(Err(reason)) => {
                    let undelivered = ws.undelivered();
                    link.ws = None;
                    self.events.emit(Event::PeerDown {
                        peer: name,
                        reason: &reason,
                    });
                    if undelivered && Instant::now() < deadline {
                        // It reached no one (through NATS: no copy of the peer was up): send
                        // it again once one is, within the deadline.
                        continue;
                    }
                    Err(SendError::Closed {
                        peer: name.to_owned(),
                        reason,
                    })
                }
                Err(_) => {
                    // A late ack would be taken for the next message's: this link is done.
                    link.ws = None; // dropping the stream closes the socket
                    self.events.emit(Event::PeerDown {
                        peer: name,
                        reason: "no acknowledgement in time; link dropped",
                    });
                    Err(SendError::TimedOut {
                        peer: name.to_owned(),
                        timeout,
                    })
                }
            };
        }
    }

    /// Keep idle links honest: drop a link that answered nothing since the last round's ping
    /// (the peer hangs, or the network between went away), or that the peer closed; ping
    /// the others. The node calls this every `timeout`, never while a message is in flight.
    pub(crate) fn keepalive(&mut self) {
        let every = self.options.timeout.as_secs_f64();
        let mut pinged = 0usize;
        for peer in &mut self.peers {
            for link in &mut peer.links {
                let Some(ws) = &mut link.ws else { continue };
                if !ws.needs_pings() {
                    // Nothing between the two nodes can hang: only a close needs noticing.
                    if let Some(reason) = closed_while_idle(ws) {
                        link.ws = None;
                        self.events.emit(Event::PeerDown {
                            peer: &peer.peer.name,
                            reason: &reason,
                        });
                    }
                    continue;
                }
                let mut answered = false;
                let broken = loop {
                    match poll_now(ws.next()) {
                        None => break None,
                        Some(Some(Ok(Message::Pong(_)))) => answered = true,
                        Some(Some(Ok(Message::Ping(_) | Message::Frame(_)))) => {}
                        Some(Some(Ok(Message::Close(frame)))) => {
                            break Some(close_reason(frame.as_ref()));
                        }
                        Some(Some(Ok(_))) => {
                            break Some("sent a message nobody asked for".to_owned());
                        }
                        Some(Some(Err(error))) => break Some(client::describe(&error)),
                        Some(None) => break Some("connection closed".to_owned()),
                    }
                };
                let broken = broken.or_else(|| {
                    (link.pinged && !answered)
                        .then(|| format!("no answer to a ping within {every}s"))
                });
                if let Some(reason) = broken {
                    link.ws = None;
                    link.pinged = false;
                    self.events.emit(Event::PeerDown {
                        peer: &peer.peer.name,
                        reason: &reason,
                    });
                    continue;
                }
                // Never wait here: a ping that cannot be written now stays buffered, and a
                // link that stays that full will miss its pong next round.
                if let Some(Err(error)) = poll_now(ws.send(Message::Ping(Default::default()))) {
                    let reason = client::describe(&error);
                    link.ws = None;
                    self.events.emit(Event::PeerDown {
                        peer: &peer.peer.name,
                        reason: &reason,
                    });
                    continue;
                }
                link.pinged = true;
                pinged += 1;
            }
        }
        if pinged > 0 {
            tracing::debug!("keepalive: {pinged} idle links pinged");
        }
    }

    /// Close every link with 1001 (going away), as a node does when it stops.
    pub(crate) async fn close_all(&mut self) {
        let frame = CloseFrame {
            code: CloseCode::Away,
            reason: "node stopping".into(),
        };
        for peer in &mut self.peers {
            for link in &mut peer.links {
                if let Some(mut ws) = link.ws.take() {
                    let _ = tokio::time::timeout(
                        Duration::from_millis(200),
                        ws.send(Message::Close(Some(frame.clone()))),
                    )
                    .await;
                }
            }
        }
    }
}

/// How long closing a link waits for the peer's close frame, at most.
const CLOSE_WAIT: Duration = Duration::from_millis(200);

/// Close a link with 1000 (normal) and wait, briefly, for the peer's close frame: the peer
/// then knows the link is gone before the link that replaces it arrives.
async fn close_normally(mut ws: Wire, deadline: Instant) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = timeout_at(deadline.min(Instant::now() + CLOSE_WAIT), async {
        if ws.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Poll `work` once, outside tokio's cooperative budget: once the node task has spent its
/// budget, every budgeted poll answers "not ready", so a keepalive round over more than a few
/// dozen links would see no pong and declare healthy links dead.
fn poll_now<F: Future>(work: F) -> Option<F::Output> {
    tokio::task::coop::unconstrained(work).now_or_never()
}

/// If an idle link has something to read, the peer closed it (or broke it): say how.
fn closed_while_idle(ws: &mut Wire) -> Option<String> {
    loop {
        match poll_now(ws.next()) {
            None => return None,
            Some(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Some(Some(Ok(Message::Close(frame)))) => return Some(close_reason(frame.as_ref())),
            Some(Some(Ok(_))) => return Some("sent a message nobody asked for".to_owned()),
            Some(Some(Err(error))) => return Some(client::describe(&error)),
            Some(None) => return Some("connection closed".to_owned()),
        }
    }
}

fn close_reason(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(frame) if frame.reason.is_empty() => format!("closed ({})", u16::from(frame.code)),
        Some(frame) => format!("closed ({}: {})", u16::from(frame.code), frame.reason),
        None => "closed".to_owned(),
    }
}

/// Wait for the acknowledgement of the message just sent.
async fn read_ack(ws: &mut Wire) -> Result<Ack, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(Ack(text)),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(_))) => return Err("answered with a binary frame".to_owned()),
            Some(Ok(Message::Close(frame))) => return Err(close_reason(frame.as_ref())),
            Some(Err(error)) => return Err(client::describe(&error)),
            None => return Err("connection closed".to_owned()),
        }
    }
}

/// Where a link goes.
struct Target<'a> {
    /// The peer's name.
    peer: &'a str,
    /// The peer's URL, without a channel.
    peer_url: &'a str,
    /// The link's URL, with its channel.
    url: &'a str,
    /// The link's channel.
    channel: &'a str,
    /// How the peer is reached.
    reach: &'a Reach,
    /// The node the link is from.
    from: &'a Arc<str>,
    secret: Option<&'a str>,
}

/// Why one attempt to open a link failed.
struct Failure {
    reason: String,
    /// Worth another attempt: the peer may be starting, or restarting.
    transient: bool,
}

/// One attempt to open a link to `target`, by whatever reaches it.
async fn open(target: &Target<'_>, options: &LinkOptions) -> Result<Wire, Failure> {
    match target.reach {
        Reach::Ws(_) => client::connect_within(
            target.url,
            target.secret,
            options.tls.as_ref(),
            options.max_message,
            options.timeout,
        )
        .await
        .map(Wire::from)
        .map_err(|error| Failure {
            reason: client::describe(&error),
            transient: client::is_transient(&error),
        }),
        Reach::Local(door) => wire::connect(door, target.from, target.channel, options.max_message)
            .await
            .map_err(|refused| match refused {
                Refused::Full => Failure {
                    reason: "too many connections".to_owned(),
                    transient: false,
                },
                Refused::Gone => Failure {
                    reason: "it is not running".to_owned(),
                    transient: true,
                },
            }),
        Reach::Nats { client, .. } => {
            // A copy that takes the probe but never answers it is tried again.
            let probe = crate::nats::link::NatsLink::open(client, target.peer, target.channel);
            match tokio::time::timeout(options.timeout, probe).await {
                Ok(Ok(link)) => Ok(Wire::Nats(Box::new(link))),
                Ok(Err(unopened)) => Err(Failure {
                    reason: unopened.reason,
                    transient: unopened.transient,
                }),
                Err(_) => Err(Failure {
                    reason: format!("no copy answered within {}s", options.timeout.as_secs_f64()),
                    transient: true,
                }),
            }
        }
        Reach::Nowhere => Err(Failure {
            reason: "it has no port, and it does not run in this process".to_owned(),
            transient: false,
        }),
    }
}

/// Open a link, retrying transient failures with capped, jittered backoff until `until`, or
/// for as long as it takes when there is no `until` (a peer that was never up), saying so
/// once per peer (`said_waiting`). Each attempt is bounded by the node's timeout, so that a
/// peer that accepts connections but never answers them is tried again.
async fn connect(
    events: &Events,
    target: &Target<'_>,
    options: &LinkOptions,
    rng: &mut SmallRng,
    until: Option<Instant>,
    said_waiting: &mut bool,
) -> Result<Wire, SendError> {
    let Target {
        peer,
        peer_url,
        url,
        ..
    } = *target;
    let mut pause = BACKOFF_FIRST;
    let mut attempts = 0u32;
    let reason = loop {
        attempts += 1;
        let attempt = open(target, options);
        let connected = match until {
            Some(until) => timeout_at(until, attempt).await,
            None => Ok(attempt.await),
        };
        let reason = match connected {
            Ok(Ok(ws)) => {
                events.emit(Event::PeerUp { peer, url });
                return Ok(ws);
            }
            Ok(Err(failure)) if !failure.transient => failure.reason,
            Ok(Err(Failure { reason, .. })) => {
                // Jitter spreads the reconnects of many nodes after a peer restarts.
                let jittered = pause.mul_f64(rng.random_range(0.5..1.5));
                match until {
                    None if !std::mem::replace(said_waiting, true) => {
                        events.emit(Event::PeerWaiting {
                            peer,
                            url: peer_url,
                            reason: &reason,
                        });
                    }
                    None => tracing::trace!(
                        peer,
                        "{peer} still not up after {attempts} attempts ({})",
                        shown(&reason)
                    ),
                    Some(until) if Instant::now() + jittered >= until => break reason,
                    Some(_) if attempts == 1 => tracing::info!(
                        peer,
                        "{peer} not reachable yet at {} ({}); retrying",
                        shown(url),
                        shown(&reason)
                    ),
                    Some(_) => {}
                }
                sleep(jittered).await;
                pause = (pause * 2).min(BACKOFF_CAP);
                continue;
            }
            Err(_) => "timed out connecting".to_owned(),
        };
        break reason;
    };
    let reason = match attempts {
        1 => reason,
        _ => format!("{reason} (after {attempts} attempts)"),
    };
    // No PeerDown: the link never came up, and the caller reports the failed message.
    Err(SendError::Unreachable {
        peer: peer.to_owned(),
        url: url.to_owned(),
        reason,
    })
}
