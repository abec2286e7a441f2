//! The wire rules of the contract, checked with raw websocket clients against a real node.

mod common;

use std::io::{Read, Write};

use common::{Process, ws};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

/// A masked client frame with `opcode` and `payload`, written by hand so that it can break
/// the rules tungstenite would not let a client break.
fn raw_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// The close code the node sends after `frame`, written raw on a fresh connection.
async fn close_code_after(url: &str, frame: &[u8]) -> Option<CloseCode> {
    let mut client = ws::connect(url).await;
    match client.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.write_all(frame).await.unwrap(),
        _ => unreachable!("plain ws"),
    }
    match ws::next(&mut client).await {
        Some(Message::Close(Some(close))) => Some(close.code),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Messages sent back to back, before reading any ack, are acknowledged one each, in order.
#[tokio::test]
async fn acks_come_back_in_order_for_pipelined_messages() {
    let (_buzzer, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let mut client = ws::connect(&format!("ws://{addr}/anything/at/all")).await;
    let sent: Vec<&str> = (0..200)
        .map(|i| if i % 3 == 0 { "1" } else { "0" })
        .collect();
    for text in &sent {
        client.feed(Message::text(*text)).await.unwrap();
    }
    client.flush().await.unwrap();
    for (i, text) in sent.iter().enumerate() {
        let expected = if *text == "1" {
            "buzz buzz buzz"
        } else {
            "..."
        };
        match ws::next(&mut client).await {
            Some(Message::Text(ack)) => assert_eq!(ack.as_str(), expected, "ack {i}"),
            other => panic!("ack {i}: {other:?}"),
        }
    }
}

/// Any path is accepted, and it is the channel the sketch sees (iopin streams on it).
#[tokio::test]
async fn the_path_is_the_channel() {
    let (buzzer, buzzer_addr) = Process::node(&["buzzer", "--port", "0", "-v"], &[]);
    let mesh = common::MeshFile::new(&format!(
        "[[node]]\nname = \"iopin\"\nport = 0\nto = [\"ws://{buzzer_addr}\"]\n[node.config]\nsequence = 2\n"
    ));
    let (_iopin, addr) = Process::node(&["iopin", "--mesh", mesh.arg()], &[]);
    let mut client = ws::connect(&format!("ws://{addr}/kitchen/lights")).await;
    assert_eq!(ws::ask(&mut client, "0").await, "acknowledged");
    let connected = buzzer.wait_for("client connected client=");
    assert!(
        connected.ends_with("channel=/kitchen/lights"),
        "{connected}"
    );
    let received = buzzer.wait_for("] < ");
    assert!(received.ends_with("channel=/kitchen/lights"), "{received}");
}

/// Binary frames (1003), invalid UTF-8 (1007) and oversized messages (1009) close only the
/// connection that sent them; the node goes on serving the others.
#[tokio::test]
async fn bad_frames_close_their_connection_with_the_right_code() {
    let (node, addr) = Process::node(&["buzzer", "--port", "0", "--max-message", "1024"], &[]);
    let url = format!("ws://{addr}/datafeed");
    let mut bystander = ws::connect(&url).await;
    assert_eq!(ws::ask(&mut bystander, "1").await, "buzz buzz buzz");

    assert_eq!(
        close_code_after(&url, &raw_frame(0x2, b"\x01\x02")).await,
        Some(CloseCode::Unsupported)
    );
    assert_eq!(
        close_code_after(&url, &raw_frame(0x1, b"\xff\xfe\xfd")).await,
        Some(CloseCode::Invalid)
    );
    assert_eq!(
        close_code_after(&url, &raw_frame(0x1, &[b'1'; 2000])).await,
        Some(CloseCode::Size)
    );

    // A message at the limit is still fine, and the bystander never noticed.
    let mut client = ws::connect(&url).await;
    assert_eq!(ws::ask(&mut client, &"0".repeat(1024)).await, "...");
    assert_eq!(ws::ask(&mut bystander, "0").await, "...");
    // The node logs each after its close frame is out: wait for the lines, then count them.
    for code in ["1003", "1007", "1009"] {
        node.wait_for(&format!("closed with {code}"));
        assert_eq!(node.count(&format!("closed with {code}")), 1);
    }
}

/// Bytes that are not a websocket handshake are refused (HTTP gets a 400 saying what the node
/// is) with a log line; the node goes on.
#[tokio::test]
async fn a_non_websocket_client_is_refused_and_the_node_goes_on() {
    let (node, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer:?}"
    );
    assert!(
        answer.ends_with("connect with a websocket client\n"),
        "{answer:?}"
    );
    let (first, _) = node.wait_for_after("refused a connection: not a websocket handshake", 0);

    let mut garbage = std::net::TcpStream::connect(addr).unwrap();
    garbage
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, b'\n', b'\r', b'\n',
            b'\r', b'\n',
        ])
        .unwrap();
    let _ = garbage.read_to_end(&mut Vec::new());
    node.wait_for_after("refused a connection: not a websocket handshake", first + 1);

    let mut client = ws::connect(&format!("ws://{addr}/")).await;
    assert_eq!(ws::ask(&mut client, "1").await, "buzz buzz buzz");
    client.close(None).await.unwrap();
    assert!(client.next().await.is_none_or(|m| m.is_ok()));
}

/// Says nothing: every message gets the runtime's `n/a`.
struct Quiet;

impl arduino::Sketch for Quiet {
    fn setup(_setup: &mut arduino::Setup<'_>) -> Result<Self, arduino::ConfigError> {
        Ok(Quiet)
    }

    async fn loop_once(
        &mut self,
        _ctx: &mut arduino::Context,
        _input: arduino::Input<'_>,
    ) -> arduino::Ack {
        arduino::Ack::NA
    }
}

/// A sketch with nothing to say acknowledges `n/a`, one per message, in order.
#[tokio::test]
async fn a_sketch_with_nothing_to_say_acknowledges_n_a() {
    let registry = arduino::Registry::default().with::<Quiet>("quiet", "says nothing");
    let node = common::InProcess::start(&registry, "[[node]]\nname = \"quiet\"\nport = 1\n").await;
    let mut client = ws::connect(&format!("ws://{}/", node.addr)).await;
    for text in ["1", "", "hello"] {
        assert_eq!(ws::ask(&mut client, text).await, "n/a");
    }
    assert_eq!(node.stop().await.handled, 3);
}

/// Open a websocket by hand on a raw TCP stream: the handshake written and read as bytes.
fn raw_handshake(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(common::PATIENCE)).unwrap();
    tcp.write_all(
        b"GET /datafeed HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8];
    while !response.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).unwrap();
        response.push(byte[0]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101"), "{response:?}");
    tcp
}

/// The frames a server wrote (unmasked, short payloads), as (opcode, payload), to the end.
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, start) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            n => (n as usize, 2),
        };
        frames.push((opcode, bytes[start..start + len].to_vec()));
        bytes = &bytes[start + len..];
    }
    frames
}

/// Valid messages followed, in the same write, by a frame that breaks the protocol (unmasked,
/// or a reserved opcode): the valid ones are acknowledged, then the node closes with 1002 and
/// a reason.
#[test]
fn acks_before_a_protocol_error_go_out_then_1002() {
    let (node, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let unmasked = vec![0x81, 0x01, b'1'];
    let reserved = raw_frame(0x3, b"1");
    for bad in [unmasked, reserved] {
        let mut tcp = raw_handshake(addr);
        let mut bytes = Vec::new();
        for text in ["1", "0", "1"] {
            bytes.extend(raw_frame(0x1, text.as_bytes()));
        }
        bytes.extend(bad);
        tcp.write_all(&bytes).unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer); // until the node closes (a reset is fine)
        let frames = server_frames(&answer);
        let texts: Vec<_> = frames
            .iter()
            .filter(|(opcode, _)| *opcode == 0x1)
            .map(|(_, payload)| String::from_utf8_lossy(payload).into_owned())
            .collect();
        assert_eq!(
            texts,
            ["buzz buzz buzz", "...", "buzz buzz buzz"],
            "{frames:?}"
        );
        let close = frames
            .iter()
            .find(|(opcode, _)| *opcode == 0x8)
            .unwrap_or_else(|| panic!("no close frame in {frames:?}"));
        assert_eq!(close.1[..2], 1002u16.to_be_bytes(), "{close:?}");
        assert!(close.1.len() > 2, "a close frame without a reason");
    }
    node.wait_for("closed with 1002");
}
