//! `arduino view`: the view server serves its page, describes the mesh, and multiplexes the
//! nodes' event feeds into one; a real headless Chromium shows it over real nodes. Where a
//! test needs to script the events exactly, nodes are played by fake SSE servers, which answer
//! `GET /events` as a node does.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

mod common;

use arduino::{Mesh, view};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    sync::broadcast,
    task::JoinHandle,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(15);

/// A stand-in for a node's `GET /events`: answers with the node's SSE head (401 without the
/// secret it expects), then writes every line handed to [`FakeNode::emit`].
struct FakeNode {
    addr: SocketAddr,
    name: String,
    lines_tx: broadcast::Sender<String>,
    stop: CancellationToken,
}

impl FakeNode {
    async fn start(name: &str, secret: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (lines_tx, _) = broadcast::channel::<String>(1 << 16);
        let stop = CancellationToken::new();
        let (tx, token) = (lines_tx.clone(), stop.clone());
        let wanted = secret.map(|s| format!("authorization: bearer {}", s.to_lowercase()));
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap().0,
                };
                let (lines_rx, token, wanted) = (tx.subscribe(), token.clone(), wanted.clone());
                tokio::spawn(serve_fake(stream, lines_rx, token, wanted));
            }
        });
        Self {
            addr,
            name: name.to_owned(),
            lines_tx,
            stop,
        }
    }

    /// Send the event `event` with `fields` (JSON object members, without braces) to every
    /// listener; how many listen.
    fn emit(&self, event: &str, fields: &str) -> usize {
        let comma = if fields.is_empty() { "" } else { "," };
        let line = format!(
            r#"{{"time":"{}","node":"{}","event":"{event}"{comma}{fields}}}"#,
            now(),
            self.name
        );
        self.lines_tx.send(line).unwrap_or(0)
    }

    /// Go away, as a node that was killed: the listener and every feed close.
    fn kill(&self) {
        self.stop.cancel();
    }
}

async fn serve_fake(
    mut stream: TcpStream,
    mut lines_rx: broadcast::Receiver<String>,
    stop: CancellationToken,
    wanted: Option<String>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    if let Some(wanted) = wanted
        && !head.contains(&wanted)
    {
        let _ = stream
            .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    }
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 1000\n\n")
        .await;
    let mut batch = String::new();
    loop {
        let line = tokio::select! {
            _ = stop.cancelled() => return,
            line = lines_rx.recv() => line,
        };
        let Ok(line) = line else { continue };
        batch.clear();
        batch.push_str("data: ");
        batch.push_str(&line);
        batch.push_str("\n\n");
        while let Ok(line) = lines_rx.try_recv() {
            batch.push_str("data: ");
            batch.push_str(&line);
            batch.push_str("\n\n");
        }
        if stream.write_all(batch.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Now as RFC 3339 in UTC with milliseconds, as nodes write it.
fn now() -> String {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let secs = since.as_secs();
    let z = secs / 86_400 + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// The demo mesh's shape, with the fake nodes' ports.
fn mesh_text(iopin: &FakeNode, buzzer: &FakeNode, secret: Option<&str>) -> String {
    let secret = secret.map_or(String::new(), |s| format!("secret = \"{s}\"\n"));
    format!(
        "{secret}[[node]]\nname = \"clock\"\nto = [\"iopin\"]\n\n\
         [[node]]\nname = \"iopin\"\nport = {}\nto = [\"buzzer\"]\n\n\
         [[node]]\nname = \"buzzer\"\nport = {}\n",
        iopin.addr.port(),
        buzzer.addr.port()
    )
}

/// A running view server.
struct View {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl View {
    async fn start(mesh: &str, secret: Option<&str>) -> Self {
        Self::start_with(mesh, secret, view::ViewOptions::default()).await
    }

    async fn start_with(mesh: &str, secret: Option<&str>, options: view::ViewOptions) -> Self {
        let mesh = Mesh::parse(mesh, "mesh.toml").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let (token, secret) = (stop.clone(), secret.map(str::to_owned));
        let task = tokio::spawn(async move {
            view::serve_with(listener, &mesh, secret.as_deref(), options, token).await
        });
        Self { addr, stop, task }
    }

    async fn finish(self) {
        self.stop.cancel();
        timeout(PATIENCE, self.task)
            .await
            .expect("the view server stops when asked")
            .unwrap()
            .unwrap();
    }
}

/// `GET path` with `Host: host`: the status line and the body.
async fn get_as(addr: SocketAddr, path: &str, host: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    timeout(PATIENCE, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    get_as(addr, path, &addr.to_string()).await
}

/// The view's `/events`, read one JSON object at a time.
struct Events(BufReader<TcpStream>);

impl Events {
    async fn open(addr: SocketAddr) -> Self {
        Self::open_with(addr, None).await
    }

    /// With a receive buffer of `buffer` bytes, for a browser that reads slowly.
    async fn open_with(addr: SocketAddr, buffer: Option<u32>) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(buffer) = buffer {
            socket.set_recv_buffer_size(buffer).unwrap();
        }
        let mut stream = socket.connect(addr).await.unwrap();
        let request = format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut events = Self(BufReader::new(stream));
        let mut status = String::new();
        events.0.read_line(&mut status).await.unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        events
    }

    /// The next event for which `wanted` holds, within the patience.
    async fn until(&mut self, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        timeout(PATIENCE, async {
            loop {
                let mut line = String::new();
                assert!(self.0.read_line(&mut line).await.unwrap() > 0, "feed ended");
                let Some(json) = line.trim_end().strip_prefix("data: ") else {
                    continue;
                };
                let event: serde_json::Value = serde_json::from_str(json).unwrap();
                if wanted(&event) {
                    return event;
                }
            }
        })
        .await
        .expect("the awaited event came in time")
    }
}

fn is(event: &serde_json::Value, node: &str, name: &str) -> bool {
    event["node"] == node && event["event"] == name
}

/// The page and its script and style are served from the binary; other paths are not found,
/// and a request by a host name that is no address (DNS rebinding) is refused.
#[tokio::test]
async fn the_page_is_served_from_the_binary() {
    let view = View::start("", None).await;
    let (status, page) = get(view.addr, "/").await;
    assert!(status.contains("200"), "{status}");
    assert!(page.contains("<svg") && page.contains("/page.js"), "{page}");
    let (status, script) = get(view.addr, "/page.js").await;
    assert!(status.contains("200") && script.contains("EventSource"));
    let (status, style) = get(view.addr, "/page.css").await;
    assert!(status.contains("200") && style.contains(".node"));
    let (status, _) = get(view.addr, "/nothing").await;
    assert!(status.contains("404"), "{status}");
    let (status, _) = get_as(view.addr, "/mesh.json", "evil.example:8080").await;
    assert!(status.contains("403"), "{status}");
    let (status, _) = get_as(view.addr, "/", "localhost").await;
    assert!(status.contains("200"), "{status}");
    view.finish().await;
}

/// `/mesh.json` has the mesh file's nodes, sketches, addresses and links, and each node's state
/// as the view sees its feed: up once followed, no port for a clock.
#[tokio::test]
async fn mesh_json_matches_the_mesh_file() {
    let iopin = FakeNode::start("iopin", None).await;
    let buzzer = FakeNode::start("buzzer", None).await;
    let view = View::start(&mesh_text(&iopin, &buzzer, None), None).await;
    let mut events = Events::open(view.addr).await;
    events.until(|e| is(e, "iopin", "node_up")).await;
    events.until(|e| is(e, "buzzer", "node_up")).await;
    let (status, body) = get(view.addr, "/mesh.json").await;
    assert!(status.contains("200"), "{status}");
    let mesh: serde_json::Value = serde_json::from_str(&body).unwrap();
    let nodes = mesh["nodes"].as_array().unwrap();
    let names: Vec<_> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["clock", "iopin", "buzzer"]);
    assert_eq!(nodes[0]["sketch"], "clock");
    assert_eq!(nodes[0]["port"], serde_json::Value::Null);
    assert_eq!(nodes[0]["state"], "unwatched");
    assert_eq!(nodes[1]["port"], iopin.addr.port());
    assert_eq!(nodes[1]["host"], "127.0.0.1");
    assert_eq!(nodes[1]["state"], "up");
    assert_eq!(nodes[2]["state"], "up");
    let links: Vec<_> = mesh["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["from"].as_str().unwrap(), l["to"].as_str().unwrap()))
        .collect();
    assert_eq!(links, [("clock", "iopin"), ("iopin", "buzzer")]);
    assert!(!body.contains("secret"));
    view.finish().await;
}

/// `/events` carries both nodes' events in one stream, following them with the mesh's secret;
/// a node that goes away shows as down, in the stream and in `/mesh.json`, and as up again
/// when it is back.
#[tokio::test]
async fn events_of_two_nodes_come_in_one_stream_and_a_lost_node_is_down() {
    let secret = Some("s3cret");
    let iopin = FakeNode::start("iopin", secret).await;
    let buzzer = FakeNode::start("buzzer", secret).await;
    let view = View::start(&mesh_text(&iopin, &buzzer, secret), secret).await;
    let mut events = Events::open(view.addr).await;
    events.until(|e| is(e, "iopin", "node_up")).await;
    events.until(|e| is(e, "buzzer", "node_up")).await;
    iopin.emit(
        "message",
        r#""client":"127.0.0.1:1","channel":"/datafeed","text":"0""#,
    );
    buzzer.emit("ack", r#""client":"127.0.0.1:2","ack":"buzz buzz buzz""#);
    // The two nodes' events come in either order.
    let (mut message, mut ack) = (None, None);
    while message.is_none() || ack.is_none() {
        let event = events
            .until(|e| is(e, "iopin", "message") || is(e, "buzzer", "ack"))
            .await;
        if event["event"] == "message" {
            message = Some(event);
        } else {
            ack = Some(event);
        }
    }
    assert_eq!(message.unwrap()["text"], "0");
    assert_eq!(ack.unwrap()["ack"], "buzz buzz buzz");

    iopin.kill();
    let down = events.until(|e| is(e, "iopin", "node_down")).await;
    assert!(down["reason"].is_string(), "{down}");
    let (_, body) = get(view.addr, "/mesh.json").await;
    let mesh: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(mesh["nodes"][1]["state"], "down");
    assert_eq!(mesh["nodes"][2]["state"], "up");
    // The other node's events still come.
    buzzer.emit(
        "message",
        r#""client":"127.0.0.1:2","channel":"/datafeed","text":"1""#,
    );
    events.until(|e| is(e, "buzzer", "message")).await;
    view.finish().await;
}

/// A browser that reads too slowly misses events and is told how many, while the view goes
/// on serving it what comes next.
#[tokio::test]
async fn a_browser_that_falls_behind_is_told_what_it_missed() {
    let iopin = FakeNode::start("iopin", None).await;
    let buzzer = FakeNode::start("buzzer", None).await;
    let options = view::ViewOptions {
        backlog: 16,
        ..view::ViewOptions::default()
    };
    let view = View::start_with(&mesh_text(&iopin, &buzzer, None), None, options).await;
    let mut events = Events::open_with(view.addr, Some(4096)).await;
    events.until(|e| is(e, "iopin", "node_up")).await;
    events.until(|e| is(e, "buzzer", "node_up")).await;
    // Far more than the backlog, the view's socket and the browser's buffer hold together.
    let text = "x".repeat(200);
    for n in 0..40_000 {
        iopin.emit(
            "message",
            &format!(r#""client":"127.0.0.1:1","text":"{n} {text}""#),
        );
    }
    let lagged = events.until(|e| e["event"] == "lagged").await;
    assert!(lagged["missed"].as_u64().unwrap() > 0, "{lagged}");
    iopin.emit("stopping", "");
    events.until(|e| is(e, "iopin", "stopping")).await;
    view.finish().await;
}

/// A node that refuses the view (another secret) is shown down with the reason, not up.
#[tokio::test]
async fn a_node_that_refuses_the_secret_is_down_with_the_reason() {
    let iopin = FakeNode::start("iopin", Some("right")).await;
    let buzzer = FakeNode::start("buzzer", Some("right")).await;
    let view = View::start(&mesh_text(&iopin, &buzzer, Some("wrong")), Some("wrong")).await;
    let mut events = Events::open(view.addr).await;
    let down = events.until(|e| is(e, "iopin", "node_down")).await;
    assert!(down["reason"].as_str().unwrap().contains("401"), "{down}");
    view.finish().await;
}

// ---- the page in a real browser ------------------------------------------------------------

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Whether the browser tests can run here. Missing `chromium`, `node` or the npm packages
/// skips them, unless `ARDUINO_BROWSER_TESTS=required` (as CI sets), which makes it a failure.
fn browser_ready() -> bool {
    let chromium = Path::new("/usr/bin/chromium").exists();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    let packages = browser_dir().join("node_modules/playwright-core").exists();
    if chromium && node && packages {
        return true;
    }
    let missing = [
        (!chromium).then_some("/usr/bin/chromium (apt-get install -y chromium)"),
        (!node).then_some("node"),
        (!packages).then_some("tests/browser/node_modules (cd tests/browser && npm ci)"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    if std::env::var("ARDUINO_BROWSER_TESTS").as_deref() == Ok("required") {
        panic!("browser tests are required, but these are missing: {missing}");
    }
    println!(
        "skipped: the browser test needs {missing}; set ARDUINO_BROWSER_TESTS=required to fail instead"
    );
    false
}

/// The browser script, started with `args`.
struct Script {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Script {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new("node")
            .arg(browser_dir().join("view.mjs"))
            .args(args)
            .current_dir(browser_dir())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    /// The script's next line; it must be `expected`.
    async fn expect(&mut self, expected: &str) {
        let line = timeout(PATIENCE * 2, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser said nothing while waiting for {expected}"))
            .unwrap();
        assert_eq!(line.as_deref(), Some(expected));
    }

    async fn next(&mut self) -> String {
        timeout(PATIENCE * 3, self.lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_default()
    }

    async fn finish(mut self) {
        let status = timeout(PATIENCE, self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "the browser script failed: {status}");
    }
}

/// In a real Chromium, `arduino view` over real nodes: the page draws every node of the mesh;
/// a message sent with `arduino send` to the buzzer shows in the sidebar and moves the
/// buzzer's counter; a node that is killed turns "down".
#[tokio::test]
async fn a_browser_shows_the_mesh_its_traffic_and_a_node_going_down() {
    if !browser_ready() {
        return;
    }
    let (iopin_port, buzzer_port) = (common::free_port(), common::free_port());
    let mesh = common::MeshFile::new(&format!(
        "[[node]]\nname = \"clock\"\nto = [\"iopin\"]\n\
         [[node]]\nname = \"iopin\"\nport = {iopin_port}\nto = [\"buzzer\"]\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer_port}\n"
    ));
    let (mut iopin, _) = common::Process::node(&["iopin", "--mesh", mesh.arg()], &[]);
    let (_buzzer, _) = common::Process::node(&["buzzer", "--mesh", mesh.arg()], &[]);
    let addr = format!("127.0.0.1:{}", common::free_port());
    let view = common::Process::start(&["view", "--mesh", mesh.arg(), &addr], &[]);
    view.wait_for(&format!("view at http://{addr}/"));
    let url = format!("http://{addr}/");
    let mut script = Script::start(&["check", &url, "clock,iopin,buzzer"]);
    script.expect("drawn").await;
    let sent = common::arduino(&["send", "--mesh", mesh.arg(), "buzzer", "1"], &[]);
    assert!(sent.ok, "{}", sent.stderr);
    script.expect("counted").await;
    iopin.signal("KILL");
    iopin.wait();
    script.expect("down").await;
    script.finish().await;
}

/// Not a pass/fail test: how the page keeps up with 10,000 events a second (frame times and
/// the lag of events behind the nodes' clocks), printed. Run with
/// `cargo test --test view -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, run by hand"]
async fn measure_the_page_at_10000_events_a_second() {
    if !browser_ready() {
        return;
    }
    let rate: u64 = std::env::var("RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10_000);
    let iopin = Arc::new(FakeNode::start("iopin", None).await);
    let buzzer = Arc::new(FakeNode::start("buzzer", None).await);
    let view = View::start(&mesh_text(&iopin, &buzzer, None), None).await;
    let stop = CancellationToken::new();
    let emitting = tokio::spawn(emit_at(rate, iopin.clone(), buzzer.clone(), stop.clone()));
    let url = format!("http://{}/", view.addr);
    let mut script = Script::start(&["measure", &url, "10"]);
    let result = script.next().await;
    println!("at {rate} events/s: {result}");
    stop.cancel();
    emitting.await.unwrap();
    script.finish().await;
    view.finish().await;
}

/// Emit `rate` events a second, spread over both nodes, in slices of 10 ms: a message to
/// iopin, its ack, and the bits iopin streams to buzzer with their acks.
async fn emit_at(rate: u64, iopin: Arc<FakeNode>, buzzer: Arc<FakeNode>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = rate / 100;
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut sent = 0;
        while sent < per_tick {
            n += 1;
            let bit = n.is_multiple_of(3);
            iopin.emit(
                "message",
                &format!(r#""client":"127.0.0.1:1","channel":"/datafeed","text":"{n}""#),
            );
            buzzer.emit(
                "message",
                &format!(
                    r#""client":"127.0.0.1:2","channel":"/datafeed","text":"{}""#,
                    u8::from(bit)
                ),
            );
            buzzer.emit(
                "ack",
                &format!(
                    r#""client":"127.0.0.1:2","ack":"{}""#,
                    if bit { "buzz buzz buzz" } else { "..." }
                ),
            );
            iopin.emit("ack", r#""client":"127.0.0.1:1","ack":"acknowledged""#);
            sent += 4;
        }
    }
}

/// Not a test: writes the page's picture of the demo mesh to `$SCREENSHOT` (docs/view.png, by
/// scripts/screenshot.sh), with fake nodes playing the demo's traffic.
#[tokio::test]
#[ignore = "makes docs/view.png, run by scripts/screenshot.sh"]
async fn screenshot_of_the_demo_mesh() {
    let Ok(file) = std::env::var("SCREENSHOT") else {
        println!("set SCREENSHOT=FILE.png");
        return;
    };
    assert!(browser_ready(), "the screenshot needs the browser");
    // The demo mesh, live: `arduino up --view`, its clock ticking fast enough to see.
    let (iopin, buzzer) = (common::free_port(), common::free_port());
    let mesh = common::MeshFile::new(&format!(
        "[[node]]\nname = \"clock\"\nto = [\"iopin\"]\n[node.config]\ntacks = 100000\ndelay = 0.1\n\
         [[node]]\nname = \"iopin\"\nport = {iopin}\nto = [\"buzzer\"]\n[node.config]\nchance = 0.6\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer}\n"
    ));
    let addr = format!("127.0.0.1:{}", common::free_port());
    let up = common::Process::start(&["up", "--mesh", mesh.arg(), "--view", &addr, "-q"], &[]);
    up.wait_for(&format!("view at http://{addr}/"));
    let url = format!("http://{addr}/");
    let mut script = Script::start(&["shot", &url, &file, "4000"]);
    script.expect(&format!("wrote {file}")).await;
    script.finish().await;
}
