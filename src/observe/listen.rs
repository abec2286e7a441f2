//! Following the event feeds of one or many nodes, for `arduino listen`: HTTP/1.1 (over TLS
//! for a mesh with `[tls]`) to each node's `/events`, its server-sent events printed as lines a person reads
//! (`12:00:01.234 [ iopin ] /datafeed < 0`) or as JSON lines, reconnecting with backoff when
//! a node goes away.
//!
//! Times are shown as the node wrote them, in UTC. Besides the nodes' events, `listen` says
//! when it loses a node (`reconnecting`), when the node is `back`, and when a node refuses it
//! (`refused`); in JSON these are objects like the nodes' own, with `event` set to those words.

use std::{
    fmt::Write as _,
    io::{self, Write},
    time::{Duration, SystemTime},
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::mpsc,
    task::JoinSet,
    time::{sleep, timeout},
};

use super::feed::Rfc3339;
use crate::{
    logging::shown,
    tls::{Stream, Tls},
};

/// How long connecting, and reading the answer's head, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a feed may stay silent (a node sends a keepalive every 15 s) before it is taken
/// for gone.
const SILENCE: Duration = Duration::from_secs(45);
/// The longest line of a feed that is read; a node's lines are far shorter.
const MAX_LINE: u64 = 256 * 1024;
/// The largest event of a feed that is handed on. A node cuts each text in an event after
/// 1 KiB, and an event has at most three: under 20 KiB even with every byte escaped as
/// `\u0001`. The view keeps thousands of events for browsers that fall behind, so a feed of
/// larger ones (not a node's) is given up on rather than let in.
const MAX_EVENT: usize = 32 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A node to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// What to call it when it is not heard (reconnecting, back).
    pub name: String,
    /// `host:port` of its listener.
    pub addr: String,
    /// The mesh's secret, sent as `Authorization: Bearer`, for a node of the mesh only.
    pub secret: Option<String>,
    /// With the mesh's TLS, the feed is read over TLS, trusting the mesh's CA.
    pub tls: Option<Tls>,
}

impl Source {
    /// The node listening at `url` (`ws://host:port`, `http://host:port`, or `host:port`; a
    /// path is ignored; `wss://` and `https://` too, though TLS needs [`Source::tls`] set),
    /// named by it, without a secret.
    pub fn from_url(url: &str) -> Self {
        let rest = ["ws://", "http://", "wss://", "https://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))
            .unwrap_or(url);
        let addr = rest.split('/').next().unwrap_or(rest);
        Self {
            name: url.trim_end_matches('/').to_owned(),
            addr: addr.to_owned(),
            secret: None,
            tls: None,
        }
    }
}

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Lines a person reads: `12:00:01.234 [ iopin ] > acknowledged (41 us)`.
    #[default]
    Readable,
    /// One JSON object a line, as the node sent it.
    Json,
}

/// What the followers of the sources hand the writer.
enum Heard {
    /// An event's JSON, as the node sent it.
    Event(String),
    /// Something `listen` itself has to say about a source.
    Status {
        node: String,
        event: &'static str,
        reason: Option<String>,
    },
    /// A source that will not be followed any more.
    Ended,
}

/// Follow the events of `sources` and print them to `out` in `format`, one line each, until
/// `out` is closed (a broken pipe ends this cleanly) or every source has refused.
///
/// # Errors
///
/// Writing to `out` failed other than by a closed pipe, or every source refused (the
/// reasons are printed first).
pub async fn listen(sources: Vec<Source>, format: Format, out: impl Write) -> io::Result<()> {
    listen_with(sources, None, format, out).await
}

/// Nodes followed through a NATS server: what they publish on `arduino.events.<node>`.
#[derive(Debug)]
pub struct NatsSource {
    /// A client of the server.
    pub client: crate::nats::Client,
    /// What to call the server when it is not heard: its URL, without credentials.
    pub name: String,
    /// The subjects to follow: `arduino.events.<node>` for each node, or `arduino.events.>`.
    pub subjects: Vec<String>,
}

/// [`listen`], also following the nodes of `nats` through their NATS server.
///
/// # Errors
///
/// As [`listen`].
pub async fn listen_with(
    sources: Vec<Source>,
    nats: Option<NatsSource>,
    format: Format,
    mut out: impl Write,
) -> io::Result<()> {
    let (heard_tx, mut heard_rx) = mpsc::channel(256);
    let mut followers = JoinSet::new();
    let mut following = sources.len();
    for source in sources {
        followers.spawn(follow(source, heard_tx.clone()));
    }
    if let Some(nats) = nats {
        following += 1;
        followers.spawn(follow_nats(nats, heard_tx.clone()));
    }
    drop(heard_tx);
    while following > 0 {
        let Some(heard) = heard_rx.recv().await else {
            break;
        };
        let line = match heard {
            Heard::Ended => {
                following -= 1;
                continue;
            }
            Heard::Event(json) => match format {
                Format::Json => json,
                Format::Readable => readable(&json),
            },
            Heard::Status {
                node,
                event,
                reason,
            } => status(format, &node, event, reason.as_deref()),
        };
        let written = out
            .write_all(line.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            // Whoever read the output (`| head`) is done: so are we.
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::other(
        "no node left to listen to: each refused, as said above",
    ))
}

/// Follow one source until it refuses or the writer is gone, reconnecting with backoff.
async fn follow(source: Source, heard: mpsc::Sender<Heard>) {
    let say = |event: &'static str, reason: Option<String>| Heard::Status {
        node: source.name.clone(),
        event,
        reason,
    };
    let mut backoff = FIRST_BACKOFF;
    // Whether the node was heard before: its return is then news.
    let mut lost = false;
    let mut waiting = false;
    loop {
        match subscribe(&source).await {
            Ok(feed) => {
                backoff = FIRST_BACKOFF;
                if (lost || waiting) && heard.send(say("back", None)).await.is_err() {
                    return;
                }
                let Some(why) = read_feed(feed, &heard, Heard::Event).await else {
                    return; // the writer is gone
                };
                lost = true;
                waiting = false;
                if heard.send(say("reconnecting", Some(why))).await.is_err() {
                    return;
                }
            }
            Err(Failure::Refused(why)) => {
                let _ = heard.send(say("refused", Some(why))).await;
                let _ = heard.send(Heard::Ended).await;
                return;
            }
            Err(Failure::Unreachable(why)) => {
                if !lost && !waiting {
                    waiting = true;
                    if heard.send(say("waiting", Some(why))).await.is_err() {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            _ = sleep(backoff) => {}
            _ = heard.closed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// How often `listen` looks whether its NATS connection is up.
const NATS_CHECK: Duration = Duration::from_millis(200);

/// Follow nodes through NATS until the writer is gone, saying when the connection to the
/// server is lost and back (the client reconnects by itself).
async fn follow_nats(nats: NatsSource, heard: mpsc::Sender<Heard>) {
    let say = |event: &'static str, reason: Option<String>| Heard::Status {
        node: nats.name.clone(),
        event,
        reason,
    };
    let (events_tx, mut events) = mpsc::channel(1024);
    for subject in &nats.subjects {
        nats.client
            .subscribe(subject, None, events_tx.clone(), None);
    }
    drop(events_tx);
    let mut up = match nats.client.connected(CONNECT_TIMEOUT).await {
        Ok(()) => true,
        Err(why) => {
            if heard.send(say("waiting", Some(why))).await.is_err() {
                return;
            }
            false
        }
    };
    let mut check = tokio::time::interval(NATS_CHECK);
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                if event.payload.len() > MAX_EVENT {
                    continue;
                }
                let json = String::from_utf8_lossy(&event.payload).into_owned();
                if heard.send(Heard::Event(json)).await.is_err() {
                    return;
                }
            }
            _ = check.tick() => {
                let now = nats.client.is_connected();
                let news = match (up, now) {
                    (true, false) => Some(say(
                        "reconnecting",
                        Some("the connection to the NATS server was lost".to_owned()),
                    )),
                    (false, true) => Some(say("back", None)),
                    _ => None,
                };
                up = now;
                if let Some(news) = news
                    && heard.send(news).await.is_err()
                {
                    return;
                }
            }
            _ = heard.closed() => return,
        }
    }
}

enum Failure {
    /// Not up, or gone: worth trying again.
    Unreachable(String),
    /// Up, but it will not serve us: trying again does not help.
    Refused(String),
}

/// Ask `source` for its events; the answer's head is read, its body is the feed.
async fn subscribe(source: &Source) -> Result<BufReader<Stream>, Failure> {
    let unreachable = |e: io::Error| Failure::Unreachable(describe(&e));
    let timed_out = |_| Failure::Unreachable("no answer in time".to_owned());
    let connect = async {
        let tcp = TcpStream::connect(&source.addr).await?;
        let _ = tcp.set_nodelay(true);
        match &source.tls {
            None => Ok(Stream::Plain(tcp)),
            Some(tls) => tls.connect(host_of(&source.addr), tcp).await,
        }
    };
    let mut stream = match timeout(CONNECT_TIMEOUT, connect).await.map_err(timed_out)? {
        Ok(stream) => stream,
        // A node that does not trust us, or that we do not trust, will not change its mind.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(Failure::Refused(e.to_string()));
        }
        Err(e) => return Err(unreachable(e)),
    };
    let mut request = format!(
        "GET /events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
        source.addr
    );
    if let Some(secret) = &source.secret {
        let _ = write!(request, "Authorization: Bearer {secret}\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(unreachable)?;
    let mut feed = BufReader::new(stream);
    let mut status = String::new();
    let mut line = Vec::new();
    let head = async {
        loop {
            line.clear();
            let n = (&mut feed)
                .take(8 * 1024)
                .read_until(b'\n', &mut line)
                .await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before answering",
                ));
            }
            if status.is_empty() {
                status = String::from_utf8_lossy(&line).trim().to_owned();
            } else if line == b"\r\n" || line == b"\n" {
                return Ok(());
            }
        }
    };
    timeout(CONNECT_TIMEOUT, head)
        .await
        .map_err(timed_out)?
        .map_err(unreachable)?;
    let code = status.split(' ').nth(1).unwrap_or("");
    match code {
        "200" => Ok(feed),
        "401" if source.secret.is_some() => Err(Failure::Refused(
            "HTTP 401: the node does not take this secret: check ARDUINO_SECRET, or `secret` in \
             the mesh file"
                .to_owned(),
        )),
        "401" => Err(Failure::Refused(
            "HTTP 401: the node needs the mesh's secret: set ARDUINO_SECRET, or `secret` in the \
             mesh file"
                .to_owned(),
        )),
        _ => Err(Failure::Refused(format!(
            "no event feed here ({})",
            shown(&status)
        ))),
    }
}

/// Connect once to `source`'s feed, for a program that shows events its own way (`arduino
/// view`): `opened` is called when the node answered, then each event's JSON goes to `events`
/// as the node sent it, until the feed ends or `events` is closed. Returns why it ended, and
/// whether trying again may help (not when the node refused).
pub async fn follow_once(
    source: &Source,
    opened: impl FnOnce(),
    events: &mpsc::Sender<String>,
) -> (String, bool) {
    match subscribe(source).await {
        Ok(feed) => {
            opened();
            let why = read_feed(feed, events, |json| json).await;
            (why.unwrap_or_else(|| "no one reads".to_owned()), true)
        }
        Err(Failure::Unreachable(why)) => (why, true),
        Err(Failure::Refused(why)) => (why, false),
    }
}

/// The host of `host:port` (`[::1]:80` is `::1`), as a certificate names it.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Hand on each event of `feed` until it ends: returns why, or `None` when the writer is gone.
async fn read_feed<T>(
    mut feed: BufReader<Stream>,
    heard: &mpsc::Sender<T>,
    event: impl Fn(String) -> T,
) -> Option<String> {
    let mut line = Vec::new();
    let mut data = String::new();
    loop {
        line.clear();
        let next = async {
            let mut limited = (&mut feed).take(MAX_LINE);
            limited.read_until(b'\n', &mut line).await
        };
        let read = tokio::select! {
            read = timeout(SILENCE, next) => read,
            _ = heard.closed() => return None,
        };
        match read {
            Err(_) => return Some(format!("no word for {}s", SILENCE.as_secs())),
            Ok(Err(error)) => return Some(error.to_string()),
            Ok(Ok(0)) => return Some("the node closed the feed".to_owned()),
            Ok(Ok(_)) => {}
        }
        let Some(text) = line.strip_suffix(b"\n") else {
            return Some("a line of the feed was too long".to_owned());
        };
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            if !data.is_empty() && heard.send(event(std::mem::take(&mut data))).await.is_err() {
                return None;
            }
        } else if let Some(value) = text.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            // An event is gathered whole before it is handed on: bounded, or a feed that
            // never ends its event would take all the memory there is.
            if data.len() + value.len() >= MAX_EVENT {
                return Some("an event of the feed was too long".to_owned());
            }
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(&String::from_utf8_lossy(value));
        }
        // Comments (`: keepalive`) and other fields (`retry:`) say nothing to print.
    }
}

/// A line of `listen`'s own, about `node`.
fn status(format: Format, node: &str, event: &str, reason: Option<&str>) -> String {
    let now = Rfc3339(SystemTime::now()).to_string();
    match format {
        Format::Json => {
            let mut object = serde_json::json!({ "time": now, "node": node, "event": event });
            if let Some(reason) = reason {
                object["reason"] = Value::from(reason);
            }
            object.to_string()
        }
        Format::Readable => {
            let what = match (event, reason) {
                ("reconnecting", Some(why)) => format!("gone ({}), reconnecting...", shown(why)),
                ("waiting", Some(why)) => format!("not up ({}), waiting...", shown(why)),
                ("back", _) => "back".to_owned(),
                (event, Some(why)) => format!("{event}: {}", shown(why)),
                (event, None) => event.to_owned(),
            };
            format!("{} [ {} ] {what}", clock(&now), shown(node))
        }
    }
}

/// The time of day of an RFC 3339 time, `12:00:01.234`; anything else as it is.
fn clock(time: &str) -> &str {
    time.get(11..23).unwrap_or(time)
}

/// An event of the feed as a person reads it.
fn readable(json: &str) -> String {
    let Ok(event) = serde_json::from_str::<Value>(json) else {
        return format!("? {}", shown(json));
    };
    let field = |name: &str| -> String {
        match &event[name] {
            Value::String(s) => shown(s).to_string(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    };
    let took = match event["micros"].as_u64() {
        Some(us) if us < 10_000 => format!(" ({us} us)"),
        Some(us) => format!(" ({:.1} ms)", us as f64 / 1000.0),
        None => String::new(),
    };
    let name = field("event");
    let what = match name.as_str() {
        "listening" => format!("listening on {}", field("addr")),
        "client_up" => format!("{} joined on {}", field("client"), field("channel")),
        "client_down" if event["normal"] == Value::Bool(true) => {
            format!("{} left: {}", field("client"), field("reason"))
        }
        "client_down" => format!("{} dropped: {}", field("client"), field("reason")),
        "client_refused" => format!("refused {}: {}", field("client"), field("reason")),
        "message" => format!("{} < {}", field("channel"), field("text")),
        "ack" => format!("> {}{took}", field("ack")),
        "peer_up" => format!("link to {} up", field("peer")),
        "peer_waiting" => format!(
            "waiting for {} at {}: not up yet ({})",
            field("peer"),
            field("url"),
            field("reason")
        ),
        "peer_down" => format!("link to {} down: {}", field("peer"), field("reason")),
        "peer_ack" => format!("{} > {}{took}", field("peer"), field("ack")),
        "send_failed" => format!("message to {} failed: {}", field("peer"), field("reason")),
        "stopping" => "stopping".to_owned(),
        "lagged" => format!(
            "... missed {} events (listening too slowly)",
            field("missed")
        ),
        _ => shown(json).to_string(),
    };
    format!("{} [ {} ] {what}", clock(&field("time")), field("node"))
}

/// A connection error in a few words: "connection refused", as `send` says it.
fn describe(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::TimedOut => "timed out".to_owned(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_lines() {
        let at = r#""time":"2025-01-31T12:00:01.234Z","node":"iopin""#;
        let cases = [
            (
                r#""event":"message","client":"127.0.0.1:1","channel":"/datafeed","text":"0""#,
                "12:00:01.234 [ iopin ] /datafeed < 0",
            ),
            (
                r#""event":"ack","client":"127.0.0.1:1","ack":"acknowledged","micros":41"#,
                "12:00:01.234 [ iopin ] > acknowledged (41 us)",
            ),
            (
                r#""event":"ack","client":"127.0.0.1:1","ack":"1\n[ x ] forged""#,
                r"12:00:01.234 [ iopin ] > 1\n[ x ] forged",
            ),
            (
                r#""event":"peer_ack","peer":"buzzer","ack":"...","micros":12345"#,
                "12:00:01.234 [ iopin ] buzzer > ... (12.3 ms)",
            ),
            (
                r#""event":"lagged","missed":7"#,
                "12:00:01.234 [ iopin ] ... missed 7 events (listening too slowly)",
            ),
        ];
        for (fields, line) in cases {
            assert_eq!(readable(&format!("{{{at},{fields}}}")), line);
        }
        assert_eq!(readable("not json"), "? not json");
    }

    #[test]
    fn sources_come_from_urls() {
        let source = Source::from_url("ws://127.0.0.1:8765/datafeed");
        assert_eq!(source.addr, "127.0.0.1:8765");
        assert_eq!(Source::from_url("localhost:1").addr, "localhost:1");
    }
}
