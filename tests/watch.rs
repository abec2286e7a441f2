//! Watching real nodes: `GET /events` and `GET /metrics` on the port of a running `arduino`
//! process, beside its websocket clients, asked with plain HTTP over a raw socket.

mod common;

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{MeshFile, PATIENCE, Process, free_port, ws};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpSocket, TcpStream},
    time::{sleep, timeout},
};
use tokio_tungstenite::tungstenite::Message;

/// A plain HTTP GET of `path` with `headers` (each ending in CRLF); returns the connection
/// after the request.
async fn get(addr: SocketAddr, path: &str, headers: &str) -> TcpStream {
    let mut stream = timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .expect("connected in time")
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// The whole answer to a request that the node ends by closing.
async fn answer(mut stream: TcpStream) -> String {
    let mut answer = String::new();
    timeout(PATIENCE, stream.read_to_string(&mut answer))
        .await
        .expect("the answer in time")
        .unwrap();
    answer
}

/// The body of `GET /metrics`, checked to be a 200.
async fn metrics(addr: SocketAddr, headers: &str) -> String {
    let answer = answer(get(addr, "/metrics", headers).await).await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    body.to_owned()
}

/// The value of the sample `series` (name and labels, as written) in `metrics`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Ask `/metrics` until `series` has `value`.
async fn until_sample(addr: SocketAddr, series: &str, value: f64) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = metrics(addr, "").await;
        if sample(&text, series) == Some(value) {
            return text;
        }
        assert!(Instant::now() < deadline, "{series} never {value}:\n{text}");
        sleep(Duration::from_millis(20)).await; // poll interval
    }
}

/// An event stream, opened: the node has subscribed it by the time its head arrives.
struct Sse {
    lines: BufReader<TcpStream>,
}

impl Sse {
    async fn open(addr: SocketAddr, headers: &str) -> Self {
        let mut lines = BufReader::new(get(addr, "/events", headers).await);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            timeout(PATIENCE, lines.read_line(&mut line))
                .await
                .expect("the head in time")
                .unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("text/event-stream"), "{head}");
        Self { lines }
    }

    /// The next event's JSON.
    async fn next(&mut self) -> Value {
        loop {
            let mut line = String::new();
            let n = timeout(PATIENCE, self.lines.read_line(&mut line))
                .await
                .expect("an event in time")
                .unwrap();
            assert!(n > 0, "the event stream ended");
            if let Some(json) = line.strip_prefix("data: ") {
                return serde_json::from_str(json.trim_end()).unwrap();
            }
        }
    }

    /// The next event called `name` whose field `field` is `value`, skipping others.
    async fn find(&mut self, name: &str, field: &str, value: &str) -> Value {
        loop {
            let event = self.next().await;
            if event["event"] == name && event[field] == value {
                return event;
            }
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A running buzzer shows a websocket client's message and its ack (with how long it took)
/// on `/events`, and counts them on `/metrics` in a form promtool accepts; the client counts
/// as a connection while it is connected.
#[tokio::test]
async fn a_buzzer_shows_and_counts_what_it_handles() {
    let (_node, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let mut events = Sse::open(addr, "").await;
    let mut client = ws::connect(&format!("ws://{addr}/porch")).await;
    assert_eq!(ws::ask(&mut client, "1").await, "buzz buzz buzz");

    let up = events.find("client_up", "channel", "/porch").await;
    let message = events.find("message", "text", "1").await;
    assert_eq!(message["channel"], "/porch");
    assert_eq!(message["node"], "buzzer");
    assert_eq!(message["client"], up["client"]);
    let ack = events.find("ack", "ack", "buzz buzz buzz").await;
    assert_eq!(ack["client"], up["client"]);
    assert!(ack["micros"].is_u64(), "{ack}");

    let text = metrics(addr, "").await;
    common::promtool_accepts(&text);
    for (series, value) in [
        ("arduino_messages_total", 1.0),
        ("arduino_acks_total{outcome=\"ok\"}", 1.0),
        ("arduino_acks_total{outcome=\"error\"}", 0.0),
        ("arduino_connections", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    client.close(None).await.unwrap();
    until_sample(addr, "arduino_connections", 0.0).await;
}

/// An iopin streaming to a buzzer shows each peer's ack with its time on `/events`, counts
/// them per peer with their times in a histogram on `/metrics`, and says whether the link is
/// up as it comes and goes.
#[tokio::test]
async fn an_iopin_shows_its_peer_acks_and_links() {
    let buzzer_port = free_port();
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"iopin\"\nport = 0\ntimeout = 0.5\nto = [\"buzzer\"]\n\
         [node.config]\nsequence = 3\nchance = 0.5\n\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer_port}\n"
    ));
    let mut buzzer = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    buzzer.listening();
    let (_iopin, addr) = Process::node(&["iopin", "--mesh", mesh.arg()], &[]);
    let mut events = Sse::open(addr, "").await;
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut client, "0").await, "acknowledged");

    events.find("message", "text", "0").await;
    let up = events.find("peer_up", "peer", "buzzer").await;
    assert!(up["url"].as_str().unwrap().ends_with("/datafeed"), "{up}");
    for _ in 0..3 {
        let ack = events.next().await;
        assert_eq!(ack["event"], "peer_ack", "{ack}");
        assert_eq!(ack["peer"], "buzzer");
        assert!(["buzz buzz buzz", "..."].contains(&ack["ack"].as_str().unwrap()));
        assert!(ack["micros"].as_u64().unwrap() > 0, "{ack}");
    }
    let ack = events.next().await;
    assert_eq!(
        (&ack["event"], &ack["ack"]),
        (&"ack".into(), &"acknowledged".into())
    );
    assert!(ack["micros"].as_u64().unwrap() > 0, "{ack}");

    let text = metrics(addr, "").await;
    common::promtool_accepts(&text);
    for (series, value) in [
        ("arduino_messages_total", 1.0),
        ("arduino_acks_total{outcome=\"ok\"}", 1.0),
        (
            "arduino_peer_messages_total{peer=\"buzzer\",outcome=\"ok\"}",
            3.0,
        ),
        (
            "arduino_peer_messages_total{peer=\"buzzer\",outcome=\"failed\"}",
            0.0,
        ),
        ("arduino_peer_ack_seconds_count{peer=\"buzzer\"}", 3.0),
        (
            "arduino_peer_ack_seconds_bucket{peer=\"buzzer\",le=\"+Inf\"}",
            3.0,
        ),
        ("arduino_peer_up{peer=\"buzzer\"}", 1.0),
        ("arduino_connections", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    assert!(sample(&text, "arduino_peer_ack_seconds_sum{peer=\"buzzer\"}").unwrap() > 0.0);

    // The buzzer goes away: the link is seen down (by the keepalive), and up again once the
    // buzzer is back and a message goes through.
    buzzer.signal("TERM");
    buzzer.wait();
    events.find("peer_down", "peer", "buzzer").await;
    until_sample(addr, "arduino_peer_up{peer=\"buzzer\"}", 0.0).await;
    let buzzer = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    buzzer.listening();
    assert_eq!(ws::ask(&mut client, "1").await, "acknowledged");
    until_sample(addr, "arduino_peer_up{peer=\"buzzer\"}", 1.0).await;
    until_sample(
        addr,
        "arduino_peer_messages_total{peer=\"buzzer\",outcome=\"ok\"}",
        6.0,
    )
    .await;
    drop(client);
    until_sample(addr, "arduino_connections", 0.0).await;
}

/// With a secret set, `/events` and `/metrics` answer 401 without it, and serve with it.
#[tokio::test]
async fn events_and_metrics_need_the_secret() {
    let secret = [("ARDUINO_SECRET", "s3cret")];
    let (_node, addr) = Process::node(&["buzzer", "--port", "0"], &secret);
    let bearer = "Authorization: Bearer s3cret\r\n";
    let mut events = Sse::open(addr, bearer).await;
    for path in ["/events", "/metrics"] {
        for headers in ["", "Authorization: Bearer wrong\r\n"] {
            let answer = answer(get(addr, path, headers).await).await;
            assert!(
                answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
                "{path} {headers:?}: {answer}"
            );
        }
    }
    for _ in 0..4 {
        let refused = events.next_named("client_refused").await;
        assert!(
            refused["reason"].as_str().unwrap().starts_with("HTTP 401"),
            "{refused}"
        );
    }
    let text = metrics(addr, bearer).await;
    assert_eq!(
        sample(&text, "arduino_clients_refused_total"),
        Some(4.0),
        "{text}"
    );
}

/// A websocket client on the channel `/events` (or `/metrics`) is a websocket client like any
/// other: its messages are acknowledged, and the feed shows them on that channel.
#[tokio::test]
async fn a_websocket_client_on_the_events_channel_gets_its_acks() {
    let (_node, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let mut events = Sse::open(addr, "").await;
    for channel in ["/events", "/metrics"] {
        let mut client = ws::connect(&format!("ws://{addr}{channel}")).await;
        assert_eq!(ws::ask(&mut client, "1").await, "buzz buzz buzz");
        assert_eq!(ws::ask(&mut client, "0").await, "...");
        let message = events.find("message", "channel", channel).await;
        assert_eq!(message["text"], "1");
    }
}

/// A listener that never reads `/events` does not slow the node: while another client
/// floods it with long messages, a third client's acks stay prompt, and the node's memory
/// stays bounded though the listener is owed far more than that.
#[tokio::test]
async fn a_listener_that_never_reads_never_slows_the_node() {
    let (node, addr) = Process::node(&["buzzer", "--port", "0", "-q"], &[]);
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut never_read = socket.connect(addr).await.unwrap();
    never_read
        .write_all(b"GET /events HTTP/1.1\r\nHost: buzzer\r\n\r\n")
        .await
        .unwrap();
    // Its head only, to know it is subscribed: nothing more is read from it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = timeout(PATIENCE, never_read.read_u8())
            .await
            .expect("a head in time");
        head.push(byte.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut bystander = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut bystander, "1").await, "buzz buzz buzz");
    let before = rss_kib(node.pid());

    // 30,000 messages of 2 KB: two events of about 1 KB each in the feed, 60 MB in all had
    // the listener been buffered for.
    const MESSAGES: usize = 30_000;
    const BATCH: usize = 100;
    let (mut flood_tx, mut flood_rx) = ws::connect(&format!("ws://{addr}/flood")).await.split();
    let flooding = tokio::spawn(async move {
        let text = "x".repeat(2000);
        for _ in 0..MESSAGES / BATCH {
            for _ in 0..BATCH {
                flood_tx.feed(Message::text(text.as_str())).await.unwrap();
            }
            flood_tx.flush().await.unwrap();
            for _ in 0..BATCH {
                match timeout(PATIENCE, flood_rx.next())
                    .await
                    .expect("an ack in time")
                {
                    Some(Ok(Message::Text(_))) => {}
                    other => panic!("the flooder got {other:?}"),
                }
            }
        }
    });
    let mut worst = Duration::ZERO;
    let mut asked = 0;
    while !flooding.is_finished() {
        let sent = Instant::now();
        assert_eq!(ws::ask(&mut bystander, "0").await, "...");
        worst = worst.max(sent.elapsed());
        asked += 1;
    }
    flooding.await.unwrap();
    let after = rss_kib(node.pid());
    println!(
        "bystander: worst ack {worst:?} over {asked} messages; node VmRSS {before} -> \
         {after} KiB while a listener read nothing of {MESSAGES} messages' events"
    );
    assert!(worst < Duration::from_secs(1), "an ack took {worst:?}");
    assert!(
        after < before + 24 * 1024,
        "VmRSS grew from {before} to {after} KiB"
    );
    drop(never_read);
}

/// A node started by the real foreman from the shipped Procfile answers `/events` and
/// `/metrics` on its mesh port: the iopin shows the clock's ticks and their acks, the buzzer
/// counts what it got, and a listener that never reads changes nothing.
#[tokio::test]
async fn nodes_under_foreman_are_watched_on_their_ports() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(format!("{root}/Procfile"), dir.path().join("Procfile")).unwrap();
    let shipped = std::fs::read_to_string(format!("{root}/mesh.toml")).unwrap();
    let (iopin, buzzer) = (free_port(), free_port());
    let mesh = shipped
        .replace("port = 8765", &format!("port = {iopin}"))
        .replace("port = 8766", &format!("port = {buzzer}"))
        .replace("tacks = 5 ", "tacks = 100000 ")
        .replace("delay = 1.0", "delay = 0.02");
    assert!(mesh.contains("tacks = 100000"), "{mesh}");
    std::fs::write(dir.path().join("mesh.toml"), mesh).unwrap();
    let foreman = Foreman(
        Command::new("foreman")
            .args(["start", "--no-timestamp", "-f", "Procfile", "-d"])
            .arg(dir.path())
            .current_dir(dir.path())
            .env("ARDUINO", common::binary())
            .env("ARDUINO_MESH", dir.path().join("mesh.toml"))
            .env("RUST_LOG", "arduino=warn")
            .env_remove("ARDUINO_SECRET")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("foreman is installed: apt-get install -y ruby-foreman"),
    );
    let iopin: SocketAddr = ([127, 0, 0, 1], iopin).into();
    let buzzer: SocketAddr = ([127, 0, 0, 1], buzzer).into();

    let watched = async {
        // Up when foreman has started it: poll until the port answers.
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(iopin).await.is_err() {
            assert!(Instant::now() < deadline, "the iopin never listened");
            sleep(Duration::from_millis(20)).await; // poll interval
        }
        let mut never_read = get(iopin, "/events", "").await;
        let mut events = Sse::open(iopin, "").await;
        let message = events.next_named("message").await;
        let tick = message["text"].as_str().unwrap().to_owned();
        let peer_ack = events.next_named("peer_ack").await;
        assert_eq!(peer_ack["peer"], "buzzer");
        let ack = events.next_named("ack").await;
        assert_eq!(ack["ack"], "acknowledged");
        // Many ticks later, with the other listener reading nothing, ticks still go through.
        let tick: u64 = tick.parse().unwrap();
        loop {
            let message = events.next_named("message").await;
            if message["text"].as_str().unwrap().parse::<u64>().unwrap() >= tick + 50 {
                break;
            }
        }
        let text = metrics(buzzer, "").await;
        common::promtool_accepts(&text);
        assert!(
            sample(&text, "arduino_messages_total").unwrap() >= 150.0,
            "{text}"
        );
        let text = metrics(iopin, "").await;
        assert_eq!(sample(&text, "arduino_peer_up{peer=\"buzzer\"}"), Some(1.0));
        assert_eq!(sample(&text, "arduino_connections"), Some(1.0), "{text}");
        let _ = never_read.flush().await;
    };
    let outcome = timeout(4 * PATIENCE, watched).await;
    drop(foreman);
    outcome.expect("the nodes were watched in time");
}

impl Sse {
    /// The next event called `name`, skipping others.
    async fn next_named(&mut self, name: &str) -> Value {
        loop {
            let event = self.next().await;
            if event["event"] == name {
                return event;
            }
        }
    }
}

/// foreman, stopped with the nodes it started however the test ends (a failed assert too).
struct Foreman(std::process::Child);

impl Drop for Foreman {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + PATIENCE;
        while matches!(self.0.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.0.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20)); // poll interval
        }
    }
}
