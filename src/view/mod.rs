//! `arduino view`: a live picture of the mesh in a browser. A small HTTP server follows the
//! event feed (`GET /events`) of every node of the mesh that has a port, with the mesh's
//! secret, and serves one page that draws the mesh and shows those events as they come. In a
//! mesh with a `[nats]` server, the nodes without a port are followed through it: their events
//! on `arduino.events.<node>`, and whether a copy is up by a probe every two seconds.
//!
//! A browser cannot send the secret on an `EventSource`, and nodes send no CORS headers, so
//! the page never talks to a node: the view server answers
//!
//! - `GET /`: the page (with `/page.js` and `/page.css`), built into the binary;
//! - `GET /mesh.json`: the nodes, their sketches, addresses and links, from the mesh file, with
//!   each node's state as the view server sees its feed (`up`, `down`, `connecting`, or
//!   `unwatched` for a node without a port);
//! - `GET /events`: every followed node's events, as server-sent events. Each SSE event holds
//!   one or more JSON objects, one per `data:` line (batched, so that a browser handles
//!   thousands a second): the nodes' own, and the view's `node_up` and `node_down` (with
//!   `reason`) as it gains and loses a node's feed. A stream starts with one of those for
//!   every followed node. A browser that falls behind misses events and gets a `lagged`
//!   object saying how many; it never slows the nodes or the other browsers.

use std::{
    fmt::Write as _,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, broadcast, mpsc},
    time::{Instant, MissedTickBehavior, interval_at, sleep, timeout, timeout_at},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    mesh::Mesh,
    observe::{
        Source,
        feed::{Feed, Rfc3339, Subscription},
        listen::follow_once,
    },
};

/// Where `arduino view` listens when not told: this machine only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// The most of a request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How much of the waiting events one SSE event carries.
const BATCH: usize = 64 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long the tasks may take to end once asked to stop.
const LAST_WORDS: Duration = Duration::from_secs(1);

/// Limits of the view server.
#[derive(Debug, Clone)]
pub struct ViewOptions {
    /// How many browser connections are served at once; more are answered 503.
    pub max_connections: usize,
    /// How many events a browser may fall behind before it misses some.
    pub backlog: usize,
    /// How long a client has to send its request head.
    pub head_deadline: Duration,
    /// How long a browser may leave what it was sent unread before it is dropped.
    pub write_timeout: Duration,
    /// How often an idle event stream gets a comment.
    pub keepalive: Duration,
    /// The feeds of nodes in the view's own process (`arduino up --view`): a node without a
    /// port is followed through its feed here.
    pub feeds: Vec<Feed>,
}

impl Default for ViewOptions {
    fn default() -> Self {
        Self {
            max_connections: 64,
            backlog: 8192,
            head_deadline: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(15),
            feeds: Vec::new(),
        }
    }
}

/// Serve the view of `mesh` on `listener` until `stop` is cancelled, following the feed of
/// every node of the mesh that has a port, with `secret` (sent to those nodes only).
///
/// `arduino view [--mesh FILE] [ADDR]` binds `ADDR` (default [`DEFAULT_ADDR`]) and calls this;
/// so does `arduino up --view [ADDR]`, beside its nodes.
///
/// # Errors
///
/// Accepting connections failed for good (not for one connection, which is only logged).
pub async fn serve(
    listener: TcpListener,
    mesh: &Mesh,
    secret: Option<&str>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, mesh, secret, ViewOptions::default(), stop).await
}

/// [`serve`], with other limits.
///
/// # Errors
///
/// As [`serve`].
pub async fn serve_with(
    listener: TcpListener,
    mesh: &Mesh,
    secret: Option<&str>,
    options: ViewOptions,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let (events_tx, _) = broadcast::channel(options.backlog.max(1));
    let view = Arc::new(View {
        picture: Picture::of(mesh),
        events_tx,
        options,
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "view at http://{addr}/");
    }
    let tasks = TaskTracker::new();
    // Through NATS, the nodes followed neither by their port nor in this process.
    let mut over_nats = Vec::new();
    for (index, node) in view.picture.nodes.iter().enumerate() {
        let Some(addr) = &node.addr else {
            let feed = view
                .options
                .feeds
                .iter()
                .find(|feed| feed.node() == node.name);
            if let Some(feed) = feed {
                tasks.spawn(follow_feed(
                    view.clone(),
                    index,
                    feed.subscribe(),
                    stop.clone(),
                ));
            } else if mesh.nats.is_some() && !node.external {
                over_nats.push(index);
            }
            continue;
        };
        let source = Source {
            name: node.name.clone(),
            addr: addr.clone(),
            secret: secret.map(str::to_owned),
            tls: mesh.tls.clone(),
        };
        tasks.spawn(follow(view.clone(), index, source, stop.clone()));
    }
    if let Some(def) = mesh.nats.as_ref().filter(|_| !over_nats.is_empty()) {
        match crate::nats::connect(&def.url, "view", mesh.tls.clone()) {
            Ok(client) => {
                for &index in &over_nats {
                    view.picture.set(index, State::Connecting, None);
                }
                tasks.spawn(follow_nats(view.clone(), over_nats, client, stop.clone()));
            }
            Err(error) => tracing::warn!("view: {error}"),
        }
    }
    let permits = Arc::new(Semaphore::new(view.options.max_connections.max(1)));
    let result = loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) if transient(&error) => {
                tracing::debug!(%error, "view: accept failed");
                // Out of descriptors, say: give the others a moment to close theirs.
                tokio::select! {
                    _ = stop.cancelled() => break Ok(()),
                    _ = sleep(Duration::from_millis(50)) => continue,
                }
            }
            Err(error) => break Err(error),
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tasks.spawn(too_busy(stream, view.options.write_timeout));
            continue;
        };
        let view = view.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            answer(stream, &view, &stop).await;
            drop(permit);
        });
    };
    stop.cancel();
    tasks.close();
    let _ = timeout(LAST_WORDS, tasks.wait()).await;
    result
}

fn transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut
    ) || error
        .raw_os_error()
        .is_some_and(|code| code == libc::EMFILE || code == libc::ENFILE || code == libc::ENOBUFS)
}

/// What every task of the view server shares.
struct View {
    picture: Picture,
    events_tx: broadcast::Sender<Bytes>,
    options: ViewOptions,
}

/// The mesh as the page draws it, with what the view knows of each node.
struct Picture {
    path: String,
    nodes: Vec<Shown>,
    links: Vec<Link>,
    states: Mutex<Vec<Seen>>,
}

struct Shown {
    name: String,
    sketch: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    /// `host:port` of its feed, for a node that has a port.
    addr: Option<String>,
    external: bool,
}

#[derive(Serialize)]
struct Link {
    from: String,
    to: String,
    /// The peer as the `to` list says it, and so as the sender's events name it.
    peer: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum State {
    Connecting,
    Up,
    Down,
    Unwatched,
}

#[derive(Clone)]
struct Seen {
    state: State,
    reason: Option<String>,
}

impl Picture {
    fn of(mesh: &Mesh) -> Self {
        let mut nodes: Vec<Shown> = mesh
            .nodes
            .iter()
            .map(|node| {
                let addr = node.port.filter(|&port| port != 0).map(|port| {
                    if node.host.contains(':') {
                        format!("[{}]:{port}", node.host)
                    } else {
                        format!("{}:{port}", node.host)
                    }
                });
                Shown {
                    name: node.name.clone(),
                    sketch: Some(node.sketch().to_owned()),
                    host: Some(node.host.clone()),
                    port: node.port,
                    addr,
                    external: false,
                }
            })
            .collect();
        let mut links = Vec::new();
        for node in &mesh.nodes {
            for to in &node.to {
                let url = to.trim_end_matches('/');
                // A URL at a node's address is that node; any other is drawn on its own.
                let target = match mesh
                    .nodes
                    .iter()
                    .find(|n| mesh.url(n).as_deref() == Some(url))
                {
                    Some(target) => target.name.clone(),
                    None if url.starts_with("ws://") || url.starts_with("wss://") => {
                        if !nodes.iter().any(|n| n.name == url) {
                            nodes.push(Shown {
                                name: url.to_owned(),
                                sketch: None,
                                host: None,
                                port: None,
                                addr: None,
                                external: true,
                            });
                        }
                        url.to_owned()
                    }
                    None => to.clone(),
                };
                links.push(Link {
                    from: node.name.clone(),
                    to: target,
                    peer: to.clone(),
                });
            }
        }
        let states = nodes
            .iter()
            .map(|node| Seen {
                state: if node.addr.is_some() {
                    State::Connecting
                } else {
                    State::Unwatched
                },
                reason: None,
            })
            .collect();
        Self {
            path: mesh.path.clone(),
            nodes,
            links,
            states: Mutex::new(states),
        }
    }

    fn states(&self) -> Vec<Seen> {
        // A poisoned lock only means a task panicked mid-update of plain data: use it.
        self.states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set(&self, index: usize, state: State, reason: Option<String>) {
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(seen) = states.get_mut(index) {
            *seen = Seen { state, reason };
        }
    }

    fn json(&self) -> String {
        #[derive(Serialize)]
        struct NodeJson<'a> {
            name: &'a str,
            sketch: Option<&'a str>,
            host: Option<&'a str>,
            port: Option<u16>,
            external: bool,
            state: State,
            reason: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct MeshJson<'a> {
            path: &'a str,
            nodes: Vec<NodeJson<'a>>,
            links: &'a [Link],
        }
        let states = self.states();
        let nodes = self
            .nodes
            .iter()
            .zip(&states)
            .map(|(node, seen)| NodeJson {
                name: &node.name,
                sketch: node.sketch.as_deref(),
                host: node.host.as_deref(),
                port: node.port,
                external: node.external,
                state: seen.state,
                reason: seen.reason.as_deref(),
            })
            .collect();
        let mesh = MeshJson {
            path: &self.path,
            nodes,
            links: &self.links,
        };
        serde_json::to_string(&mesh).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// The view's own event about node `node`: `node_up`, or `node_down` with why.
fn status_line(node: &str, seen: &Seen) -> Bytes {
    let event = match seen.state {
        State::Up => "node_up",
        _ => "node_down",
    };
    let mut object = serde_json::json!({
        "time": Rfc3339(SystemTime::now()).to_string(),
        "node": node,
        "event": event,
    });
    if let Some(reason) = &seen.reason {
        object["reason"] = reason.as_str().into();
    }
    Bytes::from(object.to_string())
}

/// Follow node `index`'s feed until `stop`, reconnecting with backoff, and hand each of its
/// events (and the view's word on it) to every browser.
async fn follow(view: Arc<View>, index: usize, source: Source, stop: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    let mut last_reason = String::new();
    loop {
        let (lines_tx, mut lines_rx) = mpsc::channel::<String>(256);
        let opened = || {
            let seen = Seen {
                state: State::Up,
                reason: None,
            };
            view.picture.set(index, State::Up, None);
            let _ = view.events_tx.send(status_line(&source.name, &seen));
        };
        let following = follow_once(&source, opened, &lines_tx);
        tokio::pin!(following);
        let (why, _again) = loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ended = &mut following => break ended,
                Some(line) = lines_rx.recv() => {
                    let _ = view.events_tx.send(Bytes::from(line));
                }
            }
        };
        while let Ok(line) = lines_rx.try_recv() {
            let _ = view.events_tx.send(Bytes::from(line));
        }
        let before = view.picture.states().get(index).map(|seen| seen.state);
        if before == Some(State::Up) {
            backoff = FIRST_BACKOFF;
        }
        // Losing the node is news; failing to reach it again for the same reason is not.
        if before != Some(State::Down) || why != last_reason {
            let seen = Seen {
                state: State::Down,
                reason: Some(why.clone()),
            };
            view.picture.set(index, State::Down, Some(why.clone()));
            let _ = view.events_tx.send(status_line(&source.name, &seen));
        }
        last_reason = why;
        // A node that refused (another secret) may be restarted with the right one: keep
        // asking, slowly.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Follow node `index` of the view's own process through its feed, until `stop`.
async fn follow_feed(
    view: Arc<View>,
    index: usize,
    mut subscription: Subscription,
    stop: CancellationToken,
) {
    let seen = Seen {
        state: State::Up,
        reason: None,
    };
    view.picture.set(index, State::Up, None);
    let name = view.picture.nodes[index].name.clone();
    let _ = view.events_tx.send(status_line(&name, &seen));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            line = subscription.recv() => {
                let _ = view.events_tx.send(line);
            }
        }
    }
}

/// How often the view asks whether a node followed through NATS is up.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long a node heard from through NATS counts as up without an answer to a probe (one
/// that takes no messages, a clock, answers none).
const HEARD_LATELY: Duration = Duration::from_secs(5);

/// Follow the nodes at `indices` through NATS until `stop`: their events as they publish them
/// on `arduino.events.<node>`, and whether a copy of each is up, by a probe it answers itself.
async fn follow_nats(
    view: Arc<View>,
    indices: Vec<usize>,
    client: crate::nats::Client,
    stop: CancellationToken,
) {
    let prefix = format!("{}.{}.", crate::nats::ROOT, crate::nats::EVENTS);
    let (events_tx, mut events) = mpsc::channel(1024);
    client.subscribe(&format!("{prefix}>"), None, events_tx, None);
    let mut heard: Vec<Option<Instant>> = vec![None; indices.len()];
    let up = |at: usize, name: &str| {
        if view.picture.states().get(at).map(|seen| seen.state) != Some(State::Up) {
            let seen = Seen {
                state: State::Up,
                reason: None,
            };
            view.picture.set(at, State::Up, None);
            let _ = view.events_tx.send(status_line(name, &seen));
        }
    };
    let down = |at: usize, name: &str, why: String| {
        let before = view.picture.states().get(at).cloned();
        if before
            .is_some_and(|seen| seen.state != State::Down || seen.reason.as_ref() != Some(&why))
        {
            let seen = Seen {
                state: State::Down,
                reason: Some(why.clone()),
            };
            view.picture.set(at, State::Down, Some(why));
            let _ = view.events_tx.send(status_line(name, &seen));
        }
    };
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => {
                let Some(event) = event else { return };
                let node = event.subject.strip_prefix(prefix.as_bytes()).unwrap_or_default();
                let Some(at) = indices
                    .iter()
                    .position(|&index| view.picture.nodes[index].name.as_bytes() == node)
                else {
                    continue;
                };
                let name = &view.picture.nodes[indices[at]].name;
                // A node's own line: its text is escaped, so this cannot be a message's text.
                if find(&event.payload, br#""event":"stopping""#).is_some() {
                    heard[at] = None;
                    down(indices[at], name, "stopping".to_owned());
                } else {
                    heard[at] = Some(Instant::now());
                    up(indices[at], name);
                }
                let _ = view.events_tx.send(event.payload);
            }
            _ = probe.tick() => {
                for (at, &index) in indices.iter().enumerate() {
                    let name = &view.picture.nodes[index].name;
                    let Ok(subject) = crate::nats::subject(name, "/") else { continue };
                    let asked = client.start_request(subject.into(), Some(crate::nats::PROBE), Bytes::new());
                    let answer = match asked {
                        Ok(reply) => match timeout(PROBE_EVERY, reply).await {
                            Ok(Ok(answer)) => answer,
                            _ => continue,
                        },
                        Err(error) => Err(error),
                    };
                    let lately = heard[at].is_some_and(|at| at.elapsed() < HEARD_LATELY);
                    match answer {
                        Ok(_) => up(index, name),
                        Err(_) if lately => {}
                        Err(crate::nats::RequestError::NoResponders) => {
                            down(index, name, format!("no {name} is up"));
                        }
                        Err(error) => down(index, name, error.to_string()),
                    }
                }
            }
        }
    }
}

async fn too_busy(mut stream: TcpStream, write_timeout: Duration) {
    let _ = timeout(
        write_timeout,
        stream.write_all(&plain(
            "503 Service Unavailable",
            "too many connections to this view; close some tabs\n",
        )),
    )
    .await;
}

/// Read a request head and answer it.
async fn answer(mut stream: TcpStream, view: &View, stop: &CancellationToken) {
    let options = &view.options;
    let deadline = Instant::now() + options.head_deadline;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let complete = loop {
        if let Some(end) = find(&head, b"\r\n\r\n") {
            break Some(end);
        }
        if head.len() >= MAX_HEAD {
            break None;
        }
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            read = timeout_at(deadline, stream.read(&mut chunk)) => read,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => head.extend_from_slice(&chunk[..n]),
            Err(_) => break None,
        }
    };
    let response = match complete {
        None => plain("400 Bad Request", "no request head in time, or too long\n"),
        Some(end) => match request(&head[..end]) {
            Err(response) => response,
            Ok(path) => match path {
                "/" | "/index.html" => file("text/html; charset=utf-8", PAGE),
                "/page.js" => file("text/javascript; charset=utf-8", SCRIPT),
                "/page.css" => file("text/css; charset=utf-8", STYLE),
                "/mesh.json" => file("application/json", &view.picture.json()),
                "/events" => return stream_events(stream, view, stop).await,
                _ => plain("404 Not Found", "no such page: try /\n"),
            },
        },
    };
    let _ = timeout(options.write_timeout, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The path a request head asks for, or the answer refusing it.
fn request(head: &[u8]) -> Result<&str, Vec<u8>> {
    let bad = || plain("400 Bad Request", "not an HTTP request\n");
    let head = std::str::from_utf8(head).map_err(|_| bad())?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    if method != "GET" {
        return Err(plain(
            "405 Method Not Allowed",
            "this view answers GET only\n",
        ));
    }
    let host = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.trim());
    // The page shows what the mesh's secret opens: a web page elsewhere must not read it
    // through a name of its own that resolves here (DNS rebinding), so only an address or
    // `localhost` is answered.
    if !host.is_some_and(host_is_local_name) {
        return Err(plain(
            "403 Forbidden",
            "open this view by its address (http://127.0.0.1:PORT/) or as localhost\n",
        ));
    }
    Ok(target.split(['?', '#']).next().unwrap_or(target))
}

fn host_is_local_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

fn file(content_type: &str, body: &str) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: default-src 'self'; style-src 'self'; img-src 'self' data:\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body.as_bytes());
    response
}

fn plain(status: &str, body: &str) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body.as_bytes());
    response
}

const EVENTS_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
    Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n\
    retry: 1000\n\n";

/// Stream every followed node's events to one browser until it goes away, stops reading for
/// longer than the write timeout, or the view stops. This holds at most one batch: what the
/// browser has not taken waits in the bounded broadcast channel, and it misses it there.
async fn stream_events(mut stream: TcpStream, view: &View, stop: &CancellationToken) {
    let options = &view.options;
    let _ = stream.set_nodelay(true);
    // Subscribed before the states are read: no change of state falls between the two.
    let mut events_rx = view.events_tx.subscribe();
    let mut batch = Vec::with_capacity(BATCH);
    batch.extend_from_slice(EVENTS_HEAD);
    let states = view.picture.states();
    for (node, seen) in view.picture.nodes.iter().zip(&states) {
        if matches!(seen.state, State::Up | State::Down) {
            push_data(&mut batch, &status_line(&node.name, seen));
        }
    }
    batch.push(b'\n');
    let mut keepalive = interval_at(Instant::now() + options.keepalive, options.keepalive);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut scratch = [0u8; 256];
    loop {
        if !batch.is_empty()
            && !matches!(
                timeout(options.write_timeout, stream.write_all(&batch)).await,
                Ok(Ok(()))
            )
        {
            return;
        }
        batch.clear();
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            _ = keepalive.tick() => {
                batch.extend_from_slice(b": keepalive\n\n");
                continue;
            }
            // A browser sends nothing after its request: anything read is the end.
            read = stream.read(&mut scratch) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
            first = events_rx.recv() => first,
        };
        let mut next = Some(first);
        while let Some(received) = next.take() {
            match received {
                Ok(line) => push_data(&mut batch, &line),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    push_data(&mut batch, &lagged(missed));
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
            if batch.len() < BATCH {
                next = match events_rx.try_recv() {
                    Ok(line) => Some(Ok(line)),
                    Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                        Some(Err(broadcast::error::RecvError::Lagged(missed)))
                    }
                    Err(_) => None,
                };
            }
        }
        batch.push(b'\n');
    }
}

/// `line` as one `data:` line of an SSE event; a line break inside starts another.
fn push_data(batch: &mut Vec<u8>, line: &[u8]) {
    batch.extend_from_slice(b"data: ");
    for &byte in line {
        match byte {
            b'\n' => batch.extend_from_slice(b"\ndata: "),
            b'\r' => {}
            byte => batch.push(byte),
        }
    }
    batch.push(b'\n');
}

fn lagged(missed: u64) -> Vec<u8> {
    let mut line = String::new();
    let _ = write!(
        line,
        r#"{{"time":"{}","node":"","event":"lagged","missed":{missed},"reason":"this browser fell behind"}}"#,
        Rfc3339(SystemTime::now())
    );
    line.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_and_localhost_are_answered() {
        for host in [
            "127.0.0.1:8080",
            "localhost:1",
            "[::1]:80",
            "10.0.0.2",
            "LOCALHOST",
        ] {
            assert!(host_is_local_name(host), "{host}");
        }
        for host in ["evil.example:8080", "", "[evil]:1", "127.0.0.1.nip.io:80"] {
            assert!(!host_is_local_name(host), "{host}");
        }
    }

    #[test]
    fn requests_are_read_without_panicking() {
        let ok = b"GET /mesh.json?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n";
        assert_eq!(request(ok), Ok("/mesh.json"));
        for head in [
            &b""[..],
            b"\xff\xfe",
            b"POST / HTTP/1.1",
            b"GET / HTTP/1.1\r\nHost: a.b",
        ] {
            assert!(request(head).is_err());
        }
    }

    #[test]
    fn a_line_break_inside_an_event_starts_another_data_line() {
        let mut batch = Vec::new();
        push_data(&mut batch, b"{\"a\":1}\n{\"b\":2}\r");
        assert_eq!(batch, b"data: {\"a\":1}\ndata: {\"b\":2}\n");
    }

    #[test]
    fn the_picture_has_every_node_and_link() {
        let mesh = Mesh::parse(
            "[[node]]\nname=\"clock\"\nto=[\"pin\"]\n[[node]]\nname=\"pin\"\nsketch=\"iopin\"\n\
             port=9\nto=[\"ws://127.0.0.1:7\"]\n",
            "m.toml",
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&Picture::of(&mesh).json()).unwrap();
        assert_eq!(json["nodes"][0]["state"], "unwatched");
        assert_eq!(json["nodes"][1]["state"], "connecting");
        assert_eq!(json["nodes"][1]["sketch"], "iopin");
        assert_eq!(json["nodes"][2]["external"], true);
        assert_eq!(json["links"][1]["to"], "ws://127.0.0.1:7");
    }
}
