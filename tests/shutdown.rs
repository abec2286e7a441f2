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
