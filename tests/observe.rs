//! Watching a node: `GET /events` and `GET /metrics` answered on the node's own port beside
//! websocket handshakes, and `arduino listen` following the feed. Each test serves the routing
//! on a real socket, with a feed the test emits events into.

mod common;

use std::{
    io::{self, Write},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use arduino::{
    Event, Observer,
    observe::{Format, HttpOptions, Route, Source, Watch, listen, route},
};
use common::{PATIENCE, ws};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::mpsc,
    task::JoinHandle,
    time::{Instant, sleep, timeout},
};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Counts the allocations of each thread, so that a test can tell what one call allocated.
struct Counting;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// SAFETY: every call is handed to the system allocator unchanged; only a thread-local counter
// is added, which does not allocate.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as the caller promised for this call.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as the caller promised for this call.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(std::cell::Cell::get)
}

/// A node's listener, as far as watching goes: each accepted connection goes through
/// [`route`]; a websocket handshake left to it is completed by tokio-tungstenite and echoes
/// each message with its path.
struct Served {
    addr: SocketAddr,
    stop: CancellationToken,
    routes_rx: mpsc::UnboundedReceiver<String>,
    accepting: JoinHandle<()>,
}

impl Served {
    async fn start(watch: &Watch) -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), watch)
    }

    fn on(listener: TcpListener, watch: &Watch) -> Self {
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let (routes_tx, routes_rx) = mpsc::unbounded_channel();
        let accepting = tokio::spawn({
            let (watch, stop) = (watch.clone(), stop.clone());
            async move {
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let stream = tokio::select! {
                        _ = stop.cancelled() => break,
                        accepted = listener.accept() => accepted.unwrap().0,
                    };
                    let (watch, stop, routes_tx) = (watch.clone(), stop.clone(), routes_tx.clone());
                    connections.spawn(async move {
                        let seen = match route(stream, &watch, &stop).await {
                            Route::Websocket(stream) => {
                                echo(stream).await;
                                "websocket".to_owned()
                            }
                            Route::Done => "done".to_owned(),
                            Route::Refused(reason) => format!("refused: {reason}"),
                        };
                        let _ = routes_tx.send(seen);
                    });
                }
                drop(listener);
                // Every connection ends with the node, within its bounds.
                timeout(Duration::from_secs(2), async {
                    while connections.join_next().await.is_some() {}
                })
                .await
                .expect("connections end when the node stops");
            }
        });
        Self {
            addr,
            stop,
            routes_rx,
            accepting,
        }
    }

    /// What became of the next connection routed.
    async fn next_route(&mut self) -> String {
        timeout(PATIENCE, self.routes_rx.recv())
            .await
            .expect("a connection routed in time")
            .unwrap()
    }

    async fn stop(self) {
        self.stop.cancel();
        timeout(PATIENCE, self.accepting).await.unwrap().unwrap();
    }
}

#[allow(clippy::result_large_err)] // tungstenite's callback type
async fn echo(stream: TcpStream) {
    let mut path = String::new();
    let callback = |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                    response| {
        path = request.uri().path().to_owned();
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(Ok(Message::Text(text))) = ws.next().await {
        let _ = ws.send(Message::text(format!("{path} {text}"))).await;
    }
}

fn client() -> arduino::events::Client<'static> {
    arduino::events::Client::Addr("127.0.0.1:4000".parse().unwrap())
}

fn message(watch: &Watch, text: &str) {
    watch.observe(
        "pin",
        &Event::MessageIn {
            client: client(),
            channel: "/datafeed",
            text,
        },
    );
}

/// Wait, polling, until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        sleep(Duration::from_millis(5)).await; // polling
    }
}

/// A plain HTTP GET of `path` with `headers`; returns the connection after the request.
async fn get(addr: SocketAddr, path: &str, headers: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// The whole answer to a request that the server ends by closing.
async fn answer(mut stream: TcpStream) -> String {
    let mut answer = String::new();
    timeout(PATIENCE, stream.read_to_string(&mut answer))
        .await
        .expect("the answer in time")
        .unwrap();
    answer
}

/// An event stream's head, then its events one by one.
struct Sse {
    lines: BufReader<TcpStream>,
}

impl Sse {
    async fn open(stream: TcpStream) -> (String, Self) {
        let mut lines = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            timeout(PATIENCE, lines.read_line(&mut line))
                .await
                .expect("the head in time")
                .unwrap();
            if line == "\r\n" || line.is_empty() {
                return (head, Self { lines });
            }
            head.push_str(&line);
        }
    }

    /// The next event's JSON, or `None` when the stream ends.
    async fn next(&mut self) -> Option<serde_json::Value> {
        loop {
            let mut line = String::new();
            let n = timeout(PATIENCE, self.lines.read_line(&mut line))
                .await
                .expect("an event in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            if let Some(json) = line.strip_prefix("data: ") {
                return Some(serde_json::from_str(json.trim_end()).unwrap());
            }
        }
    }
}

/// With no listener, an event costs the feed and the metrics no allocation; with one, the
/// feed makes its line.
#[test]
fn an_event_nobody_listens_to_allocates_nothing() {
    let watch = Watch::new("pin", ["buzzer"], None);
    let every_kind = |watch: &Watch| {
        message(watch, "0");
        watch.observe(
            "pin",
            &Event::AckOut {
                client: client(),
                ack: "acknowledged",
                took: Duration::from_micros(41),
            },
        );
        watch.observe(
            "pin",
            &Event::PeerUp {
                peer: "buzzer",
                url: "ws://127.0.0.1:1",
            },
        );
        watch.observe(
            "pin",
            &Event::PeerAck {
                peer: "buzzer",
                ack: "...",
                took: Duration::from_micros(41),
            },
        );
    };
    let before = allocations();
    for _ in 0..1000 {
        every_kind(&watch);
    }
    assert_eq!(allocations() - before, 0);
    assert!(
        watch
            .metrics()
            .render()
            .contains("arduino_messages_total 1000\n")
    );

    let _listener = watch.feed().subscribe();
    let before = allocations();
    every_kind(&watch);
    assert!(
        allocations() - before >= 4,
        "no line was made for the listener"
    );
}

/// An SSE listener gets every event, in order, as one JSON object with the time, the node, the
/// event's name and its fields; the stream ends when the node stops.
#[tokio::test]
async fn a_listener_gets_events_in_order_as_json() {
    let watch = Watch::new("pin", ["buzzer"], None);
    let mut node = Served::start(&watch).await;
    let (head, mut events) = Sse::open(get(node.addr, "/events", "").await).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/event-stream\r\n"),
        "{head}"
    );
    until("the listener to subscribe", || {
        watch.feed().subscribers() == 1
    })
    .await;

    for n in 0..100 {
        message(&watch, &n.to_string());
    }
    watch.observe(
        "pin",
        &Event::AckOut {
            client: client(),
            ack: "acknowledged",
            took: Duration::from_micros(41),
        },
    );
    watch.observe("pin", &Event::Stopping);
    for n in 0..100 {
        let event = events.next().await.unwrap();
        assert_eq!(event["event"], "message");
        assert_eq!(event["node"], "pin");
        assert_eq!(event["channel"], "/datafeed");
        assert_eq!(event["client"], "127.0.0.1:4000");
        assert_eq!(event["text"], n.to_string());
        let time = event["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    }
    let ack = events.next().await.unwrap();
    assert_eq!(
        (&ack["event"], &ack["ack"]),
        (&"ack".into(), &"acknowledged".into())
    );
    assert_eq!(ack["micros"], 41);
    assert_eq!(events.next().await.unwrap()["event"], "stopping");

    node.stop.cancel();
    assert_eq!(events.next().await, None, "the stream ends with the node");
    assert_eq!(node.next_route().await, "done");
    node.stop().await;
    assert_eq!(watch.feed().subscribers(), 0);
}

/// A client with a small receive window, for a listener that reads slowly or not at all.
async fn slow_listener(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: pin\r\n\r\n")
        .await
        .unwrap();
    stream
}

/// A listener that falls behind misses events and is told how many, while the node emits on
/// without waiting for it; what it does get is in order.
#[tokio::test]
async fn a_listener_that_falls_behind_is_told_how_many_it_missed() {
    let watch = Watch::new("pin", [], None);
    let node = Served::start(&watch).await;
    let stream = slow_listener(node.addr).await;
    until("the listener to subscribe", || {
        watch.feed().subscribers() == 1
    })
    .await;

    // Far more than the feed keeps (1024 events) and than the socket buffers hold, while the
    // listener reads nothing; the server gets turns to write in between.
    let text = "x".repeat(1000);
    for batch in 0..100 {
        for n in 0..100 {
            message(&watch, &format!("{} {text}", batch * 100 + n));
        }
        tokio::task::yield_now().await;
    }
    watch.observe("pin", &Event::Stopping);

    let (_, mut events) = Sse::open(stream).await;
    let mut last = None;
    let mut missed = 0;
    loop {
        let event = events.next().await.expect("events up to the last");
        match event["event"].as_str().unwrap() {
            "lagged" => missed += event["missed"].as_u64().unwrap(),
            "stopping" => break,
            _ => {
                let text = event["text"].as_str().unwrap();
                let n: u64 = text.split(' ').next().unwrap().parse().unwrap();
                assert!(last < Some(n), "{n} after {last:?}");
                last = Some(n);
            }
        }
    }
    assert!(missed > 0, "told of no missed event");
    assert_eq!(last, Some(9999), "the newest events are not missed");
    node.stop().await;
}

/// A listener that never reads is dropped after the write timeout, not buffered for: its
/// subscription ends while the node keeps emitting.
#[tokio::test]
async fn a_listener_that_never_reads_is_dropped() {
    let options = HttpOptions {
        write_timeout: Duration::from_millis(200),
        ..HttpOptions::default()
    };
    let watch = Watch::new("pin", [], None).with_options(options);
    let mut node = Served::start(&watch).await;
    let _never_read = slow_listener(node.addr).await;
    until("the listener to subscribe", || {
        watch.feed().subscribers() == 1
    })
    .await;

    let text = "x".repeat(1000);
    let deadline = Instant::now() + PATIENCE;
    while watch.feed().subscribers() > 0 {
        assert!(Instant::now() < deadline, "the listener was never dropped");
        for _ in 0..100 {
            message(&watch, &text);
        }
        sleep(Duration::from_millis(1)).await; // polling: a pause lets the stream task run
    }
    assert_eq!(node.next_route().await, "done");
    node.stop().await;
}

/// `/metrics` answers the counts in Prometheus text format, which promtool accepts.
#[tokio::test]
async fn metrics_render_and_pass_promtool() {
    let watch = Watch::new("pin", ["buzzer", "ws://127.0.0.1:9"], None);
    let node = Served::start(&watch).await;
    watch.observe(
        "pin",
        &Event::ClientUp {
            client: client(),
            channel: "/datafeed",
        },
    );
    message(&watch, "0");
    watch.observe(
        "pin",
        &Event::AckOut {
            client: client(),
            ack: "acknowledged",
            took: Duration::from_micros(41),
        },
    );
    watch.observe(
        "pin",
        &Event::PeerUp {
            peer: "buzzer",
            url: "ws://127.0.0.1:8766/datafeed",
        },
    );
    watch.observe(
        "pin",
        &Event::PeerAck {
            peer: "buzzer",
            ack: "buzz buzz buzz",
            took: Duration::from_micros(41),
        },
    );

    let answer = answer(get(node.addr, "/metrics", "").await).await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    for line in [
        "arduino_messages_total 1",
        "arduino_acks_total{outcome=\"ok\"} 1",
        "arduino_connections 1",
        "arduino_peer_up{peer=\"buzzer\"} 1",
        "arduino_peer_up{peer=\"ws://127.0.0.1:9\"} 0",
        "arduino_peer_messages_total{peer=\"buzzer\",outcome=\"ok\"} 1",
        "arduino_peer_ack_seconds_bucket{peer=\"buzzer\",le=\"2.5e-05\"} 0",
        "arduino_peer_ack_seconds_bucket{peer=\"buzzer\",le=\"5e-05\"} 1",
        "arduino_peer_ack_seconds_count{peer=\"buzzer\"} 1",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line} in\n{body}");
    }
    common::promtool_accepts(body);
    common::promtool_accepts(&Watch::new("clock", [], None).metrics().render());
    node.stop().await;
}

/// Websocket handshakes, to `/events` and `/metrics` too, are left untouched for
/// tokio-tungstenite to complete; so is a plain request for another path.
#[tokio::test]
async fn websocket_handshakes_are_left_untouched() {
    let watch = Watch::new("pin", [], None);
    let mut node = Served::start(&watch).await;
    for path in ["/events", "/metrics", "/datafeed", "/"] {
        let mut client = ws::connect(&format!("ws://{}{path}", node.addr)).await;
        assert_eq!(ws::ask(&mut client, "1").await, format!("{path} 1"));
        drop(client);
        assert_eq!(node.next_route().await, "websocket");
    }
    // Not ours, not a handshake: left for the handshake to refuse, as before.
    drop(get(node.addr, "/eventsource", "").await);
    assert_eq!(node.next_route().await, "websocket");
    assert_eq!(watch.feed().subscribers(), 0);
    node.stop().await;
}

/// With a secret set, `/events` and `/metrics` need it: 401 without it or with another.
#[tokio::test]
async fn events_and_metrics_need_the_secret() {
    let watch = Watch::new("pin", [], Some("s3cret"));
    let mut node = Served::start(&watch).await;
    for (path, headers, why) in [
        ("/events", "", "no secret"),
        ("/metrics", "", "no secret"),
        (
            "/metrics",
            "Authorization: Bearer s3cre7\r\n",
            "wrong secret",
        ),
        ("/events", "Authorization: s3cret\r\n", "wrong secret"),
    ] {
        let answer = answer(get(node.addr, path, headers).await).await;
        assert!(
            answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
            "{answer}"
        );
        assert_eq!(
            node.next_route().await,
            format!("refused: HTTP 401 ({why}) on GET {path}")
        );
    }
    let answer = answer(get(node.addr, "/metrics", "Authorization: Bearer s3cret\r\n").await).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let (head, _events) =
        Sse::open(get(node.addr, "/events", "authorization: Bearer s3cret\r\n").await).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(watch.feed().subscribers(), 1);
    node.stop().await;
}

/// A writer the test reads while `listen` writes to it.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Write for Screen {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Screen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Wait for a line ending with `end`.
    async fn shows(&self, end: &str) {
        until(&format!("a line ending {end:?}"), || {
            self.text().lines().any(|l| l.ends_with(end))
        })
        .await;
    }
}

/// `listen` prints events as lines a person reads, says when a node goes away and comes
/// back, and follows it again once it is back.
#[tokio::test]
async fn listen_prints_readable_lines_and_reconnects() {
    let watch = Watch::new("pin", [], Some("s3cret"));
    let node = Served::start(&watch).await;
    let addr = node.addr;
    let screen = Screen::default();
    let source = Source {
        name: "pin".to_owned(),
        addr: addr.to_string(),
        secret: Some("s3cret".to_owned()),
        tls: None,
    };
    let listening = tokio::spawn(listen(vec![source], Format::Readable, screen.clone()));
    until("listen to subscribe", || watch.feed().subscribers() == 1).await;
    message(&watch, "0");
    watch.observe(
        "pin",
        &Event::AckOut {
            client: client(),
            ack: "acknowledged",
            took: Duration::from_micros(41),
        },
    );
    screen.shows("[ pin ] > acknowledged (41 us)").await;
    let text = screen.text();
    let first = text.lines().next().unwrap();
    assert!(first.ends_with(" [ pin ] /datafeed < 0"), "{text}");
    assert_eq!(first.find(" [").unwrap(), "12:00:01.234".len(), "{text}");

    node.stop().await;
    screen.shows("), reconnecting...").await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let node = Served::on(listener, &watch);
    screen.shows("[ pin ] back").await;
    until("listen to subscribe again", || {
        watch.feed().subscribers() == 1
    })
    .await;
    message(&watch, "1");
    screen.shows("[ pin ] /datafeed < 1").await;

    listening.abort();
    node.stop().await;
}

/// With `--json`, `listen` prints each event as the JSON object the node sent.
#[tokio::test]
async fn listen_prints_json_lines() {
    let watch = Watch::new("pin", [], None);
    let node = Served::start(&watch).await;
    let screen = Screen::default();
    let source = Source::from_url(&format!("ws://{}", node.addr));
    let listening = tokio::spawn(listen(vec![source], Format::Json, screen.clone()));
    until("listen to subscribe", || watch.feed().subscribers() == 1).await;
    message(&watch, "7");
    screen.shows("}").await;
    let line = screen.text();
    let event: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(
        (&event["event"], &event["text"]),
        (&"message".into(), &"7".into())
    );
    listening.abort();
    node.stop().await;
}

/// A writer whose reader went away, as `arduino listen | head -1` leaves it.
struct ClosedPipe;

impl Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `listen` ends cleanly, and lets go of the node, when its output is a closed pipe.
#[tokio::test]
async fn listen_ends_cleanly_on_a_closed_pipe() {
    let watch = Watch::new("pin", [], None);
    let node = Served::start(&watch).await;
    let source = Source::from_url(&node.addr.to_string());
    let listening = tokio::spawn(listen(vec![source], Format::Readable, ClosedPipe));
    until("listen to subscribe", || watch.feed().subscribers() == 1).await;
    message(&watch, "0");
    let ended = timeout(PATIENCE, listening).await.expect("listen ends");
    assert!(ended.unwrap().is_ok());
    until("listen to let go", || watch.feed().subscribers() == 0).await;
    node.stop().await;
}

/// `listen` says so and ends when the node refuses it for want of the secret.
#[tokio::test]
async fn listen_says_when_a_node_needs_the_secret() {
    let watch = Watch::new("pin", [], Some("s3cret"));
    let node = Served::start(&watch).await;
    let screen = Screen::default();
    let source = Source::from_url(&node.addr.to_string());
    let ended = timeout(
        PATIENCE,
        listen(vec![source], Format::Readable, screen.clone()),
    )
    .await
    .expect("listen ends");
    assert!(ended.is_err());
    assert!(
        screen
            .text()
            .contains("refused: HTTP 401: the node needs the mesh's secret"),
        "{}",
        screen.text()
    );
    node.stop().await;
}
