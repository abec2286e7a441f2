//! `arduino bench`: every message is counted, acknowledged or not.

mod common;

use common::{MeshFile, Process, arduino, free_port};

fn bench(args: &[&str]) -> (bool, String, String) {
    let ran = arduino(&[&["bench"], args].concat(), &[]);
    (ran.ok, ran.stdout, ran.stderr)
}

/// Many clients with messages in flight: every message acknowledged, counted, and figures.
#[test]
fn bench_counts_every_ack() {
    let (node, addr) = Process::node(&["buzzer", "--port", "0", "-q"], &[]);
    let url = format!("ws://{addr}");
    let (ok, stdout, stderr) = bench(&[
        &url,
        "-n",
        "600",
        "--clients",
        "6",
        "--window",
        "4",
        "--warmup",
        "10",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("acknowledged 600 of 600 (0 errors)"),
        "{stdout}"
    );
    assert!(stdout.contains("round trip: p50 "), "{stdout}");
    let mut node = node;
    node.signal("TERM");
    node.wait();
    // 600 measured and 6 x 10 warm-up messages, each handled once.
    node.wait_for("handled 660 messages");
}

/// Error acks are counted as errors, and make the exit status non-zero.
#[test]
fn bench_counts_error_acks() {
    let port = free_port();
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"iopin\"\nport = 0\nto = [\"buzzer\"]\ntimeout = 0.2\n\
         [[node]]\nname = \"buzzer\"\nport = {port}\n"
    ));
    // A peer that was never up is waited for; one that went away fails each message.
    let buzzer = Process::node(&["buzzer", "--mesh", mesh.arg(), "-q"], &[]);
    let (_iopin, addr) = Process::node(&["iopin", "--mesh", mesh.arg(), "-q"], &[]);
    let url = format!("ws://{addr}");
    assert!(arduino(&["send", &url, "1"], &[]).ok);
    drop(buzzer);
    let (ok, stdout, _) = bench(&[&url, "-n", "3", "--warmup", "0"]);
    assert!(!ok);
    assert!(
        stdout.contains("acknowledged 0 of 3 (3 errors)"),
        "{stdout}"
    );
}
