//! Property tests of what comes from outside: mesh files, and bytes on a node's sockets. No
//! input makes the parser or a node panic. `PROPTEST_CASES=5000 cargo test --test fuzz` runs
//! a longer search by hand.

mod common;

use std::io::{Read, Write};

use proptest::prelude::*;

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// Lines that look like a mesh file, valid or not, to reach past the TOML parser.
fn mesh_like() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("[[node]]".to_owned()),
        Just("[node.config]".to_owned()),
        "name = \"(clock|iopin|buzzer|x|)\"",
        "sketch = \"(clock|iopin|buzzer|led)\"",
        "port = -?[0-9]{1,6}",
        "host = \"(127.0.0.1|::1|localhost|)\"",
        "to = \\[(\"(clock|iopin|buzzer|ws://127.0.0.1:1)\", ?){0,3}\\]",
        "(chance|sequence|tacks|delay|sound|retries|channel|seed|timeout|max_message) = (-?[0-9]{1,4}(\\.[0-9])?|\"[a-z]{0,4}\"|true|\\[\\])",
        "secret = \"[a-z]{0,8}\"",
        ".{0,20}",
    ];
    prop::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(cases(256))]

    /// Any text as a mesh file: an error or a mesh, never a panic.
    #[test]
    fn any_text_is_a_mesh_or_an_error(text in ".{0,400}") {
        if let Ok(mesh) = arduino::Mesh::parse(&text, "fuzz.toml") {
            let _ = arduino::builtin().check(&mesh);
        }
    }

    /// Mesh-like text, to reach the checks past the TOML parser: never a panic, and a mesh
    /// that passes has every `to` resolvable.
    #[test]
    fn mesh_like_text_is_a_mesh_or_an_error(text in mesh_like()) {
        if let Ok(mesh) = arduino::Mesh::parse(&text, "fuzz.toml") {
            for node in &mesh.nodes {
                prop_assert!(mesh.peers(node).is_ok());
            }
            let _ = arduino::builtin().check(&mesh);
        }
    }
}

/// Any bytes, after a handshake or instead of one, never take a node down: after each case a
/// fresh client is still served.
#[test]
fn any_bytes_on_a_socket_leave_the_node_serving() {
    let (node, addr) = common::Process::node(&["iopin", "--port", "0", "-q"], &[]);
    let _ = &node;
    let handshake = "GET /fuzz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let config = ProptestConfig {
        failure_persistence: None,
        ..cases(64)
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(
            &(any::<bool>(), prop::collection::vec(any::<u8>(), 0..512)),
            |(after_handshake, bytes)| {
                let mut socket = std::net::TcpStream::connect(addr).unwrap();
                socket.set_read_timeout(Some(common::PATIENCE)).unwrap();
                if after_handshake {
                    socket.write_all(handshake.as_bytes()).unwrap();
                    let mut response = Vec::new();
                    let mut byte = [0u8];
                    while !response.ends_with(b"\r\n\r\n") {
                        socket.read_exact(&mut byte).unwrap();
                        response.push(byte[0]);
                    }
                }
                let _ = socket.write_all(&bytes);
                let _ = socket.shutdown(std::net::Shutdown::Write);
                // Whatever the node answers, it ends the connection (or waits for more).
                let _ = socket.read_to_end(&mut Vec::new());

                let mut client =
                    tokio_tungstenite::tungstenite::connect(format!("ws://{addr}/after"))
                        .unwrap()
                        .0;
                client
                    .send(tokio_tungstenite::tungstenite::Message::text("1"))
                    .unwrap();
                let ack = client.read().unwrap();
                prop_assert_eq!(ack.to_text().unwrap(), "acknowledged");
                Ok(())
            },
        )
        .unwrap();
}
