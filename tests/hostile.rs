//! Clients that misbehave on purpose, and values at the edges: none of them may cost the other
//! clients their answers, or make the node panic.

mod common;

use std::{
    io::{Read, Write},
    time::{Duration, Instant},
};

use arduino::{Ack, ConfigError, Context, Events, Input, Node, NodeSpec, Peer, Setup, Sketch};
use common::{MeshFile, Process, ws};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// How long the flooding test's node gives a client to take its acks.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client that floods a node and never reads its acks does not slow the node's answers to
/// a client that behaves, and is dropped with a reason once it stays unwritable too long.
#[tokio::test]
async fn a_client_that_never_reads_does_not_stall_the_others() {
    // Long acks fill the flooder's socket buffers after a few hundred messages.
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"buzzer\"\nport = 0\ntimeout = {}\n[node.config]\nsound = \"{}\"\n",
        WRITE_TIMEOUT.as_secs(),
        "b".repeat(4096)
    ));
    let (node, addr) = Process::node(&["buzzer", "--mesh", mesh.arg(), "-q"], &[]);
    let url = format!("ws://{addr}/datafeed");
    let mut bystander = ws::connect(&url).await;
    assert_eq!(ws::ask(&mut bystander, "0").await, "...");

    // The flooder reads nothing, and asks its kernel for the smallest receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut flooder, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .unwrap();
    let flooding = tokio::spawn(async move {
        loop {
            for _ in 0..100 {
                if flooder.feed(Message::text("1")).await.is_err() {
                    return;
                }
            }
            if flooder.flush().await.is_err() {
                return;
            }
        }
    });

    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut asked = 0;
    // Until the flooder is dropped, and some more.
    while node.count("client dropped") == 0 || asked < 50 {
        assert!(
            started.elapsed() < common::PATIENCE,
            "the flooder was never dropped; log:\n{}",
            node.log().join("\n")
        );
        let sent = Instant::now();
        assert_eq!(ws::ask(&mut bystander, "0").await, "...");
        worst = worst.max(sent.elapsed());
        asked += 1;
    }
    println!(
        "well-behaved client: worst ack latency {worst:?} over {asked} messages \
         while another client flooded (write timeout {WRITE_TIMEOUT:?})"
    );
    assert!(
        worst < WRITE_TIMEOUT / 4,
        "an ack took {worst:?} while another client flooded"
    );
    let dropped = node.wait_for("client dropped");
    assert!(dropped.contains("acknowledgements"), "{dropped}");
    flooding.abort();
}

/// Over its connection limit, a node answers HTTP 503 saying why, logs the refusal once, and
/// goes on serving the clients it has.
#[tokio::test]
async fn over_the_connection_limit_a_client_is_told_503() {
    let (node, addr) = Process::node(&["buzzer", "--port", "0", "--max-connections", "1"], &[]);
    let mut first = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut first, "1").await, "buzz buzz buzz");

    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(common::PATIENCE)).unwrap();
    tcp.write_all(
        b"GET /datafeed HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer:?}"
    );
    assert!(answer.ends_with("too many connections\n"), "{answer:?}");
    node.wait_for("refused a connection: too many connections");
    assert_eq!(node.count("too many connections"), 1);

    // A websocket client learns the status, and the first client never noticed.
    match tokio_tungstenite::connect_async(format!("ws://{addr}/datafeed")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    assert_eq!(ws::ask(&mut first, "0").await, "...");
    let (second, _) = node.wait_for_after("too many connections", 0);
    node.wait_for_after("too many connections", second + 1);
    assert_eq!(node.count("too many connections"), 2);
}

/// Answers `ok`.
struct Plain;

impl Sketch for Plain {
    fn setup(_setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        Ok(Plain)
    }

    async fn loop_once(&mut self, _ctx: &mut Context, _input: Input<'_>) -> Ack {
        Ack::from("ok")
    }
}

fn spec(timeout: Duration, max_connections: usize) -> NodeSpec {
    NodeSpec {
        name: "edge".to_owned(),
        // Never reached: only the keepalive looks at it.
        peers: vec![Peer {
            name: "nowhere".to_owned(),
            url: Some(format!("ws://127.0.0.1:{}", common::free_port())),
            secret: false,
        }],
        timeout,
        write_timeout: timeout,
        max_message: usize::MAX,
        max_connections,
        secret: None,
        tls: None,
        seed: 0,
        events: Events::new("edge"),
        directory: Default::default(),
    }
}

/// Serve `node` on a fresh port, ask it one message, stop it, and return how many it handled.
async fn serve_one(node: Node) -> u64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(arduino::run(node, Some(listener), async {
        let _ = stopped.await;
    }));
    let mut client = ws::connect(&format!("ws://{addr}/")).await;
    assert_eq!(ws::ask(&mut client, "x").await, "ok");
    stop.send(()).unwrap();
    let report = tokio::time::timeout(common::PATIENCE, running)
        .await
        .expect("the node stops in time")
        .expect("the node does not panic")
        .unwrap();
    report.handled
}

/// Durations and counts at the edges of their types (a public `NodeSpec` can hold anything)
/// neither panic nor stop the node from serving.
#[tokio::test]
async fn extreme_node_specs_do_not_panic() {
    use arduino::sketch::Ticks;
    for (timeout, max_connections, period) in [
        (Duration::MAX, usize::MAX, Duration::MAX),
        (Duration::MAX, usize::MAX >> 2, Duration::ZERO),
        (Duration::from_nanos(1), 1, Duration::from_nanos(1)),
        (Duration::ZERO, usize::MAX, Duration::from_secs(u64::MAX)),
    ] {
        let ticks = Some(Ticks {
            period,
            count: None,
        });
        let node = Node::new(Plain, ticks, spec(timeout, max_connections));
        assert!(serve_one(node).await >= 1, "{timeout:?} {period:?}");
    }
    // A node with no listener and a timer that ends runs to its end.
    let ticks = Some(Ticks {
        period: Duration::ZERO,
        count: Some(3),
    });
    let node = Node::new(Plain, ticks, spec(Duration::MAX, usize::MAX));
    let report = tokio::time::timeout(
        common::PATIENCE,
        arduino::run(node, None, std::future::pending::<()>()),
    )
    .await
    .expect("a timer of 3 ticks ends")
    .unwrap();
    assert_eq!(report.ticks, 3);
}
