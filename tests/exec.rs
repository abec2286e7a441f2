//! Programs as sketches (`sketch = "exec"`): real Python programs behind real nodes, the
//! demo with the Python iopin, and programs that crash, hang, print garbage or ignore SIGTERM.

mod common;

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use common::{MeshFile, PATIENCE, Process, free_port, ws};

/// The shipped Python iopin.
fn python_iopin() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/iopin.py")
        .to_string_lossy()
        .into_owned()
}

/// A node `pin` running `script` (Python, written next to the mesh file), with `node` lines
/// added to its mesh entry; returns it with its address and the mesh (which holds the files).
fn exec_node(script: &str, node: &str) -> (Process, SocketAddr, MeshFile) {
    let mesh = MeshFile::new("");
    let path = mesh.dir.path().join("sketch.py");
    std::fs::write(&path, script).unwrap();
    std::fs::write(
        &mesh.path,
        format!(
            "[[node]]\nname = \"pin\"\nsketch = \"exec\"\n{node}\n[node.config]\n\
             command = [\"python3\", {:?}]\n",
            path.to_str().unwrap()
        ),
    )
    .unwrap();
    let (process, addr) = Process::node(
        &["exec", "--mesh", mesh.arg(), "--name", "pin", "--port", "0"],
        &[],
    );
    (process, addr, mesh)
}

/// A program that echoes, and misbehaves on request: `crash`, `hang`, `garbage`. It prints
/// without flushing: the runtime sets PYTHONUNBUFFERED, so its answers still come at once.
const MISBEHAVING: &str = r#"
import json, sys, time
print("program up", file=sys.stderr)
for line in sys.stdin:
    request = json.loads(line)
    if "id" not in request:
        continue
    text = request.get("text")
    if text == "crash":
        raise RuntimeError("crashed on purpose")
    if text == "hang":
        print("hanging", file=sys.stderr, flush=True)
        time.sleep(3600)
    if text == "garbage":
        print("hello, this is not JSON")
        continue
    print(json.dumps({"id": request["id"], "ack": "echo " + str(text)}))
"#;

/// Each way of failing: the message gets an `error: ` ack saying why, the node stays up, and
/// the next message is served by the program started again.
async fn fails_then_recovers(trigger: &str, reason: &str) {
    let (node, addr, _mesh) = exec_node(MISBEHAVING, "timeout = 1");
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut client, "a").await, "echo a");
    let ack = ws::ask(&mut client, trigger).await;
    assert!(ack.starts_with("error: "), "{ack}");
    assert!(ack.contains(reason), "{ack}");
    assert_eq!(ws::ask(&mut client, "b").await, "echo b");
    let (first, _) = node.wait_for_after("[ pin ] program up", 0);
    node.wait_for_after("[ pin ] program up", first + 1);
    node.wait_for(&format!("[ pin ] warning: request 2 failed: {}", &ack[7..]));
    node.signal("TERM");
}

/// A program that crashes mid-message: the message fails with its exit status, the traceback
/// shows in the node's log, and the next message is served after a restart.
#[tokio::test]
async fn a_crash_fails_the_message_and_the_program_restarts() {
    fails_then_recovers("crash", "the program exited with status 1 before answering").await;
}

/// A program that hangs past the node's timeout is killed and started again.
#[tokio::test]
async fn a_hang_fails_the_message_after_the_timeout_and_restarts() {
    fails_then_recovers("hang", "the program did not answer within 1s").await;
}

/// A program that prints something other than a JSON answer fails the message, is logged
/// once, and is started again.
#[tokio::test]
async fn garbage_on_stdout_fails_the_message_and_restarts() {
    fails_then_recovers(
        "garbage",
        "the program printed a line that is not a JSON answer",
    )
    .await;
}

/// The crash's traceback (the program's stderr) shows in the node's log, escaped.
#[tokio::test]
async fn the_programs_stderr_goes_to_the_nodes_log() {
    let script = format!(
        "import sys\nprint('ansi \\x1b[31m red', file=sys.stderr, flush=True)\n{MISBEHAVING}"
    );
    let (node, addr, _mesh) = exec_node(&script, "");
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    ws::ask(&mut client, "crash").await;
    node.wait_for("[ pin ] ansi \\u{1b}[31m red");
    node.wait_for("[ pin ] RuntimeError: crashed on purpose");
    assert_eq!(node.count("[ pin ] garbage"), 0);
    node.signal("TERM");
}

/// A program that exits at once on its first start: the message fails saying so; the next
/// one is served by the second start.
#[tokio::test]
async fn a_program_that_exits_at_once_is_started_again() {
    let script = format!(
        "import os, sys\nmarker = os.path.join(os.path.dirname(__file__), 'started')\n\
         if not os.path.exists(marker):\n    open(marker, 'w').close()\n    sys.exit(4)\n\
         {MISBEHAVING}"
    );
    let (node, addr, _mesh) = exec_node(&script, "");
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(
        ws::ask(&mut client, "a").await,
        "error: the program exited with status 4 before answering"
    );
    assert_eq!(ws::ask(&mut client, "b").await, "echo b");
    node.signal("TERM");
}

/// A program that always fails is started again with growing waits, not once per message:
/// messages that come while a restart is due fail at once, saying so.
#[tokio::test]
async fn restarts_back_off() {
    let script = "import sys\nprint('program up', file=sys.stderr, flush=True)\nsys.exit(1)\n";
    let (node, addr, _mesh) = exec_node(script, "");
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    let mut restarting = 0;
    for i in 0..20 {
        let ack = ws::ask(&mut client, &i.to_string()).await;
        assert!(ack.starts_with("error: the program "), "{ack}");
        if ack.contains("is being restarted") {
            restarting += 1;
        }
    }
    let starts = node.count("[ pin ] started python3");
    assert!(restarting > 0, "{:#?}", node.log());
    assert_eq!(starts + restarting, 20, "{:#?}", node.log());
    node.signal("TERM");
}

/// SIGTERM stops the node within about a second even when its program ignores SIGTERM and
/// hangs on the message in hand: the program is killed, not left behind.
#[tokio::test]
async fn sigterm_stops_the_node_and_kills_a_program_that_ignores_it() {
    let script = format!(
        "import os, signal, sys\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
         print('pid', os.getpid(), file=sys.stderr, flush=True)\n{MISBEHAVING}"
    );
    let (mut node, addr, _mesh) = exec_node(&script, "timeout = 30");
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut client, "a").await, "echo a");
    let line = node.wait_for("[ pin ] pid ");
    let pid: u32 = line.rsplit(' ').next().unwrap().parse().unwrap();
    use futures_util::SinkExt;
    client
        .send(tokio_tungstenite::tungstenite::Message::text("hang"))
        .await
        .unwrap();
    node.wait_for("[ pin ] hanging");

    let asked = Instant::now();
    node.signal("TERM");
    let status = node.wait();
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        asked.elapsed()
    );
    node.wait_for("[ pin ] warning: the program ignored its closed stdin and SIGTERM");
    let deadline = Instant::now() + PATIENCE;
    while alive(pid) {
        assert!(Instant::now() < deadline, "program {pid} is still running");
        std::thread::sleep(Duration::from_millis(10)); // poll interval
    }
}

/// Whether process `pid` runs (a zombie, dead but not yet reaped, does not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A well-behaved program exits when its stdin closes: the node stops without a SIGKILL.
#[tokio::test]
async fn a_program_that_reads_to_the_end_stops_when_stdin_closes() {
    let (mut node, addr, _mesh) = exec_node(MISBEHAVING, "");
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut client, "a").await, "echo a");
    node.signal("TERM");
    assert!(node.wait().success());
    assert_eq!(node.count("killing it"), 0, "{:#?}", node.log());
}

fn python_demo(iopin: u16, buzzer: u16, command: &str) -> MeshFile {
    MeshFile::new(&format!(
        r#"
[[node]]
name = "clock"
to = ["iopin"]
[node.config]
tacks = 3
delay = 0.05

[[node]]
name = "iopin"
sketch = "exec"
port = {iopin}
to = ["buzzer"]
seed = 7
[node.config]
command = ["python3", "-u", {command:?}]
settings = {{ chance = 0.6, sequence = 3 }}

[[node]]
name = "buzzer"
port = {buzzer}
"#
    ))
}

/// The demo with the Python iopin in the Rust one's place: every tick is delivered with the
/// same acks, and every bit reaches the buzzer.
#[test]
fn the_demo_runs_with_the_python_iopin() {
    let mesh = python_demo(free_port(), free_port(), &python_iopin());
    let mut up = Process::start(&["up", "--mesh", mesh.arg()], &[]);
    assert!(up.wait().success(), "{:#?}", up.log());
    assert_eq!(up.count("[ clock ] < acknowledged"), 3, "{:#?}", up.log());
    up.wait_for("[ clock ] 3 ticks: 3 delivered, 0 failed");
    up.wait_for("[ iopin ] handled 3 messages; sent 9 to peers: 9 acknowledged, 0 failed");
    up.wait_for("[ buzzer ] handled 9 messages");
    assert_eq!(up.count("[ iopin ] tick "), 3, "{:#?}", up.log());
}

/// With its peer down, the Python iopin acknowledges with the same `error: ` as the Rust one,
/// naming the peer.
#[tokio::test]
async fn the_python_iopin_fails_like_the_rust_one() {
    let dead = free_port();
    let mesh = MeshFile::new(&format!(
        r#"
[[node]]
name = "rust"
sketch = "iopin"
to = ["buzzer"]
timeout = 1
[node.config]
sequence = 2

[[node]]
name = "python"
sketch = "exec"
to = ["buzzer"]
timeout = 1
[node.config]
command = ["python3", "-u", {:?}]
settings = {{ sequence = 2 }}

[[node]]
name = "buzzer"
port = {dead}
"#,
        python_iopin()
    ));
    let port = dead.to_string();
    let mut acks = Vec::new();
    for (name, sketch) in [("rust", "iopin"), ("python", "exec")] {
        // A peer that was never up is waited for: this one is up once, then goes away.
        let (buzzer, _) = Process::node(&["buzzer", "--mesh", mesh.arg(), "--port", &port], &[]);
        let (node, addr) = Process::node(
            &[sketch, "--mesh", mesh.arg(), "--name", name, "--port", "0"],
            &[],
        );
        let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
        assert_eq!(ws::ask(&mut client, "0").await, "acknowledged");
        drop(buzzer); // killed, and waited for
        let ack = ws::ask(&mut client, "1").await;
        // How many attempts it took is timing, not behaviour.
        acks.push(ack.split(" (after").next().unwrap_or_default().to_owned());
        node.signal("TERM");
    }
    assert!(
        acks[0].starts_with("error: buzzer is unreachable at ws://127.0.0.1:"),
        "{acks:?}"
    );
    assert_eq!(acks[0], acks[1]);
}
