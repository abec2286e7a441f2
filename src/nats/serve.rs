//! A node answering through NATS: it subscribes to `arduino.<node>` and `arduino.<node>.>`
//! in the queue group `<node>`, and feeds each channel's requests into the node through its
//! door, as one in-process connection per channel, publishing each ack to its request's reply
//! subject, in order. Channels and requests in flight are bounded; what is over a bound is
//! answered `error: ...` in words at once.
//!
//! One task does it all, for every channel: it takes the requests from the subscriptions and
//! the acks from the node's connections, so that a message costs no more task hops than the
//! node's own.

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::Duration,
};

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream};
use tokio::{sync::mpsc, time::Instant};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{Client, Msg, ROOT};
use crate::wire::{self, Door, Refused, Wire};

/// How many channels a node serves through NATS at once.
pub(crate) const MAX_CHANNELS: usize = 64;
/// How many requests of one channel may be in the node at once; more are refused.
pub(crate) const IN_FLIGHT: usize = 256;
/// How many requests may wait for the serving task to take them; more are refused.
const WAITING: usize = 1024;
/// How long the server has to confirm the unsubscription when the node stops.
const UNSUBSCRIBE_WAIT: Duration = Duration::from_millis(100);
/// How long the node has, once stopping, to answer what it was given.
const ANSWER_WAIT: Duration = Duration::from_millis(500);
/// How long the acks of the last requests have to reach the server when the node stops.
const LAST_FLUSH: Duration = Duration::from_millis(150);

/// What a probe is answered: see [`super::PROBE`].
const UP: &[u8] = b"up";
const STOPPING: &[u8] = b"error: the node is stopping";

/// One channel's connection into the node, with where each of its acks goes, in order.
struct Channel {
    subject: Bytes,
    wire: Wire,
    waiting: VecDeque<Option<Bytes>>,
}

/// The channels a node serves through NATS, by subject.
#[derive(Default)]
struct Channels {
    list: Vec<Channel>,
    index: HashMap<Bytes, usize>,
    /// Where the next poll for acks starts, so that no channel starves the others.
    next: usize,
}

impl Channels {
    /// The next ack from any channel, or a channel that ended (with why): its place.
    async fn next(&mut self) -> (usize, Option<Utf8Bytes>, Option<String>) {
        std::future::poll_fn(|cx| {
            let count = self.list.len();
            for step in 0..count {
                let at = (self.next + step) % count;
                let wire = &mut self.list[at].wire;
                let item = match Pin::new(wire).poll_next(cx) {
                    Poll::Pending => continue,
                    Poll::Ready(item) => item,
                };
                self.next = (at + 1) % count;
                return Poll::Ready(match item {
                    Some(Ok(Message::Text(ack))) => (at, Some(ack), None),
                    Some(Ok(Message::Close(Some(frame)))) if frame.reason != "node stopping" => (
                        at,
                        None,
                        Some(format!("the node closed the channel ({})", frame.reason)),
                    ),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        (at, None, Some("the node is stopping".to_owned()))
                    }
                    // Nothing else comes on an in-process connection: skip it.
                    Some(Ok(_)) => (at, None, None),
                });
            }
            Poll::Pending
        })
        .await
    }

    /// Forget the channel at `at`, answering what it still owed with `why`.
    fn remove(&mut self, at: usize, client: &Client, why: &str) {
        let channel = self.list.swap_remove(at);
        self.index.remove(&channel.subject);
        if let Some(moved) = self.list.get(at) {
            self.index.insert(moved.subject.clone(), at);
        }
        let why = Bytes::from(format!("error: {why}"));
        for reply in channel.waiting.into_iter().flatten() {
            client.publish(reply, None, why.clone());
        }
    }
}

/// Answer requests for node `node` through `client` until `stop`, feeding them through
/// `door`.
pub(crate) async fn serve(client: Client, node: String, door: Arc<Door>, stop: CancellationToken) {
    let base = format!("{ROOT}.{node}");
    let (requests_tx, mut requests) = mpsc::channel(WAITING);
    let overflow = Bytes::from(format!(
        "error: {node} has too many requests waiting (over {WAITING}): try again later"
    ));
    let subs = [
        client.subscribe(
            &base,
            Some(&node),
            requests_tx.clone(),
            Some(overflow.clone()),
        ),
        client.subscribe(
            &format!("{base}.>"),
            Some(&node),
            requests_tx,
            Some(overflow),
        ),
    ];
    info!("answering on {base} and {base}.> through NATS, in queue group {node:?}");
    let from: Arc<str> = Arc::from("nats");
    let mut channels = Channels::default();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            (at, ack, ended) = channels.next() => {
                if let Some(ack) = ack {
                    let channel = &mut channels.list[at];
                    if let Some(Some(reply)) = channel.waiting.pop_front() {
                        client.publish(reply, None, Bytes::from(ack));
                    }
                }
                if let Some(why) = ended {
                    channels.remove(at, &client, &why);
                }
            }
            msg = requests.recv() => match msg {
                Some(msg) => take(msg, &client, &node, &base, &door, &from, &mut channels).await,
                None => break,
            },
        }
    }
    // Unsubscribe first, and make sure the server has seen it: then nothing more comes.
    for sid in subs {
        client.unsubscribe(sid);
    }
    let _ = tokio::time::timeout(UNSUBSCRIBE_WAIT, client.flush()).await;
    let mut refused = 0u64;
    while let Ok(msg) = requests.try_recv() {
        if let Some(reply) = msg.reply {
            client.publish(reply, None, Bytes::from_static(STOPPING));
            refused += 1;
        }
    }
    if refused > 0 {
        debug!("{refused} requests not started: answered that the node is stopping");
    }
    // What is in the node is answered by it, or told it stopped as it closes the channels.
    let deadline = Instant::now() + ANSWER_WAIT;
    while channels
        .list
        .iter()
        .any(|channel| !channel.waiting.is_empty())
    {
        match tokio::time::timeout_at(deadline, channels.next()).await {
            Ok((at, ack, ended)) => {
                if let Some(ack) = ack
                    && let Some(Some(reply)) = channels.list[at].waiting.pop_front()
                {
                    client.publish(reply, None, Bytes::from(ack));
                }
                if let Some(why) = ended {
                    channels.remove(at, &client, &why);
                }
            }
            Err(_) => break,
        }
    }
    while !channels.list.is_empty() {
        let at = channels.list.len() - 1;
        let _ = channels.list[at].wire.send(Message::Close(None)).await;
        channels.remove(at, &client, "the node is stopping");
    }
    let _ = tokio::time::timeout(LAST_FLUSH, client.flush()).await;
}

/// Take one request: a probe is answered at once; a message goes into the node on its
/// channel's connection (opened on first use), or is answered why not.
async fn take(
    msg: Msg,
    client: &Client,
    node: &str,
    base: &str,
    door: &Door,
    from: &Arc<str>,
    channels: &mut Channels,
) {
    let Msg {
        subject,
        reply,
        headers,
        payload,
    } = msg;
    let answer = |why: String| {
        if let Some(reply) = &reply {
            client.publish(reply.clone(), None, Bytes::from(format!("error: {why}")));
        }
    };
    if headers.is_some_and(|headers| is_probe(&headers)) {
        if let Some(reply) = &reply {
            client.publish(reply.clone(), None, Bytes::from_static(UP));
        }
        return;
    }
    let Ok(text) = Utf8Bytes::try_from(payload) else {
        answer("the message is not UTF-8 text".to_owned());
        return;
    };
    let at = match channels.index.get(&subject) {
        Some(&at) => at,
        None if channels.list.len() >= MAX_CHANNELS => {
            answer(format!(
                "{node} serves {MAX_CHANNELS} channels through NATS at most: this one is one too \
                 many"
            ));
            return;
        }
        None => match open(door, from, base, &subject).await {
            Ok(wire) => {
                channels.list.push(Channel {
                    subject: subject.clone(),
                    wire,
                    waiting: VecDeque::with_capacity(4),
                });
                channels.index.insert(subject, channels.list.len() - 1);
                channels.list.len() - 1
            }
            Err(why) => {
                answer(why);
                return;
            }
        },
    };
    let channel = &mut channels.list[at];
    if channel.waiting.len() >= IN_FLIGHT {
        answer(format!(
            "{node} has too many requests in flight on this channel (over {IN_FLIGHT}): try \
             again later"
        ));
        return;
    }
    // An in-process connection takes a message at once, without waiting.
    match send_now(&mut channel.wire, Message::Text(text)) {
        Ok(()) => channel.waiting.push_back(reply),
        Err(_) => {
            channel.waiting.push_back(reply);
            channels.remove(at, client, "the node closed the channel");
        }
    }
}

/// Hand `message` to an in-process connection: it never has to wait.
fn send_now(wire: &mut Wire, message: Message) -> Result<(), tungstenite::Error> {
    let mut wire = Pin::new(wire);
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    match wire.as_mut().poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => wire.start_send(message),
        Poll::Ready(Err(error)) => Err(error),
        Poll::Pending => Err(tungstenite::Error::AlreadyClosed),
    }
}

/// Whether `headers` mark a probe.
fn is_probe(headers: &[u8]) -> bool {
    headers
        .split(|&b| b == b'\n')
        .any(|line| line.starts_with(super::PROBE_NAME.as_bytes()))
}

/// Open an in-process connection to the node for the channel of `subject`.
async fn open(door: &Door, from: &Arc<str>, base: &str, subject: &[u8]) -> Result<Wire, String> {
    let rest = subject.get(base.len()..).unwrap_or_default();
    let channel = String::from_utf8_lossy(rest).replace('.', "/");
    let channel = if channel.is_empty() {
        "/".to_owned()
    } else {
        channel
    };
    // Acks of any size: what cannot be published is answered in words where it is published.
    wire::connect(door, from, &channel, usize::MAX)
        .await
        .map_err(|refused| match refused {
            Refused::Full => "the node has too many connections".to_owned(),
            Refused::Gone => "the node is stopping".to_owned(),
        })
}
