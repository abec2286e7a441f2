//! A node's links to its peers: kept up while idle, however many there are; few and bounded
//! however many channels its clients use; the secret only to nodes of the mesh; connecting
//! bounded in time.

mod common;

use common::{MeshFile, Process, ws};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// `n` distinct ports that were free a moment ago (all held at once, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A node with 100 peers keeps every link up across several keepalive rounds: each round
/// sees every pong, however many links there are.
#[tokio::test]
async fn a_hundred_idle_links_survive_keepalive() {
    const PEERS: usize = 100;
    let ports = free_ports(PEERS);
    let buzzers: String = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            format!("[[node]]\nname = \"b{i}\"\nsketch = \"buzzer\"\nport = {port}\n\n")
        })
        .collect();
    let to: Vec<String> = (0..PEERS).map(|i| format!("\"b{i}\"")).collect();
    let up = MeshFile::new(&buzzers);
    let with_pin = MeshFile::new(&format!(
        "[[node]]\nname = \"pin\"\nsketch = \"iopin\"\nport = 0\nto = [{}]\ntimeout = 0.3\n\
         [node.config]\nsequence = 1\n\n{buzzers}",
        to.join(", ")
    ));
    let buzzers = Process::start(&["up", "--mesh", up.arg()], &[]);
    for i in 0..PEERS {
        buzzers.wait_for(&format!("[ b{i} ] listening on ws://"));
    }
    let (pin, addr) = Process::node(
        &["iopin", "--name", "pin", "--mesh", with_pin.arg(), "-v"],
        &[],
    );
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut client, "1").await, "acknowledged");
    assert_eq!(pin.count("link to b"), PEERS, "{:#?}", pin.log());

    // Several keepalive rounds, each 0.3 s apart, with nothing else to do.
    let mut from = 0;
    for _ in 0..5 {
        from = pin.wait_for_after("keepalive:", from).0 + 1;
    }
    assert_eq!(pin.count("down:"), 0, "{:#?}", pin.log());
    assert_eq!(ws::ask(&mut client, "2").await, "acknowledged");
    // No link had to be opened again.
    assert_eq!(pin.count("link to b"), PEERS, "{:#?}", pin.log());
    assert_eq!(pin.count("down:"), 0, "{:#?}", pin.log());
}

/// How many connections from others `node` holds, at most and at the end, from its own log
/// (`client connected` and `client left`/`client dropped` at -v, in order).
fn connections_held(node: &Process) -> (usize, usize) {
    let (mut now, mut most) = (0usize, 0usize);
    for line in node.log() {
        if line.contains("client connected") {
            now += 1;
            most = most.max(now);
        } else if line.contains("client left") || line.contains("client dropped") {
            now = now.saturating_sub(1);
        }
    }
    (most, now)
}

/// A client that uses 1,000 channels through a relay costs the relay's peer a few
/// connections, not 1,000: the relay keeps at most `LINKS_PER_PEER` links to it, closing the
/// least recently used one normally to make room, and every message is acknowledged.
#[tokio::test]
async fn a_thousand_channels_cost_the_peer_a_few_links() {
    const CHANNELS: usize = 1000;
    let bound = arduino::link::LINKS_PER_PEER;
    let (buzzer, buzzer_addr) = Process::node(&["buzzer", "--port", "0", "-v"], &[]);
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"pin\"\nsketch = \"iopin\"\nport = 0\nto = [\"ws://{buzzer_addr}\"]\n\
         [node.config]\nsequence = 1\n"
    ));
    let (_pin, addr) = Process::node(&["iopin", "--name", "pin", "--mesh", mesh.arg()], &[]);
    for i in 0..CHANNELS {
        let mut client = ws::connect(&format!("ws://{addr}/channel/{i}")).await;
        assert_eq!(
            ws::ask(&mut client, "1").await,
            "acknowledged",
            "on channel {i}"
        );
        client.close(None).await.unwrap();
        let (most, _) = connections_held(&buzzer);
        assert!(
            most <= bound,
            "the buzzer held {most} links after {i} channels"
        );
    }
    buzzer.wait_for("channel=/channel/999");
    let (most, now) = connections_held(&buzzer);
    println!("after {CHANNELS} channels the relay holds {now} links (at most {most})");
    assert!(most <= bound, "the buzzer held {most} links from the relay");
    // The links made room by closing normally: 1000, not a dropped connection.
    assert_eq!(buzzer.count("client dropped"), 0, "{:#?}", buzzer.log());
}

/// A node that accepts TCP but never finishes the websocket handshake (it is stopped) does not
/// hold a caller of `connect_within` for ever; once it resumes, connecting works again.
#[tokio::test]
async fn connecting_to_a_stopped_node_gives_up_in_time() {
    let (buzzer, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let url = format!("ws://{addr}/datafeed");
    let within = std::time::Duration::from_millis(300);
    buzzer.signal("STOP");
    let tried = tokio::time::timeout(
        common::PATIENCE,
        arduino::client::connect_within(&url, None, None, 1 << 20, within),
    )
    .await
    .expect("connect_within gave up by itself");
    let error = tried.expect_err("a stopped node cannot finish a handshake");
    let reason = arduino::client::describe(&error);
    assert!(
        reason.contains("no websocket handshake within 0.3s"),
        "{reason}"
    );

    buzzer.signal("CONT");
    let mut ws = arduino::client::connect_within(&url, None, None, 1 << 20, common::PATIENCE)
        .await
        .unwrap();
    ws.send(Message::text("1")).await.unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert_eq!(ack.to_text().unwrap(), "buzz buzz buzz");
}

/// A websocket server that records the `Authorization` header of each handshake and
/// acknowledges every message with `ok`.
async fn recording_server() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
) {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                // The error type is tungstenite's, and never built here.
                #[allow(clippy::result_large_err)]
                let record = |request: &Request, response: Response| {
                    let header = request
                        .headers()
                        .get("authorization")
                        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
                    let _ = seen_tx.send(header);
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && ws.send(Message::text("ok")).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen_rx)
}

/// Relay one message through an iopin of `mesh` (whose secret is `s3cret`) and return the
/// `Authorization` header its link presented to the recording server.
async fn header_seen(
    mesh: &str,
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
) -> Option<String> {
    let mesh = MeshFile::new(mesh);
    let (_pin, addr) = Process::node(&["iopin", "--name", "pin", "--mesh", mesh.arg()], &[]);
    let mut client = arduino::client::connect(
        &format!("ws://{addr}/datafeed"),
        Some("s3cret"),
        None,
        1 << 20,
    )
    .await
    .unwrap();
    client.send(Message::text("1")).await.unwrap();
    let ack = client.next().await.unwrap().unwrap();
    assert_eq!(ack.to_text().unwrap(), "acknowledged");
    tokio::time::timeout(common::PATIENCE, seen.recv())
        .await
        .unwrap()
        .unwrap()
}

/// The mesh's secret goes only to nodes of the mesh: a `to` URL that is not the address of
/// one never sees the `Authorization` header, while a node of the mesh at the same address
/// does.
#[tokio::test]
async fn the_secret_goes_only_to_nodes_of_the_mesh() {
    let (stranger, mut seen) = recording_server().await;
    let pin = "[[node]]\nname = \"pin\"\nsketch = \"iopin\"\nport = 0\n";
    let config = "[node.config]\nsequence = 1\n";
    let to_a_url = format!("secret = \"s3cret\"\n{pin}to = [\"ws://{stranger}\"]\n{config}");
    assert_eq!(header_seen(&to_a_url, &mut seen).await, None);

    let port = stranger.port();
    let to_a_node = format!(
        "secret = \"s3cret\"\n{pin}to = [\"member\"]\n{config}\n\
         [[node]]\nname = \"member\"\nsketch = \"buzzer\"\nport = {port}\n"
    );
    assert_eq!(
        header_seen(&to_a_node, &mut seen).await.as_deref(),
        Some("Bearer s3cret")
    );
}
