//! A mesh with a `[tls]` table: nodes listen on `wss://` (and answer `/metrics` and `/events`
//! over TLS), links, `send` and `listen` speak TLS trusting the mesh's CA only, a plain
//! client cannot hold a TLS node, and a bad `[tls]` table is refused at load. The CA and the
//! certificates are made at test time with the `openssl` command.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{MeshFile, PATIENCE, Process, arduino};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Run `openssl ARGS` (split at spaces) in `dir`; panics with what it said when it fails.
fn openssl(dir: &Path, args: &str) {
    let output = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("openssl runs (Debian: apt-get install -y openssl)");
    assert!(
        output.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The start of `openssl req` making a P-256 key and a certificate good for two days.
const REQ: &str = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2";

/// A CA in `dir`: `NAME.pem` and `NAME.key`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &format!("{REQ} -keyout {name}.key -out {name}.pem -subj /CN={name}"),
    );
}

/// A CA (`ca.pem`) and a node certificate it signed for 127.0.0.1 (`node.pem`, `node.key`),
/// in `dir`.
fn make_certs(dir: &Path) {
    make_ca(dir, "ca");
    openssl(
        dir,
        &format!(
            "{REQ} -keyout node.key -out node.pem -subj /CN=arduino-node \
             -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
             -CA ca.pem -CAkey ca.key"
        ),
    );
}

const TLS: &str = "[tls]\ncert = \"node.pem\"\nkey = \"node.key\"\nca = \"ca.pem\"\n";

/// A mesh file beside a fresh CA and node certificate, with `[tls]` naming them.
fn tls_mesh(nodes: &str) -> MeshFile {
    let mesh = MeshFile::new(&format!("{TLS}\n{nodes}"));
    make_certs(mesh.dir.path());
    mesh
}

/// Poll `done` until it holds, or fail saying `what`.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        std::thread::sleep(Duration::from_millis(20)); // poll interval
    }
}

/// A node with `[tls]` answers a `wss://` `arduino send` with its sketch's ack.
#[test]
fn a_tls_node_answers_a_wss_send() {
    let mesh = tls_mesh("[[node]]\nname = \"buzzer\"\nport = 0\n");
    let (node, addr) = Process::node(&["buzzer", "--mesh", mesh.arg()], &[]);
    node.wait_for(&format!("wss://{addr}"));
    let sent = arduino(
        &[
            "send",
            &format!("wss://{addr}"),
            "1",
            "0",
            "--mesh",
            mesh.arg(),
        ],
        &[],
    );
    assert!(sent.ok, "{}", sent.stderr);
    assert_eq!(sent.stdout, "buzz buzz buzz\n...\n");
}

/// The demo chain, iopin -> buzzer, acks over TLS, a process each: its link is a `wss://` one.
/// (Under `arduino up` the two would be linked in the process, with no socket to secure.)
#[test]
fn a_demo_chain_acks_over_tls() {
    let (iopin, buzzer) = (common::free_port(), common::free_port());
    let mesh = tls_mesh(&format!(
        "[[node]]\nname = \"iopin\"\nport = {iopin}\nto = [\"buzzer\"]\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer}\n"
    ));
    let buzzer_node = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    buzzer_node.wait_for(&format!("wss://127.0.0.1:{buzzer}"));
    let iopin_node = Process::start(&["iopin", "--mesh", mesh.arg()], &[]);
    iopin_node.wait_for(&format!("wss://127.0.0.1:{iopin}"));
    let sent = arduino(&["send", "iopin", "0", "1", "--mesh", mesh.arg()], &[]);
    assert!(sent.ok, "{}", sent.stderr);
    assert_eq!(sent.stdout, "acknowledged\nacknowledged\n");
    iopin_node.wait_for(&format!(
        "link to buzzer up (wss://127.0.0.1:{buzzer}/datafeed)"
    ));
}

/// `/metrics` answers over https (to a Rust TLS client trusting the mesh's CA), and `arduino
/// listen` follows a TLS node's events.
#[test]
fn metrics_and_events_are_served_over_tls() {
    let mesh = tls_mesh("[[node]]\nname = \"buzzer\"\nport = 0\n");
    let (_node, addr) = Process::node(&["buzzer", "--mesh", mesh.arg()], &[]);
    let listen = Process::start(
        &["listen", &format!("https://{addr}"), "--mesh", mesh.arg()],
        &[],
    );
    let loaded = arduino::Mesh::load(&mesh.path).unwrap();
    let tls = loaded.tls.expect("the mesh has [tls]");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Once listen's request is in, every message shows in its output.
    until("listen to subscribe", || {
        arduino(
            &["send", &format!("wss://{addr}"), "1", "--mesh", mesh.arg()],
            &[],
        )
        .ok && listen.stdout().iter().any(|line| line.contains("< 1"))
    });
    let metrics = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut stream = tls.connect("127.0.0.1", tcp).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(PATIENCE, stream.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        answer
    });
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    let messages = metrics
        .lines()
        .find_map(|line| line.strip_prefix("arduino_messages_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no arduino_messages_total in {metrics}"));
    assert!(messages >= 1, "{metrics}");
}

/// A plain client (websocket or silent TCP) to a TLS node fails its handshake, is refused in
/// one clear line, and cannot hold the node: it goes on serving TLS clients.
#[test]
fn a_plain_client_is_refused_and_the_node_keeps_serving() {
    let mesh = tls_mesh("[[node]]\nname = \"buzzer\"\nport = 0\n");
    let (node, addr) = Process::node(&["buzzer", "--mesh", mesh.arg()], &[]);
    // A client that connects and says nothing holds only its own connection.
    let _silent = std::net::TcpStream::connect(addr).unwrap();
    let plain = arduino(
        &["send", &format!("ws://{addr}"), "1", "--timeout", "5"],
        &[],
    );
    assert!(!plain.ok);
    assert!(
        plain.stderr.contains("does it speak TLS"),
        "{}",
        plain.stderr
    );
    node.wait_for("refused a connection: not a TLS handshake");
    let sent = arduino(
        &["send", &format!("wss://{addr}"), "1", "--mesh", mesh.arg()],
        &[],
    );
    assert!(sent.ok, "{}", sent.stderr);
    assert_eq!(sent.stdout, "buzz buzz buzz\n");
}

/// A client that trusts another CA refuses the node, saying on stderr that its certificate is
/// not trusted; `wss://` without `[tls]` is refused in words.
#[test]
fn a_client_trusting_another_ca_is_refused() {
    let mesh = tls_mesh("[[node]]\nname = \"buzzer\"\nport = 0\n");
    let (_node, addr) = Process::node(&["buzzer", "--mesh", mesh.arg()], &[]);
    let dir = mesh.dir.path();
    make_ca(dir, "other");
    let other = dir.join("other.toml");
    std::fs::write(
        &other,
        "[tls]\ncert = \"node.pem\"\nkey = \"node.key\"\nca = \"other.pem\"\n",
    )
    .unwrap();
    let url = format!("wss://{addr}");
    let refused = arduino(&["send", &url, "1", "--mesh", other.to_str().unwrap()], &[]);
    assert!(!refused.ok);
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("certificate is not trusted"),
        "{}",
        refused.stderr
    );
    let untrusting = arduino(&["send", &url, "1"], &[]);
    assert!(!untrusting.ok);
    assert!(
        untrusting.stderr.contains("needs the mesh's [tls] table"),
        "{}",
        untrusting.stderr
    );
}

/// A Python `websockets` client with an `ssl` context that trusts the mesh's CA talks to a
/// TLS node.
#[test]
fn a_python_client_talks_to_a_tls_node() {
    let mesh = tls_mesh("[[node]]\nname = \"buzzer\"\nport = 0\n");
    let (_node, addr) = Process::node(&["buzzer", "--mesh", mesh.arg()], &[]);
    let script = "import asyncio, ssl, sys, websockets\n\
        async def main():\n\
        \x20   context = ssl.create_default_context(cafile=sys.argv[2])\n\
        \x20   async with websockets.connect(sys.argv[1], ssl=context) as ws:\n\
        \x20       await ws.send('1')\n\
        \x20       print(await ws.recv())\n\
        asyncio.run(asyncio.wait_for(main(), 15))\n";
    let ca = mesh.dir.path().join("ca.pem");
    let output = Command::new("python3")
        .args(["-c", script, &format!("wss://{addr}/datafeed")])
        .arg(&ca)
        .output()
        .expect("python3 runs (the tests need Python 3 with `pip install websockets`)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "buzz buzz buzz\n");
}

/// `arduino check` on a mesh whose `[tls]` is `tls`, beside fresh certificates: its stderr.
fn check_refuses(tls: &str) -> String {
    let mesh = MeshFile::new(&format!("{tls}\n[[node]]\nname = \"buzzer\"\nport = 0\n"));
    make_certs(mesh.dir.path());
    std::fs::write(mesh.dir.path().join("garbage.pem"), "not a certificate\n").unwrap();
    make_ca(mesh.dir.path(), "stranger");
    let checked = arduino(&["check", "--mesh", mesh.arg()], &[]);
    assert!(!checked.ok, "{tls:?} was accepted");
    assert_eq!(checked.stderr.lines().count(), 1, "{}", checked.stderr);
    assert!(checked.stderr.contains(mesh.arg()), "{}", checked.stderr);
    checked.stderr
}

/// A `[tls]` file that is not there is refused at load, naming the key and the file.
#[test]
fn a_missing_tls_file_is_refused() {
    let stderr = check_refuses(&TLS.replace("node.pem", "nowhere.pem"));
    assert!(stderr.contains("`tls.cert`"), "{stderr}");
    assert!(stderr.contains("cannot read "), "{stderr}");
    assert!(stderr.contains("nowhere.pem: No such file"), "{stderr}");
}

/// A `[tls]` file that is not PEM is refused at load, naming the key and the file.
#[test]
fn a_tls_file_that_is_not_pem_is_refused() {
    let stderr = check_refuses(&TLS.replace("ca.pem", "garbage.pem"));
    assert!(stderr.contains("`tls.ca`"), "{stderr}");
    assert!(
        stderr.contains("garbage.pem holds no certificate"),
        "{stderr}"
    );
    let stderr = check_refuses(&TLS.replace("node.key", "garbage.pem"));
    assert!(stderr.contains("`tls.key`"), "{stderr}");
    assert!(
        stderr.contains("garbage.pem holds no private key"),
        "{stderr}"
    );
}

/// A key that is not the certificate's is refused at load.
#[test]
fn a_key_not_matching_the_cert_is_refused() {
    let stderr = check_refuses(&TLS.replace("node.key", "stranger.key"));
    assert!(stderr.contains("`tls.key`"), "{stderr}");
    assert!(
        stderr.contains("the key is not the certificate's"),
        "{stderr}"
    );
}

/// A `[tls]` with only some of its keys is refused at load, naming those missing.
#[test]
fn a_tls_table_with_only_a_cert_is_refused() {
    let stderr = check_refuses("[tls]\ncert = \"node.pem\"\n");
    assert!(
        stderr.contains("`tls.key` and `tls.ca` are missing"),
        "{stderr}"
    );
}
