//! One link to a peer through NATS, as [`crate::wire::Wire`] carries it: each message sent
//! is a request on the peer's subject for the link's channel, and its reply is the ack.

use std::{
    future::Future,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use super::{Client, PROBE, Reply, RequestError};

/// How long opening a link waits for the node's client to be connected.
const CONNECTING: Duration = Duration::from_millis(500);

/// A link through NATS: at most one request in flight, as every link has.
pub(crate) struct NatsLink {
    client: Client,
    subject: Bytes,
    reply: Option<Reply>,
    /// The last request reached no one (no responders, or not sent): it may be sent again.
    undelivered: bool,
    closed: bool,
}

/// Why one attempt to open a link through NATS failed.
pub(crate) struct Unopened {
    pub(crate) reason: String,
    /// Worth another attempt: no copy of the peer is up yet, or the server is away.
    pub(crate) transient: bool,
}

impl NatsLink {
    /// Open a link to `peer` on `channel`: check with a probe (answered by the peer's node,
    /// not its sketch) that a copy of the peer is up, so that a peer not up yet is waited
    /// for with the same backoff as a websocket peer.
    pub(crate) async fn open(
        client: &Client,
        peer: &str,
        channel: &str,
    ) -> Result<NatsLink, Unopened> {
        let subject = super::subject(peer, channel).map_err(|reason| Unopened {
            reason,
            transient: false,
        })?;
        let subject = Bytes::from(subject);
        let failed = |error: RequestError| Unopened {
            reason: match error {
                RequestError::NoResponders => format!("no {peer} is up"),
                other => other.to_string(),
            },
            transient: true,
        };
        // A client still connecting (the node just started) is given a moment, so that the
        // reason a peer is waited for is about the peer, not about this node's start.
        client
            .connected(CONNECTING)
            .await
            .map_err(|reason| failed(RequestError::NotConnected(reason)))?;
        let reply = client
            .start_request(subject.clone(), Some(PROBE), Bytes::new())
            .map_err(failed)?;
        match reply.await {
            Ok(Ok(_)) => Ok(NatsLink {
                client: client.clone(),
                subject,
                reply: None,
                undelivered: false,
                closed: false,
            }),
            Ok(Err(error)) => Err(failed(error)),
            Err(_) => Err(failed(RequestError::Lost(
                "the client is closed".to_owned(),
            ))),
        }
    }

    /// Whether the last message certainly reached no one, so that it may be sent again.
    pub(crate) fn undelivered(&self) -> bool {
        self.undelivered
    }

    pub(crate) fn ready(&self) -> Result<(), tungstenite::Error> {
        match self.closed {
            false => Ok(()),
            true => Err(tungstenite::Error::AlreadyClosed),
        }
    }

    pub(crate) fn send(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        self.ready()?;
        match message {
            Message::Text(text) => {
                self.undelivered = false;
                match self
                    .client
                    .start_request(self.subject.clone(), None, Bytes::from(text))
                {
                    Ok(reply) => {
                        self.reply = Some(reply);
                        Ok(())
                    }
                    Err(error) => {
                        self.undelivered = error.undelivered();
                        Err(io_error(error.to_string()))
                    }
                }
            }
            Message::Close(_) => {
                self.closed = true;
                self.reply = None;
                Ok(())
            }
            // The server keeps the connection alive; a request's deadline is the link's.
            _ => Ok(()),
        }
    }

    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, tungstenite::Error>>> {
        if self.closed {
            return Poll::Ready(None);
        }
        let Some(reply) = &mut self.reply else {
            return Poll::Pending;
        };
        let answer = match std::pin::Pin::new(reply).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(answer) => answer,
        };
        self.reply = None;
        let answer =
            answer.unwrap_or_else(|_| Err(RequestError::Lost("the client is closed".to_owned())));
        Poll::Ready(Some(match answer {
            Ok(payload) => Utf8Bytes::try_from(payload)
                .map(Message::Text)
                .map_err(|_| io_error("answered with a message that is not UTF-8".to_owned())),
            Err(error) => {
                self.undelivered = error.undelivered();
                Err(io_error(match error {
                    RequestError::NoResponders => {
                        "no copy of it is up (no responders on NATS)".to_owned()
                    }
                    other => other.to_string(),
                }))
            }
        }))
    }
}

fn io_error(reason: String) -> tungstenite::Error {
    tungstenite::Error::Io(std::io::Error::other(reason))
}
