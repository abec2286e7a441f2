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
