//! `arduino view` and `arduino up --view` as a user runs them: the page of the mesh file's
//! nodes, fed live by the nodes' own `/events`, and a stop within a second.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{MeshFile, PATIENCE, Process, arduino, free_port};

/// `GET path` from the view at `addr`: the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Poll `/mesh.json` until every node named has the state wanted.
fn wait_for_states(addr: &str, wanted: &[(&str, &str)]) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, body) = get(addr, "/mesh.json");
        let mesh: serde_json::Value = serde_json::from_str(&body).unwrap();
        let state = |name: &str| {
            mesh["nodes"]
                .as_array()
                .and_then(|nodes| nodes.iter().find(|node| node["name"] == name))
                .map(|node| node["state"].clone())
        };
        if wanted
            .iter()
            .all(|(name, state_wanted)| state(name).is_some_and(|s| s == *state_wanted))
        {
            return mesh;
        }
        assert!(
            Instant::now() < deadline,
            "states never became {wanted:?}: {mesh}"
        );
        std::thread::sleep(Duration::from_millis(20)); // polling the view's state
    }
}

/// The view's `/events`, one JSON object at a time.
struct Feed(BufReader<TcpStream>);

impl Feed {
    fn open(addr: &str) -> Self {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(stream, "GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut feed = Self(BufReader::new(stream));
        // The view subscribes before it answers: once the answer's head is in, nothing sent
        // from now on is missed.
        let mut status = String::new();
        feed.0.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        feed
    }

    fn until(&mut self, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "the awaited event never came");
            let mut line = String::new();
            assert!(self.0.read_line(&mut line).unwrap() > 0, "the feed ended");
            let Some(json) = line.trim_end().strip_prefix("data: ") else {
                continue;
            };
            let event: serde_json::Value = serde_json::from_str(json).unwrap();
            if wanted(&event) {
                return event;
            }
        }
    }
}

/// `arduino up --view ADDR` serves the page beside its nodes: they show as up, a message sent
/// with `arduino send` comes through the view's feed from the nodes' own `/events`, and the
/// whole of it stops within a second of SIGTERM.
#[test]
fn up_with_a_view_shows_the_mesh_live() {
    let (iopin, buzzer, view) = (free_port(), free_port(), free_port());
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"iopin\"\nport = {iopin}\nto = [\"buzzer\"]\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer}\n"
    ));
    let addr = format!("127.0.0.1:{view}");
    let mut up = Process::start(&["up", "--mesh", mesh.arg(), "--view", &addr], &[]);
    up.wait_for(&format!("view at http://{addr}/"));
    let (status, page) = get(&addr, "/");
    assert!(status.contains("200"), "{status}");
    assert!(page.contains("<svg") || page.contains("page.js"), "{page}");
    wait_for_states(&addr, &[("iopin", "up"), ("buzzer", "up")]);

    let mut feed = Feed::open(&addr);
    let sent = arduino(&["send", "--mesh", mesh.arg(), "iopin", "7"], &[]);
    assert!(sent.ok, "{}", sent.stderr);
    // The two nodes' events come through the view in either order.
    let (mut message, mut acked) = (None, false);
    while message.is_none() || !acked {
        let event = feed.until(|e| {
            (e["node"] == "iopin" && e["event"] == "message")
                || (e["node"] == "buzzer" && e["event"] == "ack")
        });
        match event["node"].as_str() {
            Some("iopin") => message = Some(event),
            _ => acked = true,
        }
    }
    assert_eq!(message.unwrap()["text"], "7");

    let asked = Instant::now();
    up.signal("TERM");
    let status = up.wait();
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "{:?}",
        asked.elapsed()
    );
}

/// Under `arduino up --view`, a node without a port is followed in the process itself: it shows
/// as up, and its events (naming the in-process peer that sent the message) reach the page.
#[test]
fn up_with_a_view_shows_nodes_without_a_port() {
    let (iopin, view) = (free_port(), free_port());
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"iopin\"\nport = {iopin}\nto = [\"buzzer\"]\n\
         [[node]]\nname = \"buzzer\"\n"
    ));
    let addr = format!("127.0.0.1:{view}");
    let mut up = Process::start(&["up", "--mesh", mesh.arg(), "--view", &addr], &[]);
    up.wait_for(&format!("view at http://{addr}/"));
    wait_for_states(&addr, &[("iopin", "up"), ("buzzer", "up")]);
    let mut feed = Feed::open(&addr);
    let sent = arduino(&["send", "--mesh", mesh.arg(), "iopin", "7"], &[]);
    assert!(sent.ok, "{}", sent.stderr);
    let message = feed.until(|e| e["node"] == "buzzer" && e["event"] == "message");
    assert_eq!(message["client"], "iopin", "{message}");
    feed.until(|e| e["node"] == "buzzer" && e["event"] == "ack");
    up.signal("TERM");
    assert!(up.wait().success());
}

/// `arduino view` follows nodes started elsewhere; one killed turns down. A view whose port is
/// taken says so in one line.
#[test]
fn view_follows_nodes_of_other_processes() {
    let (mut buzzer, buzzer_addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"buzzer\"\nport = {}\n",
        buzzer_addr.port()
    ));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut view = Process::start(&["view", "--mesh", mesh.arg(), &addr], &[]);
    view.wait_for(&format!("view at http://{addr}/"));
    wait_for_states(&addr, &[("buzzer", "up")]);
    buzzer.signal("KILL");
    buzzer.wait();
    wait_for_states(&addr, &[("buzzer", "down")]);

    let taken = arduino(&["view", "--mesh", mesh.arg(), &addr], &[]);
    assert!(!taken.ok);
    assert_eq!(taken.stderr.trim().lines().count(), 1, "{}", taken.stderr);
    assert!(
        taken
            .stderr
            .contains(&format!("the view cannot listen on {addr}")),
        "{}",
        taken.stderr
    );

    view.signal("TERM");
    assert!(view.wait().success());
}

/// With a view, `up` whose clocks are done keeps the page (and the nodes) up until asked to
/// stop: someone may be looking at it.
#[test]
fn up_with_a_view_stays_after_its_clocks() {
    let buzzer = free_port();
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"clock\"\nto = [\"buzzer\"]\n[node.config]\ntacks = 1\ndelay = 0\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer}\n"
    ));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut up = Process::start(&["up", "--mesh", mesh.arg(), "--view", &addr], &[]);
    up.wait_for("the clocks are done; the view stays up until Ctrl-C");
    wait_for_states(&addr, &[("buzzer", "up")]);
    up.signal("INT");
    assert!(up.wait().success());
    up.wait_for("[ clock ] 1 tick: 1 delivered, 0 failed");
}
