//! `arduino send`: messages out, each ack printed on its own line.

mod common;

use common::{MeshFile, Process, arduino, free_port};

/// Each message's ack is printed on stdout, one line each, in order.
#[test]
fn send_prints_each_ack() {
    let (_buzzer, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let ran = arduino(&["send", &format!("ws://{addr}"), "1", "0", "1"], &[]);
    assert!(ran.ok, "{}", ran.stderr);
    assert_eq!(ran.stdout, "buzz buzz buzz\n...\nbuzz buzz buzz\n");
}

/// A node name is looked up in the mesh file.
#[test]
fn send_finds_a_node_by_name() {
    let port = free_port();
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"porch\"\nsketch = \"buzzer\"\nport = {port}\n[node.config]\nsound = \"ding\"\n"
    ));
    let (_buzzer, _) = Process::node(&["buzzer", "--name", "porch", "--mesh", mesh.arg()], &[]);
    let ran = arduino(&["send", "porch", "1", "--mesh", mesh.arg()], &[]);
    assert!(ran.ok, "{}", ran.stderr);
    assert_eq!(ran.stdout, "ding\n");

    let ran = arduino(&["send", "attic", "1", "--mesh", mesh.arg()], &[]);
    assert!(!ran.ok);
    assert!(
        ran.stderr
            .contains("no node \"attic\" (nodes that listen: porch"),
        "{}",
        ran.stderr
    );
}

/// A node that is not there: a non-zero exit and one clear line.
#[test]
fn send_to_nobody_fails_clearly() {
    let port = free_port();
    let ran = arduino(&["send", &format!("ws://127.0.0.1:{port}"), "1"], &[]);
    assert!(!ran.ok);
    assert_eq!(
        ran.stderr.trim(),
        format!("arduino: cannot reach ws://127.0.0.1:{port}/datafeed: connection refused")
    );
}

/// Run `arduino send ARGS` with `input` on its stdin.
fn send_with_stdin(args: &[&str], input: &[u8]) -> common::Ran {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(common::binary())
        .arg("send")
        .args(args)
        .env_remove("ARDUINO_MESH")
        .env_remove("ARDUINO_SECRET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    common::Ran {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// With no message given, each line of stdin is a message: `seq 3 | arduino send NODE`.
#[test]
fn send_reads_messages_from_stdin() {
    let (_buzzer, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let url = format!("ws://{addr}");
    let ran = send_with_stdin(&[&url], b"1\n0\n1\n");
    assert!(ran.ok, "{}", ran.stderr);
    assert_eq!(ran.stdout, "buzz buzz buzz\n...\nbuzz buzz buzz\n");
    // Nothing on stdin: nothing sent, nothing failed.
    let ran = send_with_stdin(&[&url], b"");
    assert!(ran.ok, "{}", ran.stderr);
    assert_eq!(ran.stdout, "");
}

/// A line of stdin that is not text stops `send`, with one line saying which.
#[test]
fn send_refuses_a_line_that_is_not_text() {
    let (_buzzer, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let ran = send_with_stdin(&[&format!("ws://{addr}")], b"1\n\xff\n0\n");
    assert!(!ran.ok);
    assert_eq!(ran.stdout, "buzz buzz buzz\n");
    assert_eq!(
        ran.stderr.trim(),
        "arduino: stdin: line 2 is not valid UTF-8"
    );
}

/// With -v, each message is printed beside its ack and the round trip time.
#[test]
fn send_verbose_shows_message_ack_and_time() {
    let (_buzzer, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let url = format!("ws://{addr}");
    for ran in [
        arduino(&["send", "-v", &url, "1", "0"], &[]),
        send_with_stdin(&["-v", &url], b"1\n0\n"),
    ] {
        assert!(ran.ok, "{}", ran.stderr);
        let lines: Vec<&str> = ran.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}", ran.stdout);
        for (line, expected) in lines.iter().zip(["1 -> buzz buzz buzz (", "0 -> ... ("]) {
            assert!(line.starts_with(expected), "{line:?}");
            assert!(line.ends_with(" us)") || line.ends_with(" ms)"), "{line:?}");
        }
    }
}
