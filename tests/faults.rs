//! Delivery under faults: a peer killed and restarted, a peer that hangs, a peer that is down.
//! Each test counts what was delivered and what was reported failed.

mod common;

use common::{MeshFile, Process, arduino, free_port};

/// The clock's summary: (ticks, delivered, failed).
fn clock_summary(clock: &Process) -> (u64, u64, u64) {
    common::ticks_of(&clock.wait_for(" ticks: "))
}

/// A peer killed with SIGKILL and restarted on the same port: the clock reconnects, resends
/// what failed, and ends with every tick delivered.
#[test]
fn a_peer_killed_and_restarted_loses_nothing() {
    let (iopin_port, buzzer_port) = (free_port(), free_port());
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"clock\"\nto = [\"iopin\"]\ntimeout = 2.0\n[node.config]\ntacks = 40\ndelay = 0.05\n\n\
         [[node]]\nname = \"iopin\"\nport = {iopin_port}\nto = [\"buzzer\"]\n\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer_port}\n"
    ));
    let buzzer = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    buzzer.listening();
    let first = Process::start(&["iopin", "--mesh", mesh.arg()], &[]);
    first.listening();
    let mut clock = Process::start(&["clock", "--mesh", mesh.arg()], &[]);
    for _ in 0..5 {
        clock.wait_for("< acknowledged");
    }
    let (acked_before, _) = clock.wait_for_after("< acknowledged", 0);
    first.signal("KILL");
    drop(first);
    clock.wait_for_after("link to iopin down", acked_before);

    let second = Process::start(&["iopin", "--mesh", mesh.arg()], &[]);
    second.listening();
    assert!(clock.wait().success(), "{:#?}", clock.log());
    assert_eq!(clock_summary(&clock), (40, 40, 0), "{:#?}", clock.log());
    assert_eq!(clock.count("< acknowledged"), 40);
    second.signal("TERM");
    second.wait_for("handled ");
    assert!(
        second.count("tick ") > 0,
        "the restarted iopin served no tick"
    );
}

/// A peer that hangs (SIGSTOP) fails messages by deadline, and the reason travels upstream in
/// the relay's `error: ` ack; once it resumes (SIGCONT), ticks are delivered again.
#[test]
fn a_hanging_peer_is_reported_upstream_and_recovers() {
    let (iopin_port, buzzer_port) = (free_port(), free_port());
    // The clock waits longer than the iopin, so the iopin's own error reaches it first; no
    // retries, so every failed tick is counted as failed.
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"clock\"\nto = [\"iopin\"]\ntimeout = 3.0\n[node.config]\ntacks = 30\ndelay = 0.05\nretries = 0\n\n\
         [[node]]\nname = \"iopin\"\nport = {iopin_port}\nto = [\"buzzer\"]\ntimeout = 0.5\n\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer_port}\n"
    ));
    let buzzer = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    buzzer.listening();
    let iopin = Process::start(&["iopin", "--mesh", mesh.arg()], &[]);
    iopin.listening();
    let mut clock = Process::start(&["clock", "--mesh", mesh.arg()], &[]);
    for _ in 0..3 {
        clock.wait_for("< acknowledged");
    }
    buzzer.signal("STOP");
    let (failed_at, line) =
        clock.wait_for_after("message to iopin failed: iopin answered: buzzer", 0);
    assert!(
        line.contains("did not acknowledge within 0.5s") || line.contains("timed out connecting"),
        "{line}"
    );
    buzzer.signal("CONT");
    clock.wait_for_after("< acknowledged", failed_at);

    let status = clock.wait();
    let (ticks, delivered, failed) = clock_summary(&clock);
    assert_eq!(ticks, 30);
    assert!(failed >= 1, "{:#?}", clock.log());
    assert_eq!(delivered + failed, 30);
    assert_eq!(clock.count("< acknowledged") as u64, delivered);
    assert_eq!(clock.count("message to iopin failed") as u64, failed);
    // Failed ticks make the clock's exit status non-zero, with one line saying how many.
    assert!(!status.success());
    clock.wait_for(&format!("clock: {failed} of 30 ticks were not delivered"));
}

/// When a relay cannot reach a peer that went away, the sender gets an `error: ` ack naming
/// the peer and why, and `arduino send` exits non-zero.
#[test]
fn an_unreachable_peer_is_named_in_the_ack() {
    let buzzer_port = free_port();
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"iopin\"\nport = 0\nto = [\"buzzer\"]\ntimeout = 0.4\n\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer_port}\n"
    ));
    let buzzer = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    buzzer.listening();
    let (iopin, addr) = Process::node(&["iopin", "--mesh", mesh.arg()], &[]);
    let ran = arduino(&["send", &format!("ws://{addr}"), "1"], &[]);
    assert_eq!(ran.stdout.trim(), "acknowledged", "{}", ran.stderr);
    buzzer.signal("KILL");
    drop(buzzer);
    // The idle link's next keepalive round notices.
    iopin.wait_for("link to buzzer down");

    let ran = arduino(&["send", &format!("ws://{addr}"), "1"], &[]);
    assert!(!ran.ok);
    let stdout = ran.stdout;
    assert_eq!(
        stdout.trim(),
        format!(
            "error: buzzer is unreachable at ws://127.0.0.1:{buzzer_port}/datafeed: connection refused (after {} attempts)",
            stdout
                .rsplit("after ")
                .next()
                .and_then(|s| s.split(' ').next())
                .unwrap_or("?")
        ),
    );
    iopin.wait_for("message to buzzer failed: buzzer is unreachable");
}
