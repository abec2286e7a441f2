//! `arduino send`: messages out, each ack printed on its own line.

mod common;

use std::process::Command;

use common::{MeshFile, Process, binary, free_port};

/// Each message's ack is printed on stdout, one line each, in order.
#[test]
fn send_prints_each_ack() {
    let (_buzzer, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let output = Command::new(binary())
        .args(["send", &format!("ws://{addr}"), "1", "0", "1"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "buzz buzz buzz\n...\nbuzz buzz buzz\n"
    );
}

/// A node name is looked up in the mesh file.
#[test]
fn send_finds_a_node_by_name() {
    let port = free_port();
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"porch\"\nsketch = \"buzzer\"\nport = {port}\n[node.config]\nsound = \"ding\"\n"
    ));
    let (_buzzer, _) = Process::node(&["buzzer", "--name", "porch", "--mesh", mesh.arg()], &[]);
    let output = Command::new(binary())
        .args(["send", "porch", "1", "--mesh", mesh.arg()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ding\n");

    let output = Command::new(binary())
        .args(["send", "attic", "1", "--mesh", mesh.arg()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no node \"attic\" (nodes that listen: porch"),
        "{stderr}"
    );
}

/// A node that is not there: a non-zero exit and one clear line.
#[test]
fn send_to_nobody_fails_clearly() {
    let port = free_port();
    let output = Command::new(binary())
        .args(["send", &format!("ws://127.0.0.1:{port}"), "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        format!("arduino: cannot reach ws://127.0.0.1:{port}/datafeed: connection refused")
    );
}
