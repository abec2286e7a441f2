//! Stopping a node the way foreman and a terminal do: SIGTERM and SIGINT.

mod common;

use std::time::{Duration, Instant};

use common::{Process, ws};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

async fn stops_on(signal: &str) {
    let (mut node, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut client, "1").await, "buzz buzz buzz");

    let asked = Instant::now();
    node.signal(signal);
    match ws::next(&mut client).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame with 1001, got {other:?}"),
    }
    let status = node.wait();
    assert!(status.success(), "exit status {status:?}");
    // A bound on a hang, not a benchmark: the node has nothing in hand to finish.
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
    node.wait_for("[ buzzer ] stopping");
    node.wait_for("[ buzzer ] handled 1 message");
}

/// SIGTERM (what foreman sends): close frames with 1001 to every client, exit 0, promptly.
#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    stops_on("TERM").await;
}

/// SIGINT (Ctrl-C): the same.
#[tokio::test]
async fn sigint_closes_clients_with_1001_and_exits_0() {
    stops_on("INT").await;
}

/// A clock stopped mid-run exits 0: it was asked to stop, nothing failed.
#[test]
fn a_clock_asked_to_stop_exits_0() {
    let (_buzzer, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let port = addr.port().to_string();
    let mut clock = Process::start(&["clock", "--port", &port, "-t", "1000", "-d", "0.01"], &[]);
    clock.wait_for("< buzz buzz buzz");
    clock.signal("TERM");
    assert!(clock.wait().success(), "{:#?}", clock.log());
    clock.wait_for(" failed");
    assert_eq!(clock.count(" 0 failed"), 1, "{:#?}", clock.log());
}

/// A clock stopped while its tick waits on a peer that hangs: the tick is abandoned (not
/// failed), the clock still exits 0 promptly, and its summary says what was abandoned.
#[test]
fn a_clock_stopped_mid_tick_abandons_it_and_exits_0() {
    let (buzzer, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    buzzer.signal("STOP");
    let port = addr.port().to_string();
    let mut clock = Process::start(
        &["clock", "--port", &port, "-t", "3", "--timeout", "30"],
        &[],
    );
    clock.wait_for("> 0");
    let asked = Instant::now();
    clock.signal("TERM");
    assert!(clock.wait().success(), "{:#?}", clock.log());
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
    clock.wait_for("tick 0 abandoned: the node is stopping");
    clock.wait_for("sent 1 to peers: 0 acknowledged, 0 failed, 1 abandoned as the node stopped");
    buzzer.signal("CONT");
}

/// Pipeline `count` messages into the relay at `addr`, wait until it is busy with the first
/// (its peer is down), stop `node` with SIGTERM, and check that it exits 0 within about a
/// second, failing the rest and closing the client with 1001.
async fn stops_promptly_while_relaying(mut node: Process, addr: std::net::SocketAddr) {
    use futures_util::SinkExt;
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    for i in 0..200 {
        client.feed(Message::text(i.to_string())).await.unwrap();
    }
    client.flush().await.unwrap();
    node.wait_for("not up yet");

    let asked = Instant::now();
    node.signal("TERM");
    let status = node.wait();
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status:?}");
    println!("stopped in {took:?} with 199 messages queued behind one in hand");
    assert!(
        took < Duration::from_millis(1500),
        "took {took:?}; log:\n{}",
        node.log().join("\n")
    );
    // Whatever acks could be written are failures, then the close frame.
    loop {
        match ws::next(&mut client).await {
            Some(Message::Text(ack)) => {
                assert!(ack.starts_with("error: "), "{ack}")
            }
            Some(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::Away);
                break;
            }
            other => panic!("expected acks then a close frame with 1001, got {other:?}"),
        }
    }
}

/// A relay whose peer is down, with a client's pipelined messages queued, stops within about a
/// second of SIGTERM: only the message in hand gets a grace, the rest fail at once.
#[tokio::test]
async fn a_busy_relay_stops_within_a_second() {
    let mesh = common::MeshFile::new(&format!(
        "[[node]]\nname = \"iopin\"\nport = 0\nto = [\"ws://127.0.0.1:{}\"]\n",
        common::free_port()
    ));
    let (node, addr) = Process::node(&["iopin", "--mesh", mesh.arg()], &[]);
    stops_promptly_while_relaying(node, addr).await;
}

/// The same under `arduino up`.
#[tokio::test]
async fn a_busy_relay_under_up_stops_within_a_second() {
    let mesh = common::MeshFile::new(&format!(
        "[[node]]\nname = \"iopin\"\nport = 0\nto = [\"ws://127.0.0.1:{}\"]\n",
        common::free_port()
    ));
    let node = Process::start(&["up", "--mesh", mesh.arg()], &[]);
    let addr = node.listening();
    stops_promptly_while_relaying(node, addr).await;
}
