//! Links between nodes of one `arduino up` carry no socket, and keep the contract exactly as
//! websocket links do: each scenario runs twice, once as one `arduino up` (in-process links)
//! and once as a process per node (websocket links over loopback), and must come out the same.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{MeshFile, Process, free_port, ws};
use futures_util::SinkExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

/// A program for `sketch = "exec"` that relays each message to its peer and acknowledges
/// `relayed ` and the peer's ack, or fails with the peer's error.
const RELAY: &str = r#"
import json, sys
for line in sys.stdin:
    request = json.loads(line)
    if request.get("type") == "message":
        print(json.dumps({"id": request["id"], "send": {"peer": 0, "text": request["text"]}}), flush=True)
        reply = json.loads(sys.stdin.readline())
        if "ack" in reply:
            print(json.dumps({"id": request["id"], "ack": "relayed " + reply["ack"]}), flush=True)
        else:
            print(json.dumps({"id": request["id"], "error": reply["error"]}), flush=True)
    elif "id" in request:
        print(json.dumps({"id": request["id"], "ack": "n/a"}), flush=True)
"#;

/// A program that acknowledges `echo ` and the message.
const ECHO: &str = r#"
import json, sys
for line in sys.stdin:
    request = json.loads(line)
    if request.get("type") == "message":
        print(json.dumps({"id": request["id"], "ack": "echo " + request["text"]}), flush=True)
    elif "id" in request:
        print(json.dumps({"id": request["id"], "ack": "n/a"}), flush=True)
"#;

/// How the nodes of a mesh run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Run {
    /// All in one `arduino up`: links are in process.
    Up,
    /// A process per node: links are websockets.
    Apart,
}

/// A mesh of `relay` (on a port) streaming to `peer`, an exec node running `program` with the
/// extra mesh lines `peer_keys`, running as `run` says.
struct Chain {
    processes: Vec<Process>,
    relay: SocketAddr,
    peer: SocketAddr,
    _mesh: MeshFile,
}

impl Chain {
    fn start(run: Run, relay_timeout: f64, program: &str, peer_keys: &str) -> Self {
        let (relay_port, peer_port) = (free_port(), free_port());
        let mesh = MeshFile::new("");
        let dir = mesh.dir.path();
        let script = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let relay_script = script("relay.py", RELAY);
        let peer_command = match program {
            "echo" => format!("[\"python3\", {:?}]", script("echo.py", ECHO)),
            other => other.to_owned(),
        };
        std::fs::write(
            &mesh.path,
            format!(
                "[[node]]\nname = \"relay\"\nsketch = \"exec\"\nport = {relay_port}\nto = [\"peer\"]\n\
                 timeout = {relay_timeout}\n[node.config]\ncommand = [\"python3\", {relay_script:?}]\n\n\
                 [[node]]\nname = \"peer\"\nsketch = \"exec\"\nport = {peer_port}\n{peer_keys}\n\
                 [node.config]\ncommand = {peer_command}\n"
            ),
        )
        .unwrap();
        let processes = match run {
            Run::Up => vec![Process::start(&["up", "--mesh", mesh.arg()], &[])],
            Run::Apart => ["peer", "relay"]
                .iter()
                .map(|name| Process::start(&["exec", "--name", name, "--mesh", mesh.arg()], &[]))
                .collect(),
        };
        for process in &processes {
            process.wait_for("listening on ws://");
        }
        if run == Run::Up {
            processes[0].wait_for("[ peer ] listening on ws://");
            processes[0].wait_for("[ relay ] listening on ws://");
        }
        Self {
            processes,
            relay: SocketAddr::from(([127, 0, 0, 1], relay_port)),
            peer: SocketAddr::from(([127, 0, 0, 1], peer_port)),
            _mesh: mesh,
        }
    }

    /// The lines every process logged.
    fn log(&self) -> Vec<String> {
        self.processes.iter().flat_map(Process::log).collect()
    }

    /// How the relay's link to its peer was carried, from the log.
    fn link(&self) -> &'static str {
        let log = self.log();
        let up = |how: &str| {
            log.iter()
                .any(|line| line.contains("link to peer up") && line.contains(how))
        };
        match (up("in-process:/"), up("ws://")) {
            (true, false) => "in process",
            (false, true) => "websocket",
            other => panic!("links {other:?}:\n{}", log.join("\n")),
        }
    }
}

/// The acks of `messages`, pipelined on one connection to `addr`.
async fn pipelined(addr: SocketAddr, messages: &[String]) -> Vec<String> {
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    for text in messages {
        client.feed(Message::text(text.as_str())).await.unwrap();
    }
    client.flush().await.unwrap();
    let mut acks = Vec::new();
    while acks.len() < messages.len() {
        match ws::next(&mut client).await {
            Some(Message::Text(ack)) => acks.push(ack.to_string()),
            other => panic!("expected an ack, got {other:?} after {acks:?}"),
        }
    }
    acks
}

/// The value of the sample `name` in the node's /metrics.
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Every message gets one ack, in order, through the link, and the peer's metrics count what
/// came in: the same either way.
#[tokio::test]
async fn acks_come_back_one_each_in_order_either_way() {
    let messages: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    let mut seen = Vec::new();
    for run in [Run::Up, Run::Apart] {
        let chain = Chain::start(run, 5.0, "echo", "");
        let acks = pipelined(chain.relay, &messages).await;
        let expected: Vec<String> = messages
            .iter()
            .map(|m| format!("relayed echo {m}"))
            .collect();
        assert_eq!(acks, expected, "{run:?}");
        assert_eq!(
            metric(chain.peer, "arduino_messages_total").await,
            50.0,
            "{run:?}"
        );
        assert_eq!(
            metric(
                chain.relay,
                "arduino_peer_messages_total{peer=\"peer\",outcome=\"ok\"}"
            )
            .await,
            50.0,
            "{run:?}"
        );
        seen.push(chain.link());
    }
    assert_eq!(seen, ["in process", "websocket"]);
}

/// A peer that does not acknowledge within the relay's timeout fails the message with the same
/// words either way.
#[tokio::test]
async fn a_peer_past_the_deadline_fails_the_message_the_same_either_way() {
    let mut acks = Vec::new();
    for run in [Run::Up, Run::Apart] {
        // The peer's own timeout is long: the relay's link gives up first.
        let chain = Chain::start(run, 0.5, "[\"sleep\", \"1000\"]", "timeout = 60");
        let ack = pipelined(chain.relay, &["x".to_owned()]).await;
        acks.push(ack[0].clone());
        chain.link();
    }
    assert_eq!(
        acks, ["error: peer did not acknowledge within 0.5s"; 2],
        "in process, then websocket"
    );
}

/// A message over the peer's `max_message` closes the link with 1009, and the relay reports
/// it in the same words either way: a node's limits hold whatever carries its messages.
#[tokio::test]
async fn the_peers_limits_hold_and_failures_are_reported_the_same_either_way() {
    let mut acks = Vec::new();
    for run in [Run::Up, Run::Apart] {
        let chain = Chain::start(run, 5.0, "echo", "max_message = 64");
        let long = "x".repeat(100);
        let ack = pipelined(chain.relay, &["short".to_owned(), long, "again".to_owned()]).await;
        chain.link();
        acks.push(ack);
    }
    assert_eq!(acks[0], acks[1], "in process, then websocket");
    assert_eq!(acks[0][0], "relayed echo short");
    assert!(
        acks[0][1].starts_with("error: peer closed the link before acknowledging")
            && acks[0][1].contains("1009"),
        "{:?}",
        acks[0]
    );
    // The link is opened again for the next message.
    assert_eq!(acks[0][2], "relayed echo again");
}

/// A relay busy with a peer that hangs, with a client's messages queued behind, stops within
/// about a second of SIGTERM either way: the rest fail, the client gets 1001.
#[tokio::test]
async fn a_busy_relay_stops_within_a_second_either_way() {
    for run in [Run::Up, Run::Apart] {
        let mut chain = Chain::start(run, 30.0, "[\"sleep\", \"1000\"]", "timeout = 60");
        let mut client = ws::connect(&format!("ws://{}/datafeed", chain.relay)).await;
        for i in 0..100 {
            client.feed(Message::text(i.to_string())).await.unwrap();
        }
        client.flush().await.unwrap();
        let deadline = Instant::now() + common::PATIENCE;
        while !chain
            .log()
            .iter()
            .any(|line| line.contains("link to peer up"))
        {
            assert!(Instant::now() < deadline, "{run:?}: the relay never linked");
            tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
        }
        let relay = chain.processes.last_mut().unwrap();
        let asked = Instant::now();
        relay.signal("TERM");
        let status = relay.wait();
        let took = asked.elapsed();
        assert!(status.success(), "{run:?}: exit status {status:?}");
        assert!(
            took < Duration::from_millis(1500),
            "{run:?}: took {took:?}; log:\n{}",
            relay.log().join("\n")
        );
        loop {
            match ws::next(&mut client).await {
                Some(Message::Text(ack)) => assert!(ack.starts_with("error: "), "{ack}"),
                Some(Message::Close(Some(frame))) => {
                    assert_eq!(frame.code, CloseCode::Away, "{run:?}");
                    break;
                }
                other => panic!("{run:?}: expected acks then 1001, got {other:?}"),
            }
        }
    }
}
