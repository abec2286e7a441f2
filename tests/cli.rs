//! The command line against users and attackers: deadlines on every client, a closed stdout,
//! the secret kept to the mesh's own nodes, no panic from any flag, and errors a person reads.

mod common;

use std::{
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, TcpListener},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{MeshFile, PATIENCE, Process, binary, free_port};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{Request, Response},
};

const SECRET: &str = "correct-horse-battery-staple";

/// What a command run to its end did.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Start `arduino ARGS` in an empty directory, with only `env` set of the mesh's variables.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Child, tempfile::TempDir) {
    let empty = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary());
    command
        .args(args)
        .current_dir(empty.path())
        .env_remove("ARDUINO_MESH")
        .env_remove("ARDUINO_SECRET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    (command.spawn().expect("the arduino binary starts"), empty)
}

/// Read all of `stream` on a thread.
fn drain(stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stream).read_to_string(&mut text);
        text
    })
}

/// Wait for `child` to exit, polling; kill it and fail if it runs past the patience.
fn finish(mut child: Child, started: Instant, what: &str) -> (ExitStatus, Duration) {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`arduino {what}` did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(5)); // poll interval
    }
}

/// Run `arduino ARGS` to its end (failing the test if it hangs).
fn run(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let started = Instant::now();
    let (mut child, _dir) = spawn(args, env);
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let (status, took) = finish(child, started, &args.join(" "));
    Ran {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        took,
    }
}

/// A websocket server standing in for a node, or for a stranger's server: it records the
/// Authorization header of every handshake, and acknowledges each message with `ack TEXT`
/// once it has a permit for it.
struct FakeNode {
    addr: SocketAddr,
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
    permits: Arc<Semaphore>,
}

impl FakeNode {
    /// A server that acknowledges the first `free` messages at once, and each later one when
    /// [`FakeNode::release`] allows it.
    fn start(free: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let permits = Arc::new(Semaphore::new(free));
        let (seen, gate) = (authorizations.clone(), permits.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((stream, _)) = listener.accept().await {
                    let (seen, gate) = (seen.clone(), gate.clone());
                    tokio::spawn(async move {
                        // The closure's type is tungstenite's callback, large Err and all.
                        #[allow(clippy::result_large_err)]
                        let record = |request: &Request, response: Response| {
                            let value = request
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap_or("?").to_owned());
                            seen.lock().unwrap().push(value);
                            Ok(response)
                        };
                        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await
                        else {
                            return;
                        };
                        while let Some(Ok(message)) = ws.next().await {
                            if let Message::Text(text) = message {
                                gate.acquire().await.unwrap().forget();
                                if ws.send(Message::text(format!("ack {text}"))).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            });
        });
        Self {
            addr,
            authorizations,
            permits,
        }
    }

    /// A server that acknowledges everything.
    fn open() -> Self {
        Self::start(Semaphore::MAX_PERMITS)
    }

    /// Let `n` more messages be acknowledged.
    fn release(&self, n: usize) {
        self.permits.add_permits(n);
    }

    /// The Authorization header of each handshake so far.
    fn authorizations(&self) -> Vec<Option<String>> {
        self.authorizations.lock().unwrap().clone()
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

/// The one line a failed command wrote, checked to be exactly one line.
fn one_line(ran: &Ran) -> &str {
    let lines: Vec<&str> = ran.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr: {:?}",
        ran.stderr
    );
    lines[0]
}

// 1. Deadlines.

/// `arduino send` gives up within its timeout on a peer that accepts TCP but never completes
/// the websocket handshake, with one line.
#[test]
fn send_gives_up_on_a_silent_peer_within_its_timeout() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", silent.local_addr().unwrap());
    let ran = run(&["send", &url, "1", "--timeout", "1"], &[]);
    assert!(!ran.status.success());
    assert_eq!(
        one_line(&ran),
        format!("arduino: cannot reach {url}/datafeed: no websocket handshake within 1s")
    );
    assert!(ran.took < Duration::from_secs(5), "took {:?}", ran.took);
}

/// `arduino bench` gives up within its `--timeout` on a peer that never completes the
/// handshake, and on one that never acknowledges.
#[test]
fn bench_gives_up_on_a_silent_peer_within_its_timeout() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", silent.local_addr().unwrap());
    let ran = run(&["bench", &url, "-n", "1", "--timeout", "1"], &[]);
    assert!(!ran.status.success());
    assert_eq!(
        one_line(&ran),
        format!("arduino: cannot reach {url}/datafeed: no websocket handshake within 1s")
    );
    assert!(ran.took < Duration::from_secs(5), "took {:?}", ran.took);

    let mute = FakeNode::start(0);
    let ran = run(
        &[
            "bench",
            &mute.url(),
            "-n",
            "1",
            "--warmup",
            "0",
            "--timeout",
            "0.5",
        ],
        &[],
    );
    assert!(!ran.status.success());
    assert!(
        one_line(&ran).ends_with("no acknowledgement within 0.5s (after 0 acks)"),
        "{}",
        ran.stderr
    );
}

// 2. A closed stdout.

/// Run `arduino ARGS` with its stdout read up to the first line and then closed, as
/// `arduino ... | head -1` does; `node` acknowledges what comes after only once the pipe is
/// closed, so the program meets the closed pipe for sure.
fn first_line_then_close(args: &[&str], node: &FakeNode) -> (String, Ran) {
    let started = Instant::now();
    let (mut child, _dir) = spawn(args, &[]);
    let stderr = drain(child.stderr.take().unwrap());
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    drop(stdout);
    node.release(Semaphore::MAX_PERMITS / 2);
    let (status, took) = finish(child, started, &args.join(" "));
    let ran = Ran {
        status,
        stdout: String::new(),
        stderr: stderr.join().unwrap(),
        took,
    };
    (first, ran)
}

/// `arduino send ... | head -1`: the first ack printed, then a quiet exit with status 0.
#[test]
fn send_into_a_closed_pipe_exits_quietly() {
    let node = FakeNode::start(1);
    let (first, ran) = first_line_then_close(&["send", &node.url(), "a", "b", "c"], &node);
    assert_eq!(first, "ack a\n");
    assert!(ran.status.success(), "{:?}: {}", ran.status, ran.stderr);
    assert_eq!(ran.stderr, "");
}

/// `arduino bench ... | head -1`: the heading printed, then a quiet exit with status 0.
#[test]
fn bench_into_a_closed_pipe_exits_quietly() {
    let node = FakeNode::start(0);
    let (first, ran) = first_line_then_close(
        &["bench", &node.url(), "-n", "2", "--warmup", "0", "-q"],
        &node,
    );
    assert!(first.starts_with("bench ws://"), "{first}");
    assert!(ran.status.success(), "{:?}: {}", ran.status, ran.stderr);
    assert_eq!(ran.stderr, "");
}

// 3. The secret.

/// A mesh with a secret, whose one node `porch` is at `addr`.
fn mesh_with_node_at(addr: SocketAddr) -> MeshFile {
    MeshFile::new(&format!(
        "secret = \"{SECRET}\"\n[[node]]\nname = \"porch\"\nsketch = \"buzzer\"\nhost = \"{}\"\nport = {}\n",
        addr.ip(),
        addr.port()
    ))
}

/// `send` and `bench` give the mesh's secret to a node named, or a URL at a node's address;
/// never to another address, however the URL is dressed up.
#[test]
fn send_and_bench_give_the_secret_to_nodes_of_the_mesh_only() {
    let stranger = FakeNode::open();
    let node = FakeNode::open();
    let mesh = mesh_with_node_at(node.addr);
    let bearer = Some(format!("Bearer {SECRET}"));

    // A stranger, named by URL, with the secret in the file or in the environment.
    let ran = run(&["send", &stranger.url(), "1", "--mesh", mesh.arg()], &[]);
    assert!(ran.status.success(), "{}", ran.stderr);
    let ran = run(
        &["send", &stranger.url(), "1"],
        &[("ARDUINO_SECRET", SECRET)],
    );
    assert!(ran.status.success(), "{}", ran.stderr);
    // A node's address as user name and password, in front of the stranger's.
    let disguised = format!("ws://{}@{}/x", node.addr, stranger.addr);
    let ran = run(&["send", &disguised, "1", "--mesh", mesh.arg()], &[]);
    assert!(ran.status.success(), "{}", ran.stderr);
    let ran = run(
        &[
            "bench",
            &stranger.url(),
            "-n",
            "1",
            "--mesh",
            mesh.arg(),
            "-q",
        ],
        &[],
    );
    assert!(ran.status.success(), "{}", ran.stderr);
    assert_eq!(stranger.authorizations(), vec![None; 4]);
    assert!(node.authorizations().is_empty());

    // The node, by name and by its address.
    let ran = run(&["send", "porch", "1", "--mesh", mesh.arg()], &[]);
    assert!(ran.status.success(), "{}", ran.stderr);
    let ran = run(&["send", &node.url(), "1", "--mesh", mesh.arg()], &[]);
    assert!(ran.status.success(), "{}", ran.stderr);
    let ran = run(
        &["bench", "porch", "-n", "1", "--mesh", mesh.arg(), "-q"],
        &[],
    );
    assert!(ran.status.success(), "{}", ran.stderr);
    assert_eq!(node.authorizations(), vec![bearer; 3]);
}

/// `arduino clock --port P` gives the secret to the node at P when the mesh file has one there,
/// and to no one else.
#[test]
fn a_clock_gives_the_secret_to_nodes_of_the_mesh_only() {
    let stranger = FakeNode::open();
    let node = FakeNode::open();
    let mesh = mesh_with_node_at(node.addr);
    for fake in [&stranger, &node] {
        let port = fake.addr.port().to_string();
        let ran = run(
            &[
                "clock",
                "--port",
                &port,
                "-t",
                "1",
                "-d",
                "0",
                "--mesh",
                mesh.arg(),
            ],
            &[],
        );
        assert!(ran.status.success(), "{}", ran.stderr);
    }
    assert_eq!(stranger.authorizations(), vec![None]);
    assert_eq!(
        node.authorizations(),
        vec![Some(format!("Bearer {SECRET}"))]
    );
}

/// A stranger's server that wants a secret gets a 401 answered with why none was sent.
#[test]
fn a_withheld_secret_is_explained() {
    let (_node, addr) = Process::node(&["buzzer", "--port", "0"], &[("ARDUINO_SECRET", SECRET)]);
    let ran = run(
        &["send", &format!("ws://{addr}"), "1"],
        &[("ARDUINO_SECRET", SECRET)],
    );
    assert!(!ran.status.success());
    let line = one_line(&ran);
    assert!(line.contains("HTTP 401"), "{line}");
    assert!(line.contains("goes only to its own nodes"), "{line}");
}

// 5. No panic from a flag.

/// Every flag at and past its edges: refused in words at once, or run; never a panic, never
/// more than one line of error.
#[test]
fn no_flag_value_makes_the_program_panic() {
    let closed = free_port().to_string();
    let url = format!("ws://127.0.0.1:{closed}");
    let table: &[&[&str]] = &[
        &["send", &url, "1", "--timeout", "1e300"],
        &["send", &url, "1", "--timeout", "0"],
        &["send", &url, "1", "--timeout", "-1"],
        &["send", &url, "1", "--timeout", "NaN"],
        &["send", &url, "1", "--timeout", "inf"],
        &["send", &url, "1", "--timeout", "1e-300"],
        &["send", &url, "1", "--timeout", "86400"],
        &["bench", &url, "--hold", "1e300"],
        &["bench", &url, "--hold", "1e-300"],
        &["bench", &url, "--timeout", "1e300"],
        &["bench", &url, "-n", "0"],
        &["bench", &url, "-n", "18446744073709551615"],
        &["bench", &url, "--clients", "0"],
        &["bench", &url, "--clients", "4294967296"],
        &["bench", &url, "--window", "0"],
        &["bench", &url, "--window", "18446744073709551615"],
        &["bench", &url, "--warmup", "18446744073709551615"],
        &["bench", &url, "-n", "1", "--warmup", "1000000000"],
        &["clock", "--port", &closed, "-t", "1", "--timeout", "1e300"],
        &["clock", "--port", &closed, "-t", "1", "-d", "1e300"],
        &["clock", "--port", &closed, "-t", "1", "-d", "1e-300"],
        &["clock", "--port", &closed, "-t", "1", "-d", "-0.5"],
        &["clock", "--port", "0", "-t", "1"],
        &["clock", "--port", "65536", "-t", "1"],
        &["clock", "--port", "-1", "-t", "1"],
        &["clock", "--port", &closed, "-t", "-1"],
        &["clock", "--port", &closed, "-t", "18446744073709551616"],
        &["clock", "--port", &closed, "-t", "1", "--seed", "-1"],
        &["buzzer", "--port", "0", "--max-message", "0"],
        &[
            "buzzer",
            "--port",
            "0",
            "--max-message",
            "18446744073709551615",
        ],
        &[
            "buzzer",
            "--port",
            "0",
            "--max-connections",
            "18446744073709551615",
        ],
        &["buzzer", "--port", "0", "--max-connections", "0"],
        &["buzzer", "--port", "0", "--timeout", "1e300"],
        &["buzzer", "--port", "0", "--seed", "18446744073709551616"],
        &["iopin", "--port", "0", "-d", "1e300"],
    ];
    for args in table {
        let ran = run(args, &[]);
        let shown = args.join(" ");
        assert!(
            !ran.stderr.contains("panicked"),
            "`arduino {shown}` panicked: {}",
            ran.stderr
        );
        assert_ne!(ran.status.code(), Some(101), "`arduino {shown}`");
        assert!(!ran.status.success(), "`arduino {shown}` was accepted");
        let errors: Vec<&str> = ran
            .stderr
            .lines()
            .filter(|line| line.starts_with("arduino:") || line.starts_with("error"))
            .collect();
        assert_eq!(errors.len(), 1, "`arduino {shown}`: {}", ran.stderr);
    }
}

/// The edges that are allowed run: a clock with 0 ticks for port 65535, seeds 0 and 2^64-1,
/// the longest timeout, the shortest hold.
#[test]
fn the_edges_of_each_range_are_accepted() {
    for seed in ["0", "18446744073709551615"] {
        let ran = run(
            &[
                "clock", "--port", "65535", "-t", "0", "-d", "0", "--seed", seed,
            ],
            &[],
        );
        assert!(ran.status.success(), "{}", ran.stderr);
    }
    let ran = run(
        &["send", &FakeNode::open().url(), "1", "--timeout", "86400"],
        &[],
    );
    assert!(ran.status.success(), "{}", ran.stderr);
    let ran = run(
        &[
            "bench",
            &FakeNode::open().url(),
            "-n",
            "1",
            "--warmup",
            "0",
            "--hold",
            "0.001",
            "--timeout",
            "0.001",
            "-q",
        ],
        &[],
    );
    // 1 ms may be too short for an answer: a clear failure is fine, a panic is not.
    assert_ne!(ran.status.code(), Some(101), "{}", ran.stderr);
}

/// A range is said in --help (`--max-connections` only for a sketch that listens).
#[test]
fn help_says_the_ranges() {
    let ran = run(&["clock", "--help"], &[]);
    assert!(ran.status.success());
    assert!(ran.stdout.contains("0.001 to 86400"), "{}", ran.stdout);
    assert!(ran.stdout.contains("1 GiB"), "{}", ran.stdout);
    let ran = run(&["buzzer", "--help"], &[]);
    assert!(ran.status.success());
    assert!(ran.stdout.contains("1 to 1000000"), "{}", ran.stdout);
}

// 6. Errors a person reads.

/// A sketch flag given to a sketch that does not take it is blamed on the command line.
#[test]
fn a_clock_flag_on_another_sketch_is_blamed_on_the_command_line() {
    let ran = run(&["iopin", "--port", "0", "-t", "3"], &[]);
    assert!(!ran.status.success());
    assert_eq!(
        one_line(&ran),
        "arduino: command line: -t/--tacks is for the clock; iopin does not take it"
    );
    assert!(!ran.stderr.contains("mesh.toml"));
}

/// `-H/--host` is `-s/--socket`.
#[test]
fn host_is_another_name_for_socket() {
    for flag in ["-H", "--host", "-s", "--socket"] {
        let (_node, addr) = Process::node(&["buzzer", flag, "127.0.0.1", "--port", "0"], &[]);
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
    }
}

/// `arduino help SKETCH` and `arduino help up` show that command's help.
#[test]
fn help_works_for_sketches_and_commands() {
    let ran = run(&["help", "clock"], &[]);
    assert!(ran.status.success(), "{}", ran.stderr);
    assert!(
        ran.stdout.contains("Usage: arduino clock"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("--tacks"), "{}", ran.stdout);
    let ran = run(&["help", "up"], &[]);
    assert!(ran.status.success(), "{}", ran.stderr);
    assert!(ran.stdout.contains("Usage: arduino up"), "{}", ran.stdout);
}

/// A sketch's help lists the config keys it declares, each with its default and a line, and
/// only the flags that apply to it; `sketches -v` lists the keys too.
#[test]
fn a_sketchs_help_lists_its_config_keys() {
    for entry in arduino::builtin().entries() {
        let ran = run(&[entry.name, "--help"], &[]);
        assert!(ran.status.success(), "{}", ran.stderr);
        for key in entry.config {
            let line = ran
                .stdout
                .lines()
                .find(|line| line.trim_start().starts_with(&format!("{} ", key.name)))
                .unwrap_or_else(|| {
                    panic!("{}: no line for {}:\n{}", entry.name, key.name, ran.stdout)
                });
            assert!(line.ends_with(key.about), "{line}");
        }
        let takes_tacks = entry.config.iter().any(|key| key.name == "tacks");
        assert_eq!(
            ran.stdout.contains("--tacks"),
            takes_tacks,
            "{}",
            ran.stdout
        );
    }
    let iopin = run(&["iopin", "--help"], &[]).stdout;
    assert!(iopin.contains("  chance    0.5  "), "{iopin}");
    let listed = run(&["sketches", "-v"], &[]).stdout;
    assert!(listed.contains("  sequence  3    "), "{listed}");
}

/// One of a thing is said as one: `1 tick`, `1 message`, `1 client`.
#[test]
fn counts_read_as_english() {
    let (mut buzzer, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let port = addr.port().to_string();
    let ran = run(&["clock", "--port", &port, "-t", "1", "-d", "0"], &[]);
    assert!(ran.status.success(), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("[ clock ] 1 tick: 1 delivered, 0 failed"),
        "{}",
        ran.stderr
    );
    let ran = run(
        &["bench", &format!("ws://{addr}"), "-n", "1", "--warmup", "0"],
        &[],
    );
    assert!(ran.status.success(), "{}", ran.stderr);
    assert!(
        ran.stdout
            .contains("1 client, window 1, 1 message of 1 byte"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("(0 errors)"), "{}", ran.stdout);
    buzzer.signal("TERM");
    assert!(buzzer.wait().success());
    buzzer.wait_for("[ buzzer ] handled 2 messages");

    // A peer that refuses the iopin (it wants a secret the iopin does not have) fails the
    // message at once.
    let (_guarded, guarded) =
        Process::node(&["buzzer", "--port", "0"], &[("ARDUINO_SECRET", "s3cret")]);
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"iopin\"\nport = 0\nto = [\"ws://{guarded}\"]\ntimeout = 0.2\n"
    ));
    let (mut iopin, addr) = Process::node(&["iopin", "--mesh", mesh.arg()], &[]);
    let ran = run(&["send", &format!("ws://{addr}"), "1"], &[]);
    assert!(!ran.status.success());
    assert_eq!(one_line(&ran), "arduino: 1 of 1 message was not handled");
    iopin.signal("TERM");
    assert!(iopin.wait().success());
    iopin.wait_for("[ iopin ] handled 1 message; sent ");
}

/// A port in use is reported with the node that wanted it, by a single node and by `up`.
#[test]
fn a_port_in_use_names_the_node() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let ran = run(&["buzzer", "--port", &port.to_string()], &[]);
    assert!(!ran.status.success());
    let line = one_line(&ran);
    let expected = format!("arduino: node \"buzzer\": cannot listen on 127.0.0.1:{port}: ");
    assert!(line.starts_with(&expected), "{line}");
    assert!(line.contains("in use"), "{line}");

    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"porch\"\nsketch = \"buzzer\"\nport = {port}\n"
    ));
    let ran = run(&["up", "--mesh", mesh.arg()], &[]);
    assert!(!ran.status.success());
    let line = one_line(&ran);
    let expected = format!("arduino: node \"porch\": cannot listen on 127.0.0.1:{port}: ");
    assert!(line.starts_with(&expected), "{line}");
}

// 7. Stopping.

/// `arduino up` asked to stop exits within a second with status 0, even while a clock's tick
/// waits on a peer that never acknowledges.
#[test]
fn up_stops_within_a_second() {
    let mute = FakeNode::start(0);
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"clock\"\nto = [\"{}\"]\ntimeout = 60\n[node.config]\ntacks = 5\ndelay = 0\n\n\
         [[node]]\nname = \"buzzer\"\nport = 0\n",
        mute.url()
    ));
    let mut up = Process::start(&["up", "--mesh", mesh.arg()], &[]);
    up.wait_for("[ clock ] > 0");
    let asked = Instant::now();
    up.signal("TERM");
    let status = up.wait();
    assert!(status.success(), "{status:?}: {:#?}", up.log());
    // A bound on a hang, not a benchmark.
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
}

// 7. `arduino listen`.

/// An event feed standing in for a node's `GET /events`: it records the Authorization header
/// of every request, and streams one event every few milliseconds until the reader goes.
struct FakeFeed {
    addr: SocketAddr,
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
}

const FEED_EVENT: &str = r#"{"time":"2025-01-31T12:00:01.234Z","node":"iopin","event":"message","client":"127.0.0.1:1","channel":"/datafeed","text":"0"}"#;

impl FakeFeed {
    fn start() -> Self {
        use std::io::Write;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let seen = authorizations.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut authorization = None;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(value) = line.strip_prefix("Authorization: ") {
                            authorization = Some(value.trim().to_owned());
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    seen.lock().unwrap().push(authorization);
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
                    if stream.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    // A stream of events, as long as someone reads it.
                    while stream
                        .write_all(format!(": keepalive\ndata: {FEED_EVENT}\n\n").as_bytes())
                        .is_ok()
                    {
                        std::thread::sleep(Duration::from_millis(20)); // the feed's pace
                    }
                });
            }
        });
        Self {
            addr,
            authorizations,
        }
    }

    fn authorizations(&self) -> Vec<Option<String>> {
        self.authorizations.lock().unwrap().clone()
    }
}

/// The first line `process` prints on stdout, waiting for it.
fn first_stdout_line(process: &Process) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(line) = process.stdout().first() {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "nothing on stdout; log: {:?}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(5)); // poll interval
    }
}

/// `listen URL` prints each event of the node's feed as a line a person reads, `--json` as
/// the node sent it, and Ctrl-C ends it cleanly.
#[test]
fn listen_prints_the_feed_and_stops_on_ctrl_c() {
    let feed = FakeFeed::start();
    let url = format!("ws://{}", feed.addr);
    for (args, expected) in [
        (
            vec!["listen", url.as_str()],
            "12:00:01.234 [ iopin ] /datafeed < 0",
        ),
        (vec!["listen", url.as_str(), "--json"], FEED_EVENT),
    ] {
        let mut listening = Process::start(&args, &[]);
        assert_eq!(first_stdout_line(&listening), expected);
        listening.signal("INT");
        let status = listening.wait();
        assert!(status.success(), "{status:?}: {:?}", listening.log());
    }
}

/// Without names, `listen` follows every node of the mesh that has a port, and gives them the
/// mesh's secret; an address that is not the mesh's never sees it.
#[test]
fn listen_gives_the_secret_to_nodes_of_the_mesh_only() {
    let node = FakeFeed::start();
    let stranger = FakeFeed::start();
    let mesh = MeshFile::new(&format!(
        "secret = \"{SECRET}\"\n\
         [[node]]\nname = \"clock\"\nto = [\"iopin\"]\n\
         [[node]]\nname = \"iopin\"\nport = {}\n",
        node.addr.port()
    ));
    let listening = Process::start(&["listen", "--mesh", mesh.arg()], &[]);
    first_stdout_line(&listening);
    drop(listening);
    let listening = Process::start(
        &[
            "listen",
            "--mesh",
            mesh.arg(),
            &format!("http://{}", stranger.addr),
        ],
        &[],
    );
    first_stdout_line(&listening);
    drop(listening);
    assert_eq!(node.authorizations(), [Some(format!("Bearer {SECRET}"))]);
    assert_eq!(stranger.authorizations(), [None]);
}

/// `arduino listen | head -1`: the reader going away ends `listen` cleanly.
#[test]
fn listen_into_a_closed_pipe_exits_quietly() {
    let feed = FakeFeed::start();
    let started = Instant::now();
    let (mut child, _dir) = spawn(&["listen", &format!("ws://{}", feed.addr)], &[]);
    let stderr = drain(child.stderr.take().unwrap());
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("/datafeed < 0"), "{line:?}");
    drop(stdout);
    let (status, _) = finish(child, started, "listen");
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert_eq!(stderr, "");
}

/// A name that is not a node of the mesh, a node with no port, or a mesh with nothing
/// to listen to: refused at once, in one line.
#[test]
fn listen_refuses_what_it_cannot_follow() {
    let mesh = MeshFile::new("[[node]]\nname = \"clock\"\nto = [\"ws://127.0.0.1:1\"]\n");
    for (args, says) in [
        (
            vec!["listen", "attic", "--mesh", mesh.arg()],
            "no node \"attic\"",
        ),
        (
            vec!["listen", "clock", "--mesh", mesh.arg()],
            "node \"clock\" has no port to reach it at",
        ),
        (
            vec!["listen", "--mesh", mesh.arg()],
            "no node has a port to listen to",
        ),
        (vec!["listen"], "no node has a port to listen to"),
    ] {
        let ran = run(&args, &[]);
        assert!(!ran.status.success(), "{args:?}");
        assert_eq!(
            one_line(&ran).matches("arduino:").count(),
            1,
            "{}",
            ran.stderr
        );
        assert!(ran.stderr.contains(says), "{args:?}: {}", ran.stderr);
    }
}
