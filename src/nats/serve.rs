//! A node answering through NATS: it subscribes to `arduino.<node>` and `arduino.<node>.>`
//! in the queue group `<node>`, and feeds each channel's requests into the node through its
//! door, as one in-process connection per channel, publishing each ack to its request's reply
//! subject, in order. Channels and requests in flight are bounded; what is over a bound is
//! answered `error: ...` in words at once.

use std::{collections::HashMap, collections::VecDeque, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info};

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
/// How long the acks of the last requests have to reach the server when the node stops.
const LAST_FLUSH: Duration = Duration::from_millis(200);

/// What a probe is answered: see [`super::PROBE`].
const UP: &[u8] = b"up";

/// One channel's requests, on their way into the node: each with where its ack goes.
type Requests = mpsc::Sender<(Option<Bytes>, Utf8Bytes)>;

/// Answer requests for node `node` through `client` until `stop`, feeding them through
/// `door`. Its channel tasks are spawned on `tasks`.
pub(crate) async fn serve(
    client: Client,
    node: String,
    door: Arc<Door>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
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
    let mut channels: HashMap<Bytes, Requests> = HashMap::new();
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            msg = requests.recv() => match msg {
                Some(msg) => msg,
                None => break,
            },
        };
        let Msg {
            subject,
            reply,
            headers,
            payload,
        } = msg;
        if headers.is_some_and(|headers| is_probe(&headers)) {
            if let Some(reply) = reply {
                client.publish(reply, None, Bytes::from_static(UP));
            }
            continue;
        }
        let answer = |reason: String| {
            if let Some(reply) = &reply {
                client.publish(reply.clone(), None, Bytes::from(format!("error: {reason}")));
            }
        };
        let Ok(text) = Utf8Bytes::try_from(payload) else {
            answer("the message is not UTF-8 text".to_owned());
            continue;
        };
        if let Some(channel) = channels.get(&subject) {
            match channel.try_send((reply.clone(), text)) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    answer(format!(
                        "{node} has too many requests in flight on this channel (over \
                         {IN_FLIGHT}): try again later"
                    ));
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed((reply_back, text))) => {
                    // The node closed that connection: open another for this request.
                    channels.remove(&subject);
                    let _ = reply_back;
                    let opened = open_channel(&client, &door, &from, &base, &subject, &tasks)
                        .await
                        .and_then(|channel| {
                            channel
                                .try_send((reply.clone(), text))
                                .map_err(|_| "its connection closed at once".to_owned())?;
                            Ok(channel)
                        });
                    match opened {
                        Ok(channel) => {
                            channels.insert(subject, channel);
                        }
                        Err(reason) => answer(reason),
                    }
                    continue;
                }
            }
        }
        if channels.len() >= MAX_CHANNELS {
            answer(format!(
                "{node} serves {MAX_CHANNELS} channels through NATS at most: this one is one \
                 too many"
            ));
            continue;
        }
        match open_channel(&client, &door, &from, &base, &subject, &tasks).await {
            Ok(channel) => {
                let _ = channel.try_send((reply, text));
                channels.insert(subject, channel);
            }
            Err(reason) => answer(reason),
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
            client.publish(
                reply,
                None,
                Bytes::from_static(b"error: the node is stopping"),
            );
            refused += 1;
        }
    }
    if refused > 0 {
        debug!("{refused} requests not started: answered that the node is stopping");
    }
    // The channel tasks answer what is in the node as it closes their connections.
    drop(channels);
    let flushing = client.clone();
    tasks.spawn(
        async move {
            let _ = tokio::time::timeout(LAST_FLUSH, flushing.flush()).await;
        }
        .in_current_span(),
    );
}

/// Whether `headers` mark a probe.
fn is_probe(headers: &[u8]) -> bool {
    headers
        .split(|&b| b == b'\n')
        .any(|line| line.starts_with(super::PROBE_NAME.as_bytes()))
}

/// Open an in-process connection to the node for the channel of `subject`, and the task that
/// carries it.
async fn open_channel(
    client: &Client,
    door: &Door,
    from: &Arc<str>,
    base: &str,
    subject: &[u8],
    tasks: &TaskTracker,
) -> Result<Requests, String> {
    let rest = subject.get(base.len()..).unwrap_or_default();
    let channel = String::from_utf8_lossy(rest).replace('.', "/");
    let channel = if channel.is_empty() {
        "/".to_owned()
    } else {
        channel
    };
    let wire = wire::connect(door, from, &channel)
        .await
        .map_err(|refused| match refused {
            Refused::Full => "the node has too many connections".to_owned(),
            Refused::Gone => "the node is stopping".to_owned(),
        })?;
    let (requests_tx, requests) = mpsc::channel(IN_FLIGHT);
    tasks.spawn(carry(wire, requests, client.clone()).in_current_span());
    Ok(requests_tx)
}

/// Carry one channel's requests into the node and its acks back to their reply subjects, in
/// order, until the serving stops and the node has answered (or closed the connection).
async fn carry(
    mut wire: Wire,
    mut requests: mpsc::Receiver<(Option<Bytes>, Utf8Bytes)>,
    client: Client,
) {
    let mut waiting: VecDeque<Option<Bytes>> = VecDeque::with_capacity(4);
    let mut open = true;
    let closed = loop {
        tokio::select! {
            request = requests.recv(), if open => match request {
                Some((reply, text)) => {
                    if wire.send(Message::Text(text)).await.is_err() {
                        if let Some(reply) = reply {
                            client.publish(reply, None, Bytes::from_static(b"error: the node is stopping"));
                        }
                        break true;
                    }
                    waiting.push_back(reply);
                }
                None => {
                    open = false;
                    if waiting.is_empty() {
                        break false;
                    }
                }
            },
            ack = wire.next() => match ack {
                Some(Ok(Message::Text(ack))) => {
                    if let Some(Some(reply)) = waiting.pop_front() {
                        client.publish(reply, None, Bytes::from(ack));
                    }
                    if !open && waiting.is_empty() {
                        break false;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break true,
                Some(Ok(_)) => {}
            },
        }
    };
    // What the node did not answer, and what is still queued, is told the node stopped.
    requests.close();
    while let Ok((reply, _)) = requests.try_recv() {
        waiting.push_back(reply);
    }
    for reply in waiting.into_iter().flatten() {
        client.publish(
            reply,
            None,
            Bytes::from_static(b"error: the node is stopping"),
        );
    }
    if !closed {
        let _ = wire.send(Message::Close(None)).await;
    }
}
