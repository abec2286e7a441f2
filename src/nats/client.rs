//! A small client of the NATS core protocol, written from its documented text commands: what a
//! node needs and nothing more. `INFO`, `CONNECT`, `PING`/`PONG` both ways, `SUB` (with a
//! queue group), `UNSUB`, `PUB`/`HPUB`, `MSG`/`HMSG`, `+OK`/`-ERR`.
//!
//! One connection task per client owns the socket: it reads and dispatches messages by
//! subscription id, and writes what the handles ask for, buffered and flushed when there is
//! nothing more to add. When the server goes away it reconnects with capped, jittered backoff
//! and subscribes again; requests in flight then fail at once, saying so. Memory is bounded:
//! no message over the server's `max_payload`, a bounded queue per subscription, a bounded
//! write buffer and a bounded number of requests in flight.

use std::{
    collections::HashMap,
    io::Write as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use rand::{RngExt, SeedableRng, rngs::SmallRng};
use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf},
    net::TcpStream,
    sync::{mpsc, oneshot},
    time::{Instant, MissedTickBehavior, interval, timeout},
};
use tracing::{Instrument, debug, info, warn};

use crate::tls::{Stream, Tls};

/// How long one attempt to reach the server (TCP, TLS, `INFO` to `PONG`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The first pause between two attempts to reach the server, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_millis(20);
const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// How often the client pings the server; two pings unanswered and the connection is stale.
const PING_EVERY: Duration = Duration::from_secs(10);
/// How often requests whose caller gave up are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The longest control line (`MSG ...`) the server sends, as its own default limit.
const MAX_CONTROL_LINE: usize = 4096;
/// `max_payload` until the server's `INFO` says otherwise (the server's default).
const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
/// How much may wait to be written before the handles' commands are left in their queue.
const WRITE_HIGH: usize = 1 << 20;
/// How many requests may wait for their reply at once; more fail at once.
const MAX_PENDING: usize = 1 << 16;
/// The subscription id of the client's reply inbox.
const INBOX_SID: u64 = 1;
/// How long the task tries to write what is left once every handle is gone.
const LAST_WRITE: Duration = Duration::from_millis(200);

/// The header of a request a node answers itself, without its sketch: see
/// [`crate::nats::PROBE`].
pub(crate) type Headers = &'static [u8];

/// A NATS server's address, from a `nats://` or `tls://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// `tls://`: the connection must be secured.
    pub tls: bool,
    /// The host, without brackets.
    pub host: String,
    /// The port: 4222 when the URL has none.
    pub port: u16,
    user: Option<String>,
    pass: Option<String>,
    token: Option<String>,
}

impl ServerUrl {
    /// Read `url`: `nats://` or `tls://`, optional `user:password@` or `token@`, a host and
    /// an optional port.
    ///
    /// # Errors
    ///
    /// What is wrong, in words that follow "the URL" and name no credentials.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "has no scheme".to_owned())?;
        let tls = match scheme {
            "nats" => false,
            "tls" => true,
            _ => return Err("must start with nats:// or tls://".to_owned()),
        };
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let (credentials, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| "has an unclosed [ in its host".to_owned())?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                _ => (hostport, None),
            }
        };
        let port = match port {
            None => 4222,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|&port| port != 0)
                .ok_or_else(|| "invalid port number".to_owned())?,
        };
        let (mut user, mut pass, mut token) = (None, None, None);
        if let Some(credentials) = credentials {
            match credentials.split_once(':') {
                Some((u, p)) => {
                    user = Some(percent_decoded(u));
                    pass = Some(percent_decoded(p));
                }
                None => token = Some(percent_decoded(credentials)),
            }
        }
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            user,
            pass,
            token,
        })
    }
}

/// `text` with its `%XX` escapes decoded (a URL's user, password or token).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&a), Some(&b)) if hex(a).is_some() && hex(b).is_some() => {
                let value = hex(a).unwrap_or(0) * 16 + hex(b).unwrap_or(0);
                out.push(value as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A message delivered to a subscription.
#[derive(Debug, Clone)]
pub struct Msg {
    /// The subject it was published on.
    pub subject: Bytes,
    /// Where the publisher waits for an answer, if it does.
    pub reply: Option<Bytes>,
    /// Its headers (`NATS/1.0 ...` and what follows), if it has any.
    pub headers: Option<Bytes>,
    /// Its payload.
    pub payload: Bytes,
}

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Nobody subscribes to the subject: the request reached no one.
    #[error("no responders")]
    NoResponders,
    /// The client is not connected to the server: the request was not sent.
    #[error("not connected to the NATS server ({0})")]
    NotConnected(String),
    /// The connection to the server was lost with the request in flight: it may have been
    /// handled.
    #[error("the connection to the NATS server was lost: {0}")]
    Lost(String),
    /// Too many requests wait for their reply already.
    #[error("too many NATS requests in flight")]
    TooMany,
}

impl RequestError {
    /// Whether the request certainly reached no one, so that sending it again is safe.
    pub fn undelivered(&self) -> bool {
        !matches!(self, RequestError::Lost(_))
    }
}

/// A reply's receiver: see [`Client::start_request`].
pub type Reply = oneshot::Receiver<Result<Bytes, RequestError>>;

/// A subscription's id, to unsubscribe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid(u64);

/// What a connection is made with.
#[derive(Debug, Clone)]
pub struct Options {
    /// The connection's name, as the server's monitoring shows it.
    pub name: String,
    /// The mesh's `[tls]`: its CA is trusted for `tls://` servers.
    pub tls: Option<Tls>,
}

/// A handle on one connection to a NATS server. Clones share it; the connection ends once
/// every handle is gone, after writing what they asked for.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("inbox", &self.shared.inbox)
            .finish()
    }
}

struct Shared {
    connected: AtomicBool,
    /// Why the client is not connected (empty when it is): for waiting, and for saying why.
    down: tokio::sync::watch::Sender<String>,
    next_sid: AtomicU64,
    next_token: AtomicU64,
    /// `_INBOX.<random>.`: requests' reply subjects, a token after it.
    inbox: String,
}

// The queue is unbounded on purpose: what goes in is bounded by the handles themselves (a
// link has one request in flight, a node's serving bounds its requests), and an unbounded
// sender needs no waiting, so that a handle never waits on the socket.
enum Command {
    Publish {
        subject: Bytes,
        reply: Option<Bytes>,
        payload: Bytes,
    },
    Request {
        subject: Bytes,
        headers: Option<Headers>,
        payload: Bytes,
        token: u64,
        answer: oneshot::Sender<Result<Bytes, RequestError>>,
    },
    Subscribe {
        sid: u64,
        sub: Subscription,
    },
    Unsubscribe {
        sid: u64,
    },
    Flush {
        done: oneshot::Sender<bool>,
    },
}

/// A subscription, as the connection task keeps it to make it again after a reconnect.
struct Subscription {
    subject: String,
    queue: Option<String>,
    messages: mpsc::Sender<Msg>,
    /// The reply a request gets when the subscription's queue is full.
    overflow: Option<Bytes>,
    /// Messages dropped because the queue was full, since the last warning.
    dropped: u64,
}

impl Client {
    /// Start a connection to `url`: the connection task connects (and reconnects) in the
    /// background, for as long as a handle exists, so that a server started after the node,
    /// or restarted, is picked up.
    ///
    /// # Errors
    ///
    /// What is wrong with `url`, in words following "the NATS URL".
    pub fn start(url: &str, options: Options) -> Result<Self, String> {
        let server = ServerUrl::parse(url)?;
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        let inbox = format!(
            "_INBOX.{:016x}{:08x}.",
            rng.random::<u64>(),
            rng.random::<u32>()
        );
        let shared = Arc::new(Shared {
            connected: AtomicBool::new(false),
            down: tokio::sync::watch::Sender::new("connecting".to_owned()),
            next_sid: AtomicU64::new(INBOX_SID + 1),
            next_token: AtomicU64::new(1),
            inbox,
        });
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let task = Connection {
            server,
            options,
            shared: shared.clone(),
            commands: commands_rx,
            subs: HashMap::new(),
            pending: HashMap::new(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            rng,
        };
        tokio::spawn(task.run().in_current_span());
        Ok(Self { commands, shared })
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Wait up to `patience` for the connection to be up.
    ///
    /// # Errors
    ///
    /// Why it is not, when it is not up in time.
    pub async fn connected(&self, patience: Duration) -> Result<(), String> {
        let mut down = self.shared.down.subscribe();
        let up = timeout(patience, down.wait_for(|reason| reason.is_empty())).await;
        match up {
            Ok(Ok(_)) => Ok(()),
            _ => Err(self.shared.down.borrow().clone()),
        }
    }

    /// Publish `payload` on `subject`, with `reply` as where to answer, if any. Dropped
    /// while the client is not connected (nobody waits for it then: the requests in flight
    /// failed when the connection was lost).
    pub fn publish(&self, subject: Bytes, reply: Option<Bytes>, payload: Bytes) {
        let _ = self.commands.send(Command::Publish {
            subject,
            reply,
            payload,
        });
    }

    /// Send a request: `payload` (with `headers`, a whole `NATS/1.0` block, if any) on
    /// `subject`, with a reply subject of the client's inbox. The reply comes on the
    /// receiver; the caller bounds the wait, and may drop the receiver to give up.
    ///
    /// # Errors
    ///
    /// [`RequestError::NotConnected`] at once when the client is not connected.
    pub fn start_request(
        &self,
        subject: Bytes,
        headers: Option<Headers>,
        payload: Bytes,
    ) -> Result<Reply, RequestError> {
        if !self.is_connected() {
            return Err(RequestError::NotConnected("connecting".to_owned()));
        }
        let (answer, reply) = oneshot::channel();
        let token = self.shared.next_token.fetch_add(1, Ordering::Relaxed);
        self.commands
            .send(Command::Request {
                subject,
                headers,
                payload,
                token,
                answer,
            })
            .map_err(|_| RequestError::NotConnected("the client is closed".to_owned()))?;
        Ok(reply)
    }

    /// Send a request and wait for its reply.
    ///
    /// # Errors
    ///
    /// As [`Client::start_request`], and whatever the reply's wait ends in.
    pub async fn request(&self, subject: Bytes, payload: Bytes) -> Result<Bytes, RequestError> {
        let reply = self.start_request(subject, None, payload)?;
        reply
            .await
            .unwrap_or_else(|_| Err(RequestError::Lost("the client is closed".to_owned())))
    }

    /// Subscribe to `subject` (in the queue group `queue`, if any): its messages go to
    /// `messages`. When that queue is full, a message is dropped, and a request among them
    /// is answered `overflow` when given (so that its sender learns why at once).
    pub fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
        messages: mpsc::Sender<Msg>,
        overflow: Option<Bytes>,
    ) -> Sid {
        let sid = self.shared.next_sid.fetch_add(1, Ordering::Relaxed);
        let sub = Subscription {
            subject: subject.to_owned(),
            queue: queue.map(str::to_owned),
            messages,
            overflow,
            dropped: 0,
        };
        let _ = self.commands.send(Command::Subscribe { sid, sub });
        Sid(sid)
    }

    /// End a subscription: the server sends it nothing more.
    pub fn unsubscribe(&self, sid: Sid) {
        let _ = self.commands.send(Command::Unsubscribe { sid: sid.0 });
    }

    /// Wait until everything asked so far is written and the server has answered a ping
    /// after it: then it has seen it all. False when the connection is down.
    pub async fn flush(&self) -> bool {
        let (done, flushed) = oneshot::channel();
        if self.commands.send(Command::Flush { done }).is_err() {
            return false;
        }
        flushed.await.unwrap_or(false)
    }
}

/// The server's `INFO`, the fields the client uses.
#[derive(Debug, Default, Deserialize)]
struct Info {
    #[serde(default)]
    max_payload: Option<usize>,
    #[serde(default)]
    tls_required: bool,
    #[serde(default)]
    headers: bool,
}

/// What the server sent: one protocol operation.
#[derive(Debug, PartialEq)]
enum Op {
    Info(Bytes),
    Msg { sid: u64, msg: MsgParts },
    Ping,
    Pong,
    Ok,
    Err(String),
}

#[derive(Debug, PartialEq)]
struct MsgParts {
    subject: Bytes,
    reply: Option<Bytes>,
    headers: Option<Bytes>,
    payload: Bytes,
}

/// Take the next whole operation from `buf`, if it holds one.
///
/// # Errors
///
/// A sentence saying how the server broke the protocol (or sent more than `max_payload`).
fn parse(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Op>, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_CONTROL_LINE + max_payload.max(MAX_CONTROL_LINE) {
            return Err("sent a line longer than the protocol allows".to_owned());
        }
        return Ok(None);
    };
    let line = &buf[..end];
    let (verb, args) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(at) => (&line[..at], &line[at + 1..]),
        None => (line, &line[..0]),
    };
    let upper = |text: &[u8]| text.to_ascii_uppercase();
    let op = match upper(verb).as_slice() {
        b"MSG" | b"HMSG" => {
            let with_headers = verb.len() == 4;
            let fields: Vec<&[u8]> = args
                .split(|&b| b == b' ' || b == b'\t')
                .filter(|f| !f.is_empty())
                .collect();
            let number = |f: &[u8]| -> Result<usize, String> {
                std::str::from_utf8(f)
                    .ok()
                    .and_then(|f| f.parse().ok())
                    .ok_or_else(|| format!("sent a MSG with a bad number: {}", shown_line(line)))
            };
            let (subject, sid, reply, header_len, total) = match (with_headers, fields.as_slice()) {
                (false, [s, sid, n]) => (*s, *sid, None, 0, number(n)?),
                (false, [s, sid, r, n]) => (*s, *sid, Some(*r), 0, number(n)?),
                (true, [s, sid, h, n]) => (*s, *sid, None, number(h)?, number(n)?),
                (true, [s, sid, r, h, n]) => (*s, *sid, Some(*r), number(h)?, number(n)?),
                _ => return Err(format!("sent a malformed MSG: {}", shown_line(line))),
            };
            if header_len > total {
                return Err(format!(
                    "sent headers longer than their message: {}",
                    shown_line(line)
                ));
            }
            if total > max_payload.saturating_add(MAX_CONTROL_LINE) {
                return Err(format!(
                    "sent a message of {total} bytes, over its max_payload of {max_payload}"
                ));
            }
            let sid = number(sid)? as u64;
            if buf.len() < end + 2 + total + 2 {
                return Ok(None);
            }
            let subject_range = offset(line, subject);
            let reply_range = reply.map(|reply| offset(line, reply));
            let line = buf.split_to(end + 2).freeze();
            let mut body = buf.split_to(total + 2).freeze();
            if &body[total..] != b"\r\n" {
                return Err("sent a message whose length is not its header's".to_owned());
            }
            body.truncate(total);
            let headers = (header_len > 0).then(|| body.slice(..header_len));
            let payload = body.slice(header_len..);
            return Ok(Some(Op::Msg {
                sid,
                msg: MsgParts {
                    subject: line.slice(subject_range),
                    reply: reply_range.map(|range| line.slice(range)),
                    headers,
                    payload,
                },
            }));
        }
        b"PING" => Op::Ping,
        b"PONG" => Op::Pong,
        b"+OK" => Op::Ok,
        b"-ERR" => Op::Err(
            String::from_utf8_lossy(args)
                .trim()
                .trim_matches('\'')
                .to_owned(),
        ),
        b"INFO" => Op::Info(Bytes::copy_from_slice(args)),
        _ => return Err(format!("sent something unknown: {}", shown_line(line))),
    };
    buf.advance(end + 2);
    Ok(Some(op))
}

/// Where `part` (a slice of `line`) is in it.
fn offset(line: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - line.as_ptr() as usize;
    start..start + part.len()
}

/// A protocol line, for an error message: at most 80 characters of it.
fn shown_line(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(&line[..line.len().min(80)]);
    format!("{text:?}")
}

/// Whether `headers` say no one was there to answer: a `NATS/1.0 503` status.
fn no_responders(headers: &[u8]) -> bool {
    let first = headers.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = first.split(|&b| b == b' ').filter(|w| !w.is_empty());
    words.next() == Some(b"NATS/1.0") && words.next() == Some(b"503")
}

/// The connection task's state, kept across reconnects.
struct Connection {
    server: ServerUrl,
    options: Options,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    subs: HashMap<u64, Subscription>,
    pending: HashMap<u64, oneshot::Sender<Result<Bytes, RequestError>>>,
    max_payload: usize,
    rng: SmallRng,
}

/// How a connection ended.
enum Ended {
    /// Every handle is gone: the client is done.
    Closed,
    /// The connection was lost, for this reason.
    Lost(String),
}

impl Connection {
    async fn run(mut self) {
        let mut pause = BACKOFF_FIRST;
        let mut attempts = 0u32;
        let mut ever = false;
        let name = self.options.name.clone();
        let shown_url = format!(
            "{}://{}:{}",
            if self.server.tls { "tls" } else { "nats" },
            self.server.host,
            self.server.port
        );
        loop {
            attempts += 1;
            let reason = match timeout(CONNECT_TIMEOUT, self.connect()).await {
                Ok(Ok((reader, writer, buffered))) => {
                    info!(node = name, "NATS connected to {shown_url}");
                    self.shared.connected.store(true, Ordering::Release);
                    self.shared.down.send_replace(String::new());
                    pause = BACKOFF_FIRST;
                    attempts = 0;
                    ever = true;
                    let ended = self.serve(reader, writer, buffered).await;
                    self.shared.connected.store(false, Ordering::Release);
                    let reason = match ended {
                        Ended::Closed => return,
                        Ended::Lost(reason) => reason,
                    };
                    self.shared
                        .down
                        .send_replace(format!("connection lost: {reason}"));
                    warn!(
                        node = name,
                        "NATS connection to {shown_url} lost ({reason}); reconnecting"
                    );
                    self.fail_pending(&reason);
                    continue;
                }
                Ok(Err(reason)) => reason,
                Err(_) => format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            };
            self.shared.down.send_replace(reason.clone());
            if attempts == 1 {
                let again = if ever { "again " } else { "" };
                warn!(
                    node = name,
                    "cannot reach the NATS server {again}at {shown_url} ({reason}); retrying"
                );
            } else {
                debug!(node = name, "NATS: attempt {attempts} failed: {reason}");
            }
            let jittered = pause.mul_f64(self.rng.random_range(0.5..1.5));
            pause = (pause * 2).min(BACKOFF_CAP);
            // While waiting, answer what the handles ask: nothing can be sent now.
            let until = Instant::now() + jittered;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    command = self.commands.recv() => match command {
                        None => return,
                        Some(command) => self.offline(command, &reason),
                    },
                }
            }
        }
    }

    /// Answer a handle's command while there is no connection.
    fn offline(&mut self, command: Command, reason: &str) {
        match command {
            Command::Request { answer, .. } => {
                let _ = answer.send(Err(RequestError::NotConnected(reason.to_owned())));
            }
            Command::Subscribe { sid, sub } => {
                self.subs.insert(sid, sub);
            }
            Command::Unsubscribe { sid } => {
                self.subs.remove(&sid);
            }
            Command::Flush { done } => {
                let _ = done.send(false);
            }
            Command::Publish { .. } => {}
        }
    }

    fn fail_pending(&mut self, reason: &str) {
        for (_, answer) in self.pending.drain() {
            let _ = answer.send(Err(RequestError::Lost(reason.to_owned())));
        }
    }

    /// Reach the server: TCP, its `INFO`, TLS when either side wants it, `CONNECT` and a
    /// `PING` answered. Returns the two halves and what was read past the `PONG`.
    async fn connect(&mut self) -> Result<(ReadHalf<Stream>, WriteHalf<Stream>, BytesMut), String> {
        let tcp = TcpStream::connect((self.server.host.as_str(), self.server.port))
            .await
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                _ => error.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let mut tcp = Stream::Plain(tcp);
        let mut buf = BytesMut::with_capacity(4096);
        let info = loop {
            match parse(&mut buf, self.max_payload)? {
                Some(Op::Info(info)) => break info,
                Some(_) => return Err("the server did not start with INFO".to_owned()),
                None => read_more(&mut tcp, &mut buf).await?,
            }
        };
        let info: Info = serde_json::from_slice(&info)
            .map_err(|error| format!("the server's INFO is not JSON ({error})"))?;
        if let Some(max) = info.max_payload.filter(|&max| max > 0) {
            self.max_payload = max;
        }
        if !info.headers {
            return Err(
                "the server does not support headers (NATS 2.2 or later needed)".to_owned(),
            );
        }
        let secure = self.server.tls || info.tls_required;
        let mut stream = if secure {
            let Some(tls) = &self.options.tls else {
                return Err(
                    "the server requires TLS: give the mesh a [tls] table whose `ca` \
                            signed the server's certificate"
                        .to_owned(),
                );
            };
            let Stream::Plain(tcp) = tcp else {
                return Err("TLS asked for twice".to_owned());
            };
            tls.connect(&self.server.host, tcp)
                .await
                .map_err(|error| error.to_string())?
        } else {
            tcp
        };
        let connect = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "tls_required": secure,
            "name": self.options.name,
            "lang": "rust-arduino",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
            "headers": true,
            "no_responders": true,
            "user": self.server.user,
            "pass": self.server.pass,
            "auth_token": self.server.token,
        });
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"CONNECT ");
        out.extend_from_slice(connect.to_string().as_bytes());
        out.extend_from_slice(b"\r\nPING\r\n");
        stream
            .write_all(&out)
            .await
            .map_err(|error| error.to_string())?;
        buf.clear();
        loop {
            match parse(&mut buf, self.max_payload)? {
                Some(Op::Pong) => break,
                Some(Op::Err(reason)) => return Err(format!("the server refused: {reason}")),
                Some(Op::Ping) => stream
                    .write_all(b"PONG\r\n")
                    .await
                    .map_err(|error| error.to_string())?,
                Some(_) => {}
                None => read_more(&mut stream, &mut buf).await?,
            }
        }
        let (reader, writer) = tokio::io::split(stream);
        Ok((reader, writer, buf))
    }

    /// Carry the connection until it is lost or every handle is gone.
    async fn serve(
        &mut self,
        mut reader: ReadHalf<Stream>,
        mut writer: WriteHalf<Stream>,
        mut rbuf: BytesMut,
    ) -> Ended {
        let mut wbuf: Vec<u8> = Vec::with_capacity(8192);
        // Subscribe again to what the handles subscribed to, and to the inbox.
        let inbox = format!("{}*", self.shared.inbox);
        sub_line(&mut wbuf, &inbox, None, INBOX_SID);
        for (sid, sub) in &self.subs {
            sub_line(&mut wbuf, &sub.subject, sub.queue.as_deref(), *sid);
        }
        let mut ping = interval(PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.tick().await;
        let mut sweep = interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pings_out = 0u32;
        // Flushes waiting for the PONG of their PING, in order.
        let mut flushes: std::collections::VecDeque<oneshot::Sender<bool>> = Default::default();
        let mut last_error = None::<String>;
        let ended = loop {
            // Whatever is ready now goes out with this write.
            while wbuf.len() < WRITE_HIGH {
                match self.commands.try_recv() {
                    Ok(command) => self.encode(command, &mut wbuf, &mut flushes),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        let _ = timeout(LAST_WRITE, async {
                            writer.write_all(&wbuf).await?;
                            writer.flush().await
                        })
                        .await;
                        return Ended::Closed;
                    }
                }
            }
            tokio::select! {
                read = reader.read_buf(&mut rbuf) => match read {
                    Ok(0) => break last_error.unwrap_or_else(|| "the server closed the connection".to_owned()),
                    Ok(_) => {
                        let mut broken = None;
                        loop {
                            match parse(&mut rbuf, self.max_payload) {
                                Ok(Some(op)) => {
                                    if let Err(reason) = self.handle(op, &mut wbuf, &mut pings_out, &mut flushes, &mut last_error) {
                                        broken = Some(reason);
                                        break;
                                    }
                                }
                                Ok(None) => break,
                                Err(reason) => {
                                    broken = Some(format!("the server {reason}"));
                                    break;
                                }
                            }
                        }
                        if let Some(reason) = broken {
                            break reason;
                        }
                        // Keep the buffer from growing past what one message needs.
                        if rbuf.capacity() > 4 * (self.max_payload + MAX_CONTROL_LINE) && rbuf.is_empty() {
                            rbuf = BytesMut::with_capacity(8192);
                        }
                    }
                    Err(error) => break error.to_string(),
                },
                written = writer.write(&wbuf), if !wbuf.is_empty() => match written {
                    Ok(0) => break "the connection closed while writing".to_owned(),
                    Ok(n) => {
                        wbuf.drain(..n);
                        if wbuf.is_empty() && wbuf.capacity() > 4 * WRITE_HIGH {
                            wbuf = Vec::with_capacity(8192);
                        }
                    }
                    Err(error) => break error.to_string(),
                },
                command = self.commands.recv(), if wbuf.len() < WRITE_HIGH => match command {
                    Some(command) => self.encode(command, &mut wbuf, &mut flushes),
                    None => {
                        let _ = timeout(LAST_WRITE, async {
                            writer.write_all(&wbuf).await?;
                            writer.flush().await
                        })
                        .await;
                        return Ended::Closed;
                    }
                },
                _ = ping.tick() => {
                    if pings_out >= 2 {
                        break "the server answered no PING (stale connection)".to_owned();
                    }
                    pings_out += 1;
                    wbuf.extend_from_slice(b"PING\r\n");
                }
                _ = sweep.tick() => self.pending.retain(|_, answer| !answer.is_closed()),
            }
        };
        for done in flushes {
            let _ = done.send(false);
        }
        Ended::Lost(ended)
    }

    /// Write a handle's command into `wbuf`.
    fn encode(
        &mut self,
        command: Command,
        wbuf: &mut Vec<u8>,
        flushes: &mut std::collections::VecDeque<oneshot::Sender<bool>>,
    ) {
        match command {
            Command::Publish {
                subject,
                reply,
                payload,
            } => {
                // The server would close the connection over a message too large: it is told
                // instead, so that the request this answers learns why.
                let payload = match payload.len() > self.max_payload {
                    false => payload,
                    true => Bytes::from(format!(
                        "error: the answer is over the NATS server's max_payload of {} bytes",
                        self.max_payload
                    )),
                };
                pub_line(wbuf, &subject, reply.as_deref(), None, &payload);
            }
            Command::Request {
                subject,
                headers,
                payload,
                token,
                answer,
            } => {
                if self.pending.len() >= MAX_PENDING {
                    let _ = answer.send(Err(RequestError::TooMany));
                    return;
                }
                if headers.map_or(0, <[u8]>::len) + payload.len() > self.max_payload {
                    let _ = answer.send(Err(RequestError::NotConnected(format!(
                        "the message is over the server's max_payload of {} bytes",
                        self.max_payload
                    ))));
                    return;
                }
                let mut reply = [0u8; 64];
                let reply = inbox_subject(&mut reply, &self.shared.inbox, token);
                pub_line(wbuf, &subject, Some(reply), headers, &payload);
                self.pending.insert(token, answer);
            }
            Command::Subscribe { sid, sub } => {
                sub_line(wbuf, &sub.subject, sub.queue.as_deref(), sid);
                self.subs.insert(sid, sub);
            }
            Command::Unsubscribe { sid } => {
                if self.subs.remove(&sid).is_some() {
                    let _ = write!(wbuf, "UNSUB {sid}\r\n");
                }
            }
            Command::Flush { done } => {
                wbuf.extend_from_slice(b"PING\r\n");
                flushes.push_back(done);
            }
        }
    }

    /// Act on what the server sent.
    fn handle(
        &mut self,
        op: Op,
        wbuf: &mut Vec<u8>,
        pings_out: &mut u32,
        flushes: &mut std::collections::VecDeque<oneshot::Sender<bool>>,
        last_error: &mut Option<String>,
    ) -> Result<(), String> {
        match op {
            Op::Msg {
                sid: INBOX_SID,
                msg,
            } => {
                let token = msg
                    .subject
                    .strip_prefix(self.shared.inbox.as_bytes())
                    .and_then(|token| std::str::from_utf8(token).ok())
                    .and_then(|token| token.parse::<u64>().ok());
                if let Some(answer) = token.and_then(|token| self.pending.remove(&token)) {
                    let reply = match &msg.headers {
                        Some(headers) if no_responders(headers) => Err(RequestError::NoResponders),
                        _ => Ok(msg.payload),
                    };
                    let _ = answer.send(reply);
                }
            }
            Op::Msg { sid, msg } => {
                let Some(sub) = self.subs.get_mut(&sid) else {
                    return Ok(()); // unsubscribed, and the server had sent it already
                };
                let reply = msg.reply.clone();
                let msg = Msg {
                    subject: msg.subject,
                    reply: msg.reply,
                    headers: msg.headers,
                    payload: msg.payload,
                };
                match sub.messages.try_send(msg) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        if let (Some(overflow), Some(reply)) = (&sub.overflow, reply) {
                            pub_line(wbuf, &reply, None, None, overflow);
                        }
                        sub.dropped += 1;
                        if sub.dropped.is_power_of_two() {
                            warn!(
                                "NATS: {} messages refused on {} so far: its queue is full",
                                sub.dropped, sub.subject
                            );
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        self.subs.remove(&sid);
                        let _ = write!(wbuf, "UNSUB {sid}\r\n");
                    }
                }
            }
            Op::Ping => wbuf.extend_from_slice(b"PONG\r\n"),
            Op::Pong => match flushes.pop_front() {
                Some(done) => {
                    let _ = done.send(true);
                }
                None => *pings_out = pings_out.saturating_sub(1),
            },
            Op::Ok => {}
            Op::Info(info) => {
                if let Ok(info) = serde_json::from_slice::<Info>(&info)
                    && let Some(max) = info.max_payload.filter(|&max| max > 0)
                {
                    self.max_payload = max;
                }
            }
            Op::Err(reason) => {
                warn!("the NATS server says: {reason}");
                *last_error = Some(format!("the server said: {reason}"));
            }
        }
        Ok(())
    }
}

/// Read more of the connection into `buf`, during the handshake.
async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> Result<(), String> {
    if buf.len() > MAX_CONTROL_LINE * 4 {
        return Err("the server sent an INFO too long".to_owned());
    }
    match stream.read_buf(buf).await {
        Ok(0) => Err("the server closed the connection".to_owned()),
        Ok(_) => Ok(()),
        Err(error) => Err(error.to_string()),
    }
}

/// The reply subject of request `token`: the inbox and the token, in `buf`.
fn inbox_subject<'a>(buf: &'a mut [u8; 64], inbox: &str, token: u64) -> &'a [u8] {
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{inbox}{token}");
    let len = cursor.position() as usize;
    &buf[..len]
}

fn sub_line(wbuf: &mut Vec<u8>, subject: &str, queue: Option<&str>, sid: u64) {
    let _ = match queue {
        Some(queue) => write!(wbuf, "SUB {subject} {queue} {sid}\r\n"),
        None => write!(wbuf, "SUB {subject} {sid}\r\n"),
    };
}

fn pub_line(
    wbuf: &mut Vec<u8>,
    subject: &[u8],
    reply: Option<&[u8]>,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    wbuf.extend_from_slice(if headers.is_some() { b"HPUB " } else { b"PUB " });
    wbuf.extend_from_slice(subject);
    if let Some(reply) = reply {
        wbuf.push(b' ');
        wbuf.extend_from_slice(reply);
    }
    let _ = match headers {
        Some(headers) => {
            let total = headers.len() + payload.len();
            write!(wbuf, " {} {total}\r\n", headers.len())
        }
        None => write!(wbuf, " {}\r\n", payload.len()),
    };
    if let Some(headers) = headers {
        wbuf.extend_from_slice(headers);
    }
    wbuf.extend_from_slice(payload);
    wbuf.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(wire: &[u8]) -> Vec<Op> {
        let mut buf = BytesMut::from(wire);
        let mut ops = Vec::new();
        while let Some(op) = parse(&mut buf, 1024).unwrap() {
            ops.push(op);
        }
        assert!(buf.is_empty(), "left: {buf:?}");
        ops
    }

    #[test]
    fn the_servers_operations_parse() {
        let ops = parsed(
            b"INFO {\"max_payload\":1024}\r\nPING\r\nPONG\r\n+OK\r\n-ERR 'Unknown Protocol Operation'\r\n\
              MSG a.b 7 5\r\nhello\r\nMSG a.b 7 _INBOX.x.1 2\r\nhi\r\n\
              HMSG _INBOX.x.2 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",
        );
        assert_eq!(
            ops[0],
            Op::Info(Bytes::from_static(b"{\"max_payload\":1024}"))
        );
        assert_eq!(ops[1..4], [Op::Ping, Op::Pong, Op::Ok]);
        assert_eq!(ops[4], Op::Err("Unknown Protocol Operation".to_owned()));
        let Op::Msg { sid: 7, msg } = &ops[5] else {
            panic!("{:?}", ops[5])
        };
        assert_eq!(
            (&msg.subject[..], &msg.payload[..]),
            (&b"a.b"[..], &b"hello"[..])
        );
        assert!(msg.reply.is_none() && msg.headers.is_none());
        let Op::Msg { msg, .. } = &ops[6] else {
            panic!()
        };
        assert_eq!(msg.reply.as_deref(), Some(&b"_INBOX.x.1"[..]));
        let Op::Msg { sid: 1, msg } = &ops[7] else {
            panic!()
        };
        assert!(no_responders(msg.headers.as_deref().unwrap()));
        assert!(msg.payload.is_empty());
    }

    #[test]
    fn a_message_in_pieces_waits_for_the_rest() {
        let mut buf = BytesMut::from(&b"MSG a 1 10\r\nhello"[..]);
        assert_eq!(parse(&mut buf, 1024), Ok(None));
        buf.extend_from_slice(b"world\r\n");
        assert!(matches!(parse(&mut buf, 1024), Ok(Some(Op::Msg { .. }))));
        assert!(buf.is_empty());
    }

    #[test]
    fn what_breaks_the_protocol_is_refused_in_words() {
        for (wire, expected) in [
            (
                &b"MSG a 1 99999\r\n"[..],
                "sent a message of 99999 bytes, over its max_payload of 1024",
            ),
            (
                b"MSG a 1 x\r\n",
                "sent a MSG with a bad number: \"MSG a 1 x\"",
            ),
            (b"MSG a\r\n", "sent a malformed MSG: \"MSG a\""),
            (
                b"HMSG a 1 9 3\r\n",
                "sent headers longer than their message: \"HMSG a 1 9 3\"",
            ),
            (
                b"MSG a 1 2\r\nabcd\r\n",
                "sent a message whose length is not its header's",
            ),
            (b"HELLO\r\n", "sent something unknown: \"HELLO\""),
        ] {
            let mut buf = BytesMut::from(wire);
            assert_eq!(parse(&mut buf, 1024), Err(expected.to_owned()));
        }
        let mut endless = BytesMut::from(&[b'x'; 10_000][..]);
        assert!(parse(&mut endless, 1024).is_err());
    }

    #[test]
    fn commands_are_written_as_the_protocol_says() {
        let mut wbuf = Vec::new();
        pub_line(&mut wbuf, b"a.b", Some(b"_INBOX.x.1"), None, b"hello");
        pub_line(&mut wbuf, b"a", None, Some(b"NATS/1.0\r\n\r\n"), b"1");
        sub_line(&mut wbuf, "arduino.pin.>", Some("pin"), 3);
        assert_eq!(
            String::from_utf8(wbuf).unwrap(),
            "PUB a.b _INBOX.x.1 5\r\nhello\r\nHPUB a 12 13\r\nNATS/1.0\r\n\r\n1\r\n\
             SUB arduino.pin.> pin 3\r\n"
        );
        let mut buf = [0u8; 64];
        assert_eq!(inbox_subject(&mut buf, "_INBOX.ab.", 42), b"_INBOX.ab.42");
    }

    #[test]
    fn urls_give_the_server_and_credentials() {
        let url = ServerUrl::parse("nats://us%40r:p%3Ass@example.com:4333").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.tls),
            ("example.com", 4333, false)
        );
        assert_eq!(
            (url.user.as_deref(), url.pass.as_deref()),
            (Some("us@r"), Some("p:ss"))
        );
        let url = ServerUrl::parse("tls://s3cret@[::1]").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.tls), ("::1", 4222, true));
        assert_eq!(url.token.as_deref(), Some("s3cret"));
        assert_eq!(
            ServerUrl::parse("nats://h:99999"),
            Err("invalid port number".to_owned())
        );
        assert_eq!(
            ServerUrl::parse("nats://h:0"),
            Err("invalid port number".to_owned())
        );
    }

    #[test]
    fn a_503_status_is_no_responders() {
        assert!(no_responders(b"NATS/1.0 503\r\n\r\n"));
        assert!(!no_responders(b"NATS/1.0\r\nA: b\r\n\r\n"));
        assert!(!no_responders(b"NATS/1.0 408 Request Timeout\r\n\r\n"));
    }
}
