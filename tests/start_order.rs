//! The order in which nodes start does not matter: a node waits for a peer that was never up
//! for as long as it runs, and says so once.

mod common;

use std::time::{Duration, Instant};

use common::{MeshFile, Process, free_port};

/// A clock with a 0.3 s timeout, started long (several timeouts) before its iopin: it says
/// once that it is waiting and for whom, and once iopin and buzzer come up, every tick is
/// delivered and the clock exits 0.
#[test]
fn a_clock_started_long_before_its_peers_waits_for_them() {
    let (iopin, buzzer) = (free_port(), free_port());
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"clock\"\nto = [\"iopin\"]\ntimeout = 0.3\n[node.config]\ntacks = 3\ndelay = 0.05\n\n\
         [[node]]\nname = \"iopin\"\nport = {iopin}\nto = [\"buzzer\"]\n\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer}\n"
    ));
    // At trace level the clock notes each attempt: the twelfth comes after more than 1.8 s
    // of backoff (its shortest pauses add up to that), six times the timeout.
    let mut clock = Process::start(
        &["clock", "--mesh", mesh.arg()],
        &[("RUST_LOG", "arduino=trace")],
    );
    clock.wait_for(&format!(
        "[ clock ] waiting for iopin at ws://127.0.0.1:{iopin}: not up yet (connection refused)"
    ));
    clock.wait_for("iopin still not up after 12 attempts");

    let buzzer = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    buzzer.listening();
    let iopin = Process::start(&["iopin", "--mesh", mesh.arg()], &[]);
    iopin.listening();

    assert!(clock.wait().success(), "{:#?}", clock.log());
    clock.wait_for("3 ticks: 3 delivered, 0 failed");
    assert_eq!(clock.count("< acknowledged"), 3);
    assert_eq!(clock.count("waiting for"), 1, "{:#?}", clock.log());
    assert_eq!(clock.count("failed:"), 0, "{:#?}", clock.log());
}

/// A clock waiting for a peer that never came up still stops promptly when asked, and exits
/// 0: it was asked to stop, nothing failed.
#[test]
fn a_waiting_clock_stops_when_asked() {
    let port = free_port().to_string();
    let mut clock = Process::start(&["clock", "--port", &port, "--timeout", "0.3"], &[]);
    clock.wait_for("not up yet (connection refused)");
    let asked = Instant::now();
    clock.signal("TERM");
    let status = clock.wait();
    assert!(status.success(), "{status:?}: {:#?}", clock.log());
    // A bound on a hang, not a benchmark.
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
    clock.wait_for("stopping");
}
