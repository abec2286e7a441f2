//! Property tests of what comes from outside: mesh files, and bytes on a node's sockets. No
//! input makes the parser or a node panic. `PROPTEST_CASES=5000 cargo test --test fuzz` runs
//! a longer search by hand.

mod common;

use std::io::{Read, Write};

use proptest::{prelude::*, strategy::ValueTree};

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

/// Values at the edges of every type TOML has: the largest and smallest floats, infinities,
/// NaN, -0.0, the ends of i64, empty, blank, control and huge strings, odd hosts, and values
/// of the wrong type altogether.
fn edge_value() -> impl Strategy<Value = String> {
    const VALUES: &[&str] = &[
        "1.7976931348623157e308",
        "2.2250738585072014e-308",
        "5e-324",
        "1e300",
        "1e-300",
        "-0.0",
        "0.0",
        "0.001",
        "86400.0",
        "inf",
        "-inf",
        "nan",
        "0.5",
        "-9223372036854775808",
        "9223372036854775807",
        "-1",
        "0",
        "1",
        "64",
        "65",
        "65535",
        "65536",
        "1000001",
        "true",
        "[]",
        "{}",
        "[1, \"a\"]",
        "1979-05-27T07:32:00Z",
        "\"\"",
        "\" \"",
        "\"\\n\"",
        "\"\\u0000\"",
        "\"caf\u{e9}\"",
        "\"::\"",
        "\"[::1]\"",
        "\"::1\"",
        "\"0.0.0.0\"",
        "\"localhost\"",
        "\"127.0.0.1\"",
        "\"ws://127.0.0.1:1\"",
        "\"/\"",
        "\"/datafeed?x#y\"",
        "\"a\"",
        "\"b\"",
        "[\"a\"]",
        "[\"b\", \"a\"]",
    ];
    prop_oneof![
        10 => prop::sample::select(VALUES).prop_map(str::to_owned),
        1 => Just(format!("\"{}\"", "x".repeat(100_000))),
        1 => any::<f64>().prop_map(|x| format!("{x:?}")),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ]
}

/// Mesh files of one to three nodes (named `a`, `b` and `c`, so that `to` lists can name each
/// other) in which every key may hold an edge value.
fn edge_mesh() -> impl Strategy<Value = String> {
    const NODE_KEYS: &[&str] = &[
        "sketch",
        "host",
        "port",
        "to",
        "seed",
        "timeout",
        "max_message",
        "max_connections",
    ];
    const CONFIG_KEYS: &[&str] = &[
        "chance", "sequence", "tacks", "delay", "sound", "retries", "channel",
    ];
    let pairs = |keys: &'static [&'static str]| {
        prop::collection::vec((prop::sample::select(keys), edge_value()), 0..4)
    };
    let sketch = prop::sample::select(&["clock", "iopin", "buzzer"][..]);
    let node = (sketch, pairs(NODE_KEYS), pairs(CONFIG_KEYS), 0u16..4);
    (
        prop::option::of(edge_value()),
        prop::collection::vec(node, 1..4),
    )
        .prop_map(|(secret, nodes)| {
            let mut text = String::new();
            if let Some(secret) = secret {
                text.push_str(&format!("secret = {secret}\n"));
            }
            for (index, (sketch, keys, config, port)) in nodes.into_iter().enumerate() {
                let name = ["a", "b", "c"][index];
                text.push_str(&format!("[[node]]\nname = \"{name}\"\n"));
                let mut set = std::collections::BTreeMap::new();
                set.insert("sketch", format!("\"{sketch}\""));
                set.insert("port", format!("{}", 20000 + port));
                for (key, value) in keys {
                    set.insert(key, value);
                }
                for (key, value) in set {
                    text.push_str(&format!("{key} = {value}\n"));
                }
                text.push_str("[node.config]\n");
                let config: std::collections::BTreeMap<_, _> = config.into_iter().collect();
                for (key, value) in config {
                    text.push_str(&format!("{key} = {value}\n"));
                }
            }
            text
        })
}

/// Sets up every node of `mesh` and runs it for a moment (bound to a free port when it
/// listens, and stopped at once): the path from a checked mesh to running nodes, where
/// durations, intervals and limits are made.
fn run_briefly(mesh: &arduino::Mesh) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = arduino::builtin();
    runtime.block_on(async {
        for def in &mesh.nodes {
            let events = arduino::Events::new(&def.name);
            let Ok(node) = registry.build(mesh, def, mesh.secret(None), events) else {
                continue;
            };
            let listens = registry.get(def.sketch()).unwrap().listens;
            let listener = if listens {
                Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
            } else {
                None
            };
            let stop = tokio_util::sync::CancellationToken::new();
            stop.cancel();
            arduino::run_until(node, listener, stop).await;
        }
    });
}

proptest! {
    #![proptest_config(cases(256))]

    /// Edge values in every key: parsing, checking and setting up never panic, and what
    /// passes the check can be set up and run.
    #[test]
    fn edge_values_are_refused_or_run(text in edge_mesh()) {
        if let Ok(mesh) = arduino::Mesh::parse(&text, "fuzz.toml") {
            for node in &mesh.nodes {
                prop_assert!(mesh.peers(node).is_ok());
            }
            if arduino::builtin().check(&mesh).is_ok() {
                run_briefly(&mesh);
            }
        }
    }

    /// Any error about an edge-valued mesh is one line, naming the file.
    #[test]
    fn edge_errors_are_one_line(text in edge_mesh()) {
        let error = arduino::Mesh::parse(&text, "fuzz.toml")
            .and_then(|mesh| arduino::builtin().check(&mesh));
        if let Err(error) = error {
            let error = error.to_string();
            prop_assert!(!error.contains('\n'), "{}", error);
            prop_assert!(error.starts_with("fuzz.toml"), "{}", error);
            prop_assert!(error.len() < 400, "{}", error);
        }
    }

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

/// The binary, on a handful of edge-valued mesh files the library refuses: one line on
/// stderr naming the file, a non-zero exit, never a panic.
#[test]
fn the_binary_refuses_edge_values_in_one_line() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = edge_mesh();
    let mut tried = 0;
    while tried < 12 {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        let refused = arduino::Mesh::parse(&text, "fuzz.toml")
            .and_then(|mesh| arduino::builtin().check(&mesh))
            .is_err();
        if !refused {
            continue;
        }
        tried += 1;
        let mesh = common::MeshFile::new(&text);
        let ran = common::arduino(&["up", "--mesh", mesh.arg()], &[]);
        assert!(!ran.ok, "{text}");
        assert!(!ran.stderr.contains("panicked"), "{text}\n{}", ran.stderr);
        let lines: Vec<&str> = ran.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{text}\n{}", ran.stderr);
        assert!(
            lines[0].starts_with(&format!("arduino: {}", mesh.arg())),
            "{text}\n{}",
            ran.stderr
        );
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
