//! The plain HTTP a node answers beside websocket handshakes: `GET /events` (server-sent
//! events) and `GET /metrics` (Prometheus text). [`route`] looks at an accepted connection's
//! request head without consuming it, answers these two, and leaves anything else, websocket
//! handshakes to `/events` included, untouched in the socket for the handshake.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::{Instant, MissedTickBehavior, interval_at, sleep_until, timeout, timeout_at},
};
use tokio_util::sync::CancellationToken;

use super::Watch;
use crate::tls::Connection;

/// The most of a request head looked at: a longer one is left to the websocket handshake.
pub const MAX_HEAD: usize = 8 * 1024;
/// How much of the waiting events an SSE stream writes at once.
const BATCH: usize = 64 * 1024;
/// How long an event stream gathers events before writing them: one write for all that a busy
/// node emits in that time rather than one per event, which would cost the node a system call
/// per message. Short enough to look live, and to stay well within the feed's capacity.
const LINGER: Duration = Duration::from_millis(2);
/// How long the events still waiting when the node stops may take to go out.
const LAST_WRITE: Duration = Duration::from_millis(100);

/// Time limits of the HTTP side.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// How long a client has to send enough of its request head to tell what it asks for.
    /// Past it, the connection is handed back untouched, as a handshake's: a node gives its
    /// handshakes the same deadline, so the handshake refuses it at once, in its own words.
    pub head_deadline: Duration,
    /// How often an idle event stream gets a comment, so that proxies and listeners know it
    /// is alive.
    pub keepalive: Duration,
    /// How long a listener may leave what it was sent unread before it is dropped.
    pub write_timeout: Duration,
    /// How many `/events` listeners a node serves at once; one more is answered 503. Each
    /// costs the node a little per event, so many would slow it, and each holds one of the
    /// node's connections, which its websocket clients need.
    pub max_listeners: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            head_deadline: Duration::from_secs(5),
            keepalive: Duration::from_secs(15),
            write_timeout: Duration::from_secs(5),
            max_listeners: 16,
        }
    }
}

/// What became of an accepted connection (plain TCP, or a node's [`crate::tls::Stream`]).
#[derive(Debug)]
pub enum Route<S> {
    /// Not a request answered here (a websocket handshake, or anything else): the socket is
    /// as it was accepted, its request unread.
    Websocket(S),
    /// A request answered here, or a connection that ended (the node stopped, the client went
    /// away): nothing left to do.
    Done,
    /// A request refused: without the mesh's secret (answered with HTTP 401). The reason is
    /// for the node's `client_refused` event.
    Refused(String),
}

/// Answer `connection` if it asks for `GET /events` or `GET /metrics` (not as a websocket
/// handshake), until the client goes away or `stop` is cancelled; otherwise hand it back
/// untouched, as it does when the head deadline passes before the request is known. Reads at
/// most [`MAX_HEAD`] bytes of request head.
pub async fn route<S: Connection>(
    mut stream: S,
    watch: &Watch,
    stop: &CancellationToken,
) -> Route<S> {
    let options = watch.options();
    let mut head = vec![0; MAX_HEAD];
    let deadline = Instant::now() + options.head_deadline;
    let mut seen = 0;
    let mut pause = Duration::from_millis(1);
    let (asked, head_len, authorized) = loop {
        let peeked = tokio::select! {
            biased;
            _ = stop.cancelled() => return Route::Done,
            peeked = timeout_at(deadline, stream.peek(&mut head)) => peeked,
        };
        let n = match peeked {
            Err(_) => return Route::Websocket(stream),
            // Closed or broken before a request: the handshake says so as it always has.
            Ok(Ok(0) | Err(_)) => return Route::Websocket(stream),
            Ok(Ok(n)) => n,
        };
        match classify(&head[..n], watch.secret()) {
            Head::Other => return Route::Websocket(stream),
            Head::Ours {
                asked,
                head_len,
                authorized,
            } => break (asked, head_len, authorized),
            Head::Incomplete if n == head.len() => return Route::Websocket(stream),
            Head::Incomplete => {
                // Peeking leaves the socket readable, so waiting for readiness would spin:
                // wait a little, longer each time nothing new came.
                if n == seen {
                    let wake = (Instant::now() + pause).min(deadline);
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return Route::Done,
                        _ = sleep_until(wake) => {}
                    }
                    if Instant::now() >= deadline {
                        return Route::Websocket(stream);
                    }
                    pause = (pause * 2).min(Duration::from_millis(50));
                } else {
                    pause = Duration::from_millis(1);
                }
                seen = n;
            }
        }
    };
    // Take the head out of the socket: it is in hand already, so this does not wait.
    if timeout(
        options.write_timeout,
        stream.read_exact(&mut head[..head_len]),
    )
    .await
    .is_err()
    {
        return Route::Done;
    }
    drop(head);
    if let Err(why) = authorized {
        let _ = timeout(options.write_timeout, stream.write_all(&unauthorized())).await;
        return Route::Refused(format!("HTTP 401 ({why}) on GET {}", asked.path()));
    }
    match asked {
        Asked::Metrics => serve_metrics(stream, watch).await,
        Asked::Events => match watch.listening() {
            Some(_listening) => serve_events(stream, watch, stop).await,
            None => {
                let limit = options.max_listeners;
                let _ = timeout(options.write_timeout, stream.write_all(&too_many(limit))).await;
                return Route::Refused(format!(
                    "HTTP 503 on GET /events: {limit} listeners already"
                ));
            }
        },
    }
    Route::Done
}

fn too_many(limit: usize) -> Vec<u8> {
    let body = format!("503 Service Unavailable: this node has {limit} event listeners already\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn unauthorized() -> Vec<u8> {
    let body = "401 Unauthorized: this mesh needs its secret (Authorization: Bearer <secret>)\n";
    format!(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve_metrics(mut stream: impl Connection, watch: &Watch) {
    let body = watch.metrics().render();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = timeout(watch.options().write_timeout, write).await;
}

const EVENTS_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
    Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n\
    retry: 1000\n\n";

/// Stream the node's events until the client goes away, stops reading for longer than the
/// write timeout, or the node stops. Whatever the client does, this holds at most one batch:
/// the events it has not taken wait in the feed's bounded channel, and it misses them there.
async fn serve_events(mut stream: impl Connection, watch: &Watch, stop: &CancellationToken) {
    let options = watch.options();
    let _ = stream.set_nodelay(true);
    let mut events = watch.feed().subscribe();
    if !matches!(
        timeout(options.write_timeout, stream.write_all(EVENTS_HEAD)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let mut keepalive = interval_at(Instant::now() + options.keepalive, options.keepalive);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    let mut scratch = [0u8; 256];
    loop {
        batch.clear();
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                // The last events (`stopping` among them) still go out, briefly.
                while batch.len() < BATCH
                    && let Some(line) = events.try_recv()
                {
                    push_event(&mut batch, &line);
                }
                let _ = timeout(LAST_WRITE, async {
                    stream.write_all(&batch).await?;
                    stream.shutdown().await
                })
                .await;
                return;
            }
            line = events.recv() => {
                push_event(&mut batch, &line);
                tokio::time::sleep(LINGER).await;
                while batch.len() < BATCH
                    && let Some(line) = events.try_recv()
                {
                    push_event(&mut batch, &line);
                }
            }
            _ = keepalive.tick() => batch.extend_from_slice(b": keepalive\n\n"),
            // A listener sends nothing after its request: this ends when it goes away.
            read = stream.read(&mut scratch) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
        }
        match timeout(options.write_timeout, stream.write_all(&batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

fn push_event(batch: &mut Vec<u8>, line: &[u8]) {
    // A JSON line has no raw newline: it is one `data:` line.
    batch.extend_from_slice(b"data: ");
    batch.extend_from_slice(line);
    batch.extend_from_slice(b"\n\n");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Events,
    Metrics,
}

impl Asked {
    fn path(self) -> &'static str {
        match self {
            Asked::Events => "/events",
            Asked::Metrics => "/metrics",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// Not a request answered here.
    Other,
    /// Could still be one: more of the head is needed.
    Incomplete,
    /// A request answered here, `head_len` bytes long, with or without the secret it needs.
    Ours {
        asked: Asked,
        head_len: usize,
        authorized: Result<(), &'static str>,
    },
}

/// What the first bytes of a connection ask for.
fn classify(bytes: &[u8], secret: Option<&str>) -> Head {
    let mut asked = None;
    let mut incomplete = false;
    for candidate in [Asked::Events, Asked::Metrics] {
        let line = [b"GET ".as_slice(), candidate.path().as_bytes()].concat();
        let n = bytes.len().min(line.len());
        if bytes[..n] != line[..n] {
            continue;
        }
        match bytes.get(line.len()) {
            None => incomplete = true,
            Some(b' ' | b'?') => asked = Some(candidate),
            Some(_) => {}
        }
    }
    let Some(asked) = asked else {
        return if incomplete {
            Head::Incomplete
        } else {
            Head::Other
        };
    };
    let Some(head_len) = head_end(bytes) else {
        return Head::Incomplete;
    };
    let mut authorization = None;
    for line in bytes[..head_len].split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"upgrade")
            && value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"websocket"))
        {
            // A websocket client on the channel `/events`: the handshake's to answer.
            return Head::Other;
        }
        if name.eq_ignore_ascii_case(b"authorization") {
            authorization = Some(value);
        }
    }
    let authorized = match (secret, authorization) {
        (None, _) => Ok(()),
        (Some(_), None) => Err("no secret"),
        (Some(secret), Some(given)) => match given.strip_prefix(b"Bearer ") {
            Some(given) if same_secret(given, secret.as_bytes()) => Ok(()),
            _ => Err("wrong secret"),
        },
    };
    Head::Ours {
        asked,
        head_len,
        authorized,
    }
}

/// Where the head ends: after its blank line (`\r\n\r\n`, or `\n\n` from a lax client).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Compare secrets in time that depends on their length only, not on where they differ: the
/// one check behind websocket handshakes, `/events` and `/metrics`.
pub(crate) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    let difference = given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3creT", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }

    fn ours(asked: Asked, head: &[u8]) -> Head {
        Head::Ours {
            asked,
            head_len: head.len(),
            authorized: Ok(()),
        }
    }

    #[test]
    fn events_and_metrics_are_told_from_handshakes() {
        let events = b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(classify(events, None), ours(Asked::Events, events));
        let metrics = b"GET /metrics?x=1 HTTP/1.1\r\nAccept: */*\r\n\r\n";
        assert_eq!(classify(metrics, None), ours(Asked::Metrics, metrics));
        let handshake =
            b"GET /events HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n";
        assert_eq!(classify(handshake, None), Head::Other);
        assert_eq!(classify(b"GET /eventsx HTTP/1.1\r\n", None), Head::Other);
        assert_eq!(classify(b"GET /datafeed HTTP/1.1\r\n", None), Head::Other);
        assert_eq!(classify(b"POST /events HTTP/1.1\r\n", None), Head::Other);
        assert_eq!(classify(b"GE", None), Head::Incomplete);
        assert_eq!(classify(b"GET /metr", None), Head::Incomplete);
        assert_eq!(classify(b"GET /events", None), Head::Incomplete);
        assert_eq!(
            classify(b"GET /events HTTP/1.1\r\nUpgrade: websocket\r\n", None),
            Head::Incomplete
        );
    }

    #[test]
    fn the_secret_is_checked() {
        let head = |auth: &str| format!("GET /events HTTP/1.1\r\n{auth}\r\n\r\n");
        let authorized = |auth: &str| match classify(head(auth).as_bytes(), Some("s3")) {
            Head::Ours { authorized, .. } => authorized,
            other => panic!("{other:?}"),
        };
        assert_eq!(authorized("authorization: Bearer s3"), Ok(()));
        assert_eq!(authorized("X: y"), Err("no secret"));
        assert_eq!(authorized("Authorization: Bearer s4"), Err("wrong secret"));
        assert_eq!(authorized("Authorization: Basic s3"), Err("wrong secret"));
    }
}
