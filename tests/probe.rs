//! Hostile clients and careless programs against the surfaces beside the wire: the HTTP a
//! node answers, `arduino view`, `arduino listen`, `arduino send`, exec programs and shaping.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{MeshFile, PATIENCE, Process, ws};

/// A node `pin` running the Python program `script` as its sketch; returns it with its
/// address and the mesh (which holds the files).
fn exec_node(script: &str) -> (Process, SocketAddr, MeshFile) {
    let mesh = MeshFile::new("");
    let path = mesh.dir.path().join("sketch.py");
    std::fs::write(&path, script).unwrap();
    std::fs::write(
        &mesh.path,
        format!(
            "[[node]]\nname = \"pin\"\nsketch = \"exec\"\ntimeout = 2\n[node.config]\n\
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

/// Whether process `pid` still runs (a zombie waiting for its reaper does not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Wait until process `pid` is gone; false if it still runs after the patience.
fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while running(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10)); // poll interval
    }
    true
}

/// A program that starts a child of its own (detached from its pipes), says its pid, answers.
const FORKER: &str = r#"
import json, subprocess, sys
child = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("child", child.pid, file=sys.stderr, flush=True)
for line in sys.stdin:
    request = json.loads(line)
    if "id" in request:
        print(json.dumps({"id": request["id"], "ack": "ok"}), flush=True)
        if request.get("text") == "crash":
            sys.exit(3)
"#;

fn child_pid(node: &Process, from: usize) -> (usize, u32) {
    let (at, line) = node.wait_for_after("[ pin ] child ", from);
    let pid = line.rsplit(' ').next().unwrap().trim().parse().unwrap();
    (at, pid)
}

/// Children an exec program started do not outlive it: not its restart, nor the node's stop.
#[tokio::test]
async fn an_exec_programs_children_go_with_it() {
    let (mut node, addr, _mesh) = exec_node(FORKER);
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut client, "crash").await, "ok");
    let (at, first) = child_pid(&node, 0);
    // The program exited after its answer: the next message restarts it.
    let ack = ws::ask(&mut client, "a").await;
    assert!(ack.starts_with("error: "), "{ack}");
    assert_eq!(ws::ask(&mut client, "b").await, "ok");
    let (_, second) = child_pid(&node, at + 1);
    assert!(gone(first), "the first program's child {first} outlived it");
    node.signal("TERM");
    assert!(node.wait().success());
    assert!(
        gone(second),
        "the program's child {second} outlived the node"
    );
}

/// A fake node whose `/events` answers, then sends `line` `count` times and falls silent,
/// with the connection open; returns its address.
fn fake_feed(line: Vec<u8>, count: usize) -> SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let line = std::sync::Arc::new(line);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let line = line.clone();
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ =
                    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
                for _ in 0..count {
                    if stream.write_all(&line).is_err() {
                        return;
                    }
                }
                let _ = stream.read(&mut request);
            });
        }
    });
    addr
}

/// A `data:` line of `size` bytes of JSON text.
fn data_line(size: usize) -> Vec<u8> {
    let mut line = br#"data: {"node":"x","event":"message","text":""#.to_vec();
    line.extend(std::iter::repeat_n(b'A', size));
    line.extend_from_slice(b"\"}\n");
    line
}

/// A fake node whose feed sends `data:` lines of 64 KiB, 64 MiB in all, with no blank line
/// to end the event.
fn endless_event() -> SocketAddr {
    fake_feed(data_line(64 * 1024), 1024)
}

/// `listen` holds at most one bounded event of a node's feed: an event that never ends is
/// given up on, in words, rather than gathered without end.
#[test]
fn listen_gives_up_on_an_event_without_end() {
    let addr = endless_event();
    let listening = Process::start(&["listen", &format!("ws://{addr}")], &[]);
    let deadline = Instant::now() + PATIENCE;
    while !listening
        .stdout()
        .iter()
        .any(|line| line.contains("too long"))
    {
        assert!(
            Instant::now() < deadline,
            "listen never gave up on the endless event; stdout:\n{}\nstderr:\n{}",
            listening.stdout().join("\n"),
            listening.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(10)); // poll interval
    }
}

/// `arduino send` reads a line of stdin no further than a message may go: a line without
/// end is refused in words, at once, rather than read into memory until it runs out.
#[test]
fn send_refuses_a_stdin_line_over_the_message_limit() {
    use std::{
        io::Write,
        process::{Command, Stdio},
    };
    let (_node, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let mut send = Command::new(common::binary())
        .args(["send", &format!("ws://{addr}")])
        .current_dir(std::env::temp_dir())
        .env_remove("ARDUINO_MESH")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = send.stdin.take().unwrap();
    // 64 MiB without a newline, then stdin stays open: only a bounded read ends this.
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'A'; 1 << 20];
        for _ in 0..64 {
            if stdin.write_all(&chunk).is_err() {
                return;
            }
        }
        std::thread::park_timeout(PATIENCE);
    });
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = send.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = send.kill();
            panic!("send did not give up on a line without end");
        }
        std::thread::sleep(Duration::from_millis(10)); // poll interval
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut send.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("stdin: line 1 is over 1048576 bytes"),
        "{stderr}"
    );
    writer.thread().unpark();
}

/// `GET path` from the HTTP server at `addr`: the whole answer.
fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// `arduino view` keeps events of a bounded size, the size a node's events have: a feed of
/// huge events (which browsers that fall behind would keep in the view's backlog, 8192 of
/// them) is given up on, in words, as a broken feed.
#[test]
fn view_gives_up_on_huge_events() {
    let mut event = data_line(64 * 1024);
    event.push(b'\n');
    let feed = fake_feed(event, 256);
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"huge\"\nsketch = \"buzzer\"\nport = {}\n",
        feed.port()
    ));
    let addr = format!("127.0.0.1:{}", common::free_port());
    let view = Process::start(&["view", "--mesh", mesh.arg(), &addr], &[]);
    view.wait_for(&format!("view at http://{addr}/"));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = get(&addr, "/mesh.json");
        if answer.contains("too long") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the view never gave up on the huge events: {answer}"
        );
        std::thread::sleep(Duration::from_millis(10)); // poll interval
    }
}

/// A program that writes to stderr without end once it has answered its first message.
const STDERR_FLOOD: &str = r#"
import json, sys, threading
def flood():
    while True:
        sys.stderr.write("spam\n")
started = False
for line in sys.stdin:
    request = json.loads(line)
    if "id" in request:
        print(json.dumps({"id": request["id"], "ack": "ok"}), flush=True)
        if not started:
            started = True
            threading.Thread(target=flood, daemon=True).start()
"#;

/// An exec program's stderr reaches the node's log at a bounded rate: a program that writes
/// without end has the rest counted, not logged (logging it all starved the nodes of the
/// process: a buzzer beside it fell from 45,000 to 470 acked messages a second).
#[tokio::test]
async fn an_exec_programs_stderr_is_logged_at_a_bounded_rate() {
    let (node, addr, _mesh) = exec_node(STDERR_FLOOD);
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut client, "a").await, "ok");
    let (first, _) = node.wait_for_after("lines of its stderr not shown", 0);
    let spam = node.log()[..first]
        .iter()
        .filter(|line| line.contains("[ pin ] spam"))
        .count();
    assert!(
        spam <= 1000,
        "{spam} lines of stderr logged in its first second"
    );
    // The program keeps writing; the node still answers.
    assert_eq!(ws::ask(&mut client, "b").await, "ok");
}

/// A program whose child keeps its pipes open (as a shell's background job does).
const LEAVES_A_CHILD: &str = r#"
import json, subprocess, sys
subprocess.Popen(["sleep", "600"])
for line in sys.stdin:
    request = json.loads(line)
    if "id" in request:
        print(json.dumps({"id": request["id"], "ack": "ok"}), flush=True)
        if request.get("text") == "crash":
            sys.exit(3)
"#;

/// A program that exits is known to have, at once, even when a process it started still
/// holds its stdout: the next message fails with how it exited, not after the timeout.
#[tokio::test]
async fn an_exec_program_that_exits_is_seen_to_even_if_its_child_holds_its_pipes() {
    let (mut node, addr, _mesh) = exec_node(LEAVES_A_CHILD);
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut client, "crash").await, "ok");
    let ack = ws::ask(&mut client, "a").await;
    assert!(ack.contains("exited with status 3"), "{ack}");
    assert_eq!(ws::ask(&mut client, "b").await, "ok");
    // Stopped in order, so that the children go with the program.
    node.signal("TERM");
    assert!(node.wait().success());
}

/// A value past its type's edge in `[node.input]` is reported with the range it must be in,
/// not as something it is (a whole number, 0 or more).
#[test]
fn check_reports_a_burst_past_its_types_edge_in_range() {
    let mesh = MeshFile::new(
        "[[node]]\nname = \"b\"\nsketch = \"buzzer\"\nport = 1\n[node.input]\n\
         throttle = 10\nburst = 4294967296\n",
    );
    let ran = common::arduino(&["check", "--mesh", mesh.arg()], &[]);
    assert!(!ran.ok);
    assert!(ran.stderr.contains("0 to 4294967295"), "{}", ran.stderr);
}

/// `/events` listeners are capped per node (16): one more is told 503 in words, a websocket
/// client is still served, and a listener that leaves makes room for another.
#[tokio::test]
async fn event_listeners_are_capped_and_clients_still_served() {
    use std::io::{Read, Write};
    let (node, addr) = Process::node(&["buzzer", "--port", "0", "-q"], &[]);
    let listen = || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(stream, "GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        (stream, String::from_utf8_lossy(&head).into_owned())
    };
    let mut listeners: Vec<_> = (0..16).map(|_| listen()).collect();
    assert!(listeners.iter().all(|(_, head)| head == "HTTP/1.1 200"));
    let (mut refused, head) = listen();
    assert_eq!(head, "HTTP/1.1 503");
    let mut rest = String::new();
    let _ = refused.read_to_string(&mut rest);
    assert!(rest.contains("16 event listeners already"), "{rest}");
    node.wait_for("HTTP 503 on GET /events: 16 listeners already");

    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut client, "1").await, "buzz buzz buzz");

    drop(listeners.pop());
    // The node notices the listener gone when it next writes to it, or at once on EOF.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_stream, head) = listen();
        if head == "HTTP/1.1 200" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no room made: {head}");
        std::thread::sleep(std::time::Duration::from_millis(20)); // polling for the freed place
    }
}
