//! Load: a flood of clients, a connection limit, clients that never finish a handshake or
//! never read their acks. Bounded, counted, and the node goes on serving.

mod common;

use std::{io::Write, time::Duration};

use common::{MeshFile, Process, ws};
use futures_util::{SinkExt, StreamExt, future::join_all};
use tokio_tungstenite::{connect_async, tungstenite::Message};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 1,000 clients connected at once each get their ack; the node's memory is printed.
#[tokio::test]
async fn a_thousand_clients_are_each_acknowledged() {
    let (node, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let url = format!("ws://{addr}/datafeed");
    let idle = rss_kib(node.pid());
    let mut clients = Vec::new();
    for chunk in 0..10 {
        let batch = join_all((0..100).map(|_| ws::connect(&url))).await;
        clients.extend(batch);
        assert_eq!(clients.len(), (chunk + 1) * 100);
    }
    let acks = join_all(clients.iter_mut().map(|c| ws::ask(c, "1"))).await;
    assert_eq!(acks.len(), 1000);
    assert!(acks.iter().all(|ack| ack == "buzz buzz buzz"));
    let loaded = rss_kib(node.pid());
    println!("buzzer VmRSS: {idle} KiB idle, {loaded} KiB with 1000 clients");
    // Everyone is still connected, and still served.
    let again = join_all(clients.iter_mut().take(10).map(|c| ws::ask(c, "0"))).await;
    assert!(again.iter().all(|ack| ack == "..."));
}

/// With `--max-connections 50`, the 51st client is refused while 50 are held, and served once
/// one of them leaves.
#[tokio::test]
async fn the_connection_limit_refuses_and_then_admits() {
    let (node, addr) = Process::node(&["buzzer", "--port", "0", "--max-connections", "50"], &[]);
    let url = format!("ws://{addr}/datafeed");
    let mut held = join_all((0..50).map(|_| ws::connect(&url))).await;
    for client in &mut held {
        assert_eq!(ws::ask(client, "1").await, "buzz buzz buzz");
    }
    assert!(
        connect_async(&url).await.is_err(),
        "the 51st client was let in"
    );
    node.wait_for("refused a connection: too many connections");

    let mut leaving = held.pop().unwrap();
    leaving.close(None).await.unwrap();
    while leaving.next().await.is_some() {}
    // The node frees the slot when it sees the close: poll until it has.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let mut admitted = loop {
        if let Ok((client, _)) = connect_async(&url).await {
            break client;
        }
        assert!(std::time::Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
    };
    assert_eq!(ws::ask(&mut admitted, "1").await, "buzz buzz buzz");
}

/// A client that opens a socket and never sends a handshake is dropped after 5 s; others are
/// served meanwhile.
#[tokio::test]
async fn a_silent_socket_is_dropped() {
    let (node, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let silent = std::net::TcpStream::connect(addr).unwrap();
    let mut client = ws::connect(&format!("ws://{addr}/")).await;
    assert_eq!(ws::ask(&mut client, "1").await, "buzz buzz buzz");
    node.wait_for("refused a connection: no websocket handshake within 5s");
    drop(silent);
}

/// A client that floods messages and never reads its acks is dropped; another client is
/// served all the while, and the node's memory stays bounded.
#[tokio::test]
async fn a_client_that_never_reads_is_dropped() {
    // A big sound makes each ack 64 KiB, so the unread acks fill the socket quickly.
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"buzzer\"\nport = 0\ntimeout = 0.5\n[node.config]\nsound = \"{}\"\n",
        "b".repeat(64 * 1024)
    ));
    let (node, addr) = Process::node(&["buzzer", "--mesh", mesh.arg()], &[]);
    let before = rss_kib(node.pid());

    let mut flood = std::net::TcpStream::connect(addr).unwrap();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    write!(
        flood,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8];
    while !response.ends_with(b"\r\n\r\n") {
        std::io::Read::read_exact(&mut flood, &mut byte).unwrap();
        response.push(byte[0]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101"));
    // 2,000 masked text frames "1", never reading a byte back.
    let frame = [0x81, 0x81, 1, 2, 3, 4, b'1' ^ 1];
    let frames: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 2000)
        .collect();
    flood
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = flood.write_all(&frames);

    node.wait_for("acknowledgements");
    let mut client = ws::connect(&format!("ws://{addr}/")).await;
    client.send(Message::text("0")).await.unwrap();
    assert_eq!(ws::next(&mut client).await, Some(Message::text("...")));
    let after = rss_kib(node.pid());
    println!("buzzer VmRSS: {before} KiB before the flood, {after} KiB after");
    assert!(
        after < before + 16 * 1024,
        "memory grew from {before} to {after} KiB"
    );
}
