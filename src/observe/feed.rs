//! A node's events as JSON lines on a bounded broadcast channel, made only while someone
//! listens: with no subscriber an event costs one atomic load.
//!
//! Each line is one JSON object: `time` (RFC 3339, UTC, milliseconds:
//! `2025-01-31T12:00:01.234Z`), `node`, `event` (snake case: `listening`, `client_up`,
//! `client_down`, `client_refused`, `message`, `ack`, `peer_up`, `peer_waiting`, `peer_down`,
//! `peer_ack`,
//! `send_failed`, `stopping`, and `lagged` for a subscriber that fell behind) and the event's
//! own fields (`addr`, `client`, `channel`, `text`, `ack`, `micros`, `peer`, `url`, `reason`,
//! `normal`, `missed`). Text from outside is cut after 1 KiB, as `...(N bytes)`.

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use serde::{Serialize, Serializer};
use tokio::sync::broadcast;

use crate::events::{Client, Event, Observer};

/// How many events a subscriber may fall behind before it misses some.
pub const CAPACITY: usize = 1024;

/// How much of a text from outside (a message, an ack, a reason) an event carries.
const MAX_FIELD: usize = 1024;

/// A node's event feed. Register it as an [`Observer`] of the node's events; each
/// [`Subscription`] then gets every event as a JSON line, or a `lagged` line saying how many
/// it missed. Clones share the feed.
#[derive(Clone)]
pub struct Feed {
    shared: Arc<Shared>,
}

struct Shared {
    node: Box<str>,
    /// Counted apart from the channel's own count, which takes a lock to read.
    subscribers: AtomicUsize,
    lines_tx: broadcast::Sender<Bytes>,
}

impl fmt::Debug for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feed")
            .field("node", &self.shared.node)
            .field("subscribers", &self.subscribers())
            .finish()
    }
}

impl Feed {
    /// The feed of the node `node`, keeping up to `capacity` events for subscribers that fall
    /// behind (at least one).
    pub fn new(node: &str, capacity: usize) -> Self {
        let (lines_tx, _) = broadcast::channel(capacity.max(1));
        Self {
            shared: Arc::new(Shared {
                node: node.into(),
                subscribers: AtomicUsize::new(0),
                lines_tx,
            }),
        }
    }

    /// The node this feed is about.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// How many subscriptions are open.
    pub fn subscribers(&self) -> usize {
        self.shared.subscribers.load(Ordering::Relaxed)
    }

    /// Every event from now on, until the subscription is dropped.
    pub fn subscribe(&self) -> Subscription {
        let lines_rx = self.shared.lines_tx.subscribe();
        self.shared.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            lines_rx,
            feed: self.clone(),
        }
    }

    fn send(&self, node: &str, what: What<'_>) {
        // No subscriber left since the caller looked: the line is dropped, as it would be.
        let _ = self.shared.lines_tx.send(line(node, what));
    }
}

impl Observer for Feed {
    fn observe(&self, node: &str, event: &Event<'_>) {
        // The whole cost of an event nobody listens to.
        if self.subscribers() == 0 {
            return;
        }
        self.send(node, what(event));
    }
}

/// `node`'s `event` as one JSON line (without a newline), as a feed's subscribers get it.
pub(crate) fn event_line(node: &str, event: &Event<'_>) -> Bytes {
    line(node, what(event))
}

fn what<'a>(event: &Event<'a>) -> What<'a> {
    match *event {
        Event::Listening { addr } => What::Listening { addr },
        Event::ClientUp { client, channel } => What::ClientUp {
            client,
            channel: Cut(channel),
        },
        Event::ClientDown {
            client,
            reason,
            normal,
        } => What::ClientDown {
            client,
            reason: Cut(reason),
            normal,
        },
        Event::ClientRefused { client, reason } => What::ClientRefused {
            client,
            reason: Cut(reason),
        },
        Event::MessageIn {
            client,
            channel,
            text,
        } => What::Message {
            client,
            channel: Cut(channel),
            text: Cut(text),
        },
        Event::AckOut { client, ack, took } => What::Ack {
            client,
            ack: Cut(ack),
            micros: micros(took),
        },
        Event::PeerUp { peer, url } => What::PeerUp {
            peer: Cut(peer),
            url: Cut(url),
        },
        Event::PeerWaiting { peer, url, reason } => What::PeerWaiting {
            peer: Cut(peer),
            url: Cut(url),
            reason: Cut(reason),
        },
        Event::PeerDown { peer, reason } => What::PeerDown {
            peer: Cut(peer),
            reason: Cut(reason),
        },
        Event::PeerAck { peer, ack, took } => What::PeerAck {
            peer: Cut(peer),
            ack: Cut(ack),
            micros: micros(took),
        },
        Event::SendFailed { peer, reason } => What::SendFailed {
            peer: Cut(peer),
            reason: Cut(reason),
        },
        Event::Stopping => What::Stopping,
    }
}

/// One subscriber's view of a [`Feed`].
pub struct Subscription {
    lines_rx: broadcast::Receiver<Bytes>,
    feed: Feed,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("node", &self.feed.node())
            .finish()
    }
}

impl Subscription {
    /// The next event as a JSON line (without a newline), or a `lagged` line when this
    /// subscriber fell so far behind that it missed some. Cancel safe.
    pub async fn recv(&mut self) -> Bytes {
        match self.lines_rx.recv().await {
            Ok(line) => line,
            Err(broadcast::error::RecvError::Lagged(missed)) => self.lagged(missed),
            // The subscription holds the sender: the channel cannot close while it lives.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }

    /// The next event if one is waiting, as [`Subscription::recv`].
    pub fn try_recv(&mut self) -> Option<Bytes> {
        match self.lines_rx.try_recv() {
            Ok(line) => Some(line),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => Some(self.lagged(missed)),
            Err(_) => None,
        }
    }

    fn lagged(&self, missed: u64) -> Bytes {
        line(self.feed.node(), What::Lagged { missed })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.shared.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An event as it is written: the time and the node, then the event's name and fields.
#[derive(Serialize)]
struct Line<'a> {
    time: Rfc3339,
    node: Cut<'a>,
    #[serde(flatten)]
    what: What<'a>,
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum What<'a> {
    Listening {
        addr: SocketAddr,
    },
    ClientUp {
        client: Client<'a>,
        channel: Cut<'a>,
    },
    ClientDown {
        client: Client<'a>,
        reason: Cut<'a>,
        normal: bool,
    },
    ClientRefused {
        client: Client<'a>,
        reason: Cut<'a>,
    },
    Message {
        client: Client<'a>,
        channel: Cut<'a>,
        text: Cut<'a>,
    },
    Ack {
        client: Client<'a>,
        ack: Cut<'a>,
        micros: u64,
    },
    PeerUp {
        peer: Cut<'a>,
        url: Cut<'a>,
    },
    PeerWaiting {
        peer: Cut<'a>,
        url: Cut<'a>,
        reason: Cut<'a>,
    },
    PeerDown {
        peer: Cut<'a>,
        reason: Cut<'a>,
    },
    PeerAck {
        peer: Cut<'a>,
        ack: Cut<'a>,
        micros: u64,
    },
    SendFailed {
        peer: Cut<'a>,
        reason: Cut<'a>,
    },
    Stopping,
    Lagged {
        missed: u64,
    },
}

fn line(node: &str, what: What<'_>) -> Bytes {
    let line = Line {
        time: Rfc3339(SystemTime::now()),
        node: Cut(node),
        what,
    };
    // Writing plain data to a Vec cannot fail; were it to, the event goes without its fields.
    match serde_json::to_vec(&line) {
        Ok(json) => Bytes::from(json),
        Err(_) => Bytes::from_static(b"{\"event\":\"other\"}"),
    }
}

fn micros(took: Duration) -> u64 {
    u64::try_from(took.as_micros()).unwrap_or(u64::MAX)
}

/// Text from outside, cut after [`MAX_FIELD`] bytes so that a 1 MiB message is not a 1 MiB
/// event for every subscriber.
struct Cut<'a>(&'a str);

impl Serialize for Cut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.0;
        if text.len() <= MAX_FIELD {
            return serializer.serialize_str(text);
        }
        let mut end = MAX_FIELD;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        serializer.collect_str(&format_args!("{}...({} bytes)", &text[..end], text.len()))
    }
}

/// A moment as RFC 3339 in UTC with milliseconds: `2025-01-31T12:00:01.234Z`.
pub(crate) struct Rfc3339(pub(crate) SystemTime);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Before 1970 only on a clock set wrong: shown as 1970.
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (year, month, day) = civil_from_days(secs / 86_400);
        let of_day = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            of_day / 3600,
            of_day % 3600 / 60,
            of_day % 60,
            since.subsec_millis()
        )
    }
}

/// The date `days` days after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> String {
        Rfc3339(UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis)).to_string()
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_735_689_599, 999), "2024-12-31T23:59:59.999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    }

    fn json(line: &Bytes) -> serde_json::Value {
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn nothing_is_made_without_a_subscriber() {
        let feed = Feed::new("pin", 4);
        feed.observe("pin", &Event::Stopping);
        let mut sub = feed.subscribe();
        assert_eq!(feed.subscribers(), 1);
        assert!(sub.try_recv().is_none());
        drop(sub);
        assert_eq!(feed.subscribers(), 0);
    }

    #[test]
    fn every_event_has_a_name_and_its_fields() {
        let feed = Feed::new("pin", 64);
        let mut sub = feed.subscribe();
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let client = Client::Addr(addr);
        let events = [
            Event::Listening { addr },
            Event::ClientUp {
                client,
                channel: "/datafeed",
            },
            Event::ClientDown {
                client,
                reason: "closed",
                normal: true,
            },
            Event::ClientRefused {
                client,
                reason: "no secret",
            },
            Event::MessageIn {
                client,
                channel: "/datafeed",
                text: "0",
            },
            Event::AckOut {
                client,
                ack: "acknowledged",
                took: Duration::from_micros(7),
            },
            Event::PeerUp {
                peer: "buzzer",
                url: "ws://127.0.0.1:1/datafeed",
            },
            Event::PeerWaiting {
                peer: "buzzer",
                url: "ws://127.0.0.1:1",
                reason: "refused",
            },
            Event::PeerDown {
                peer: "buzzer",
                reason: "refused",
            },
            Event::PeerAck {
                peer: "buzzer",
                ack: "...",
                took: Duration::from_micros(41),
            },
            Event::SendFailed {
                peer: "buzzer",
                reason: "timed out",
            },
            Event::Stopping,
        ];
        for event in &events {
            feed.observe("pin", event);
        }
        let seen: Vec<_> = std::iter::from_fn(|| sub.try_recv())
            .map(|l| json(&l))
            .collect();
        let names: Vec<_> = seen.iter().map(|v| v["event"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "listening",
                "client_up",
                "client_down",
                "client_refused",
                "message",
                "ack",
                "peer_up",
                "peer_waiting",
                "peer_down",
                "peer_ack",
                "send_failed",
                "stopping",
            ]
        );
        assert!(seen.iter().all(|v| v["node"] == "pin"));
        assert!(
            seen.iter()
                .all(|v| v["time"].as_str().unwrap().ends_with('Z'))
        );
        assert_eq!(seen[1]["channel"], "/datafeed");
        assert_eq!(seen[2]["normal"], true);
        assert_eq!(seen[4]["text"], "0");
        assert_eq!(seen[4]["client"], "127.0.0.1:4000");
        assert_eq!(seen[5]["ack"], "acknowledged");
        assert_eq!(seen[5]["micros"], 7);
        assert_eq!(seen[6]["url"], "ws://127.0.0.1:1/datafeed");
        assert_eq!(seen[7]["url"], "ws://127.0.0.1:1");
        assert_eq!(seen[9]["micros"], 41);
        assert_eq!(seen[10]["reason"], "timed out");
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_told_how_many_it_missed() {
        let feed = Feed::new("pin", 4);
        let mut sub = feed.subscribe();
        for _ in 0..10 {
            feed.observe("pin", &Event::Stopping);
        }
        let first = json(&sub.try_recv().unwrap());
        assert_eq!(first["event"], "lagged");
        assert_eq!(first["missed"], 6);
        assert_eq!(std::iter::from_fn(|| sub.try_recv()).count(), 4);
    }

    #[test]
    fn long_text_is_cut() {
        let feed = Feed::new("pin", 4);
        let mut sub = feed.subscribe();
        let text = "é".repeat(2000);
        feed.observe(
            "pin",
            &Event::MessageIn {
                client: Client::Addr("127.0.0.1:1".parse().unwrap()),
                channel: "/",
                text: &text,
            },
        );
        let seen = json(&sub.try_recv().unwrap());
        let shown = seen["text"].as_str().unwrap();
        assert!(shown.ends_with("...(4000 bytes)"), "{shown}");
        assert!(shown.len() < 1100);
    }
}
