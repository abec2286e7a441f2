//! The demo mesh end to end: clock -> iopin -> buzzer, as separate processes and in one.

mod common;

use common::{MeshFile, Process, free_port};

fn demo_mesh(iopin: u16, buzzer: u16) -> MeshFile {
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
port = {iopin}
to = ["buzzer"]
seed = 7
[node.config]
chance = 0.6
sequence = 3

[[node]]
name = "buzzer"
port = {buzzer}
"#
    ))
}

/// Three processes: every tick is acknowledged hop by hop, and every bit reaches the buzzer.
#[test]
fn every_tick_is_acknowledged_across_three_processes() {
    let mesh = demo_mesh(free_port(), free_port());
    let mut buzzer = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    buzzer.listening();
    let mut iopin = Process::start(&["iopin", "--mesh", mesh.arg()], &[]);
    iopin.listening();
    let mut clock = Process::start(&["clock", "--mesh", mesh.arg()], &[]);
    assert!(clock.wait().success(), "{:#?}", clock.log());
    assert_eq!(clock.count("< acknowledged"), 3);
    clock.wait_for("3 ticks: 3 delivered, 0 failed");

    iopin.signal("TERM");
    buzzer.signal("TERM");
    assert!(iopin.wait().success());
    assert!(buzzer.wait().success());
    iopin.wait_for("handled 3 messages; sent 9 to peers: 9 acknowledged, 0 failed");
    buzzer.wait_for("handled 9 messages");
    assert_eq!(buzzer.count("] < "), 9);
    assert_eq!(buzzer.count("] > "), 9);
    assert_eq!(iopin.count("] > acknowledged"), 3);
}

/// `arduino up` runs the whole mesh in one process and exits 0 when the clock is done.
#[test]
fn up_runs_the_mesh_and_stops_when_the_clock_is_done() {
    let mesh = demo_mesh(free_port(), free_port());
    let mut up = Process::start(&["up", "--mesh", mesh.arg()], &[]);
    assert!(up.wait().success(), "{:#?}", up.log());
    assert_eq!(up.count("[ clock ] < acknowledged"), 3);
    up.wait_for("[ clock ] 3 ticks: 3 delivered, 0 failed");
    up.wait_for("[ iopin ] handled 3 messages; sent 9 to peers: 9 acknowledged, 0 failed");
    up.wait_for("[ buzzer ] handled 9 messages");
}

/// The same seed draws the same bits, run after run.
#[test]
fn a_seed_makes_the_bits_repeat() {
    let draws = || {
        let mesh = demo_mesh(free_port(), free_port());
        let mut up = Process::start(&["up", "--mesh", mesh.arg()], &[]);
        assert!(up.wait().success());
        let bits: Vec<String> = up
            .log()
            .into_iter()
            .filter(|line| line.starts_with("[ iopin ] drew "))
            .collect();
        assert_eq!(bits.len(), 3, "{bits:?}");
        bits
    };
    assert_eq!(draws(), draws());
}

/// In `arduino up`, a clock that finishes early does not stop the mesh under another clock
/// that still has ticks to send.
#[test]
fn up_waits_for_every_clock() {
    let buzzer = free_port();
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"quick\"\nsketch = \"clock\"\nto = [\"buzzer\"]\n[node.config]\ntacks = 1\n\n\
         [[node]]\nname = \"slow\"\nsketch = \"clock\"\nto = [\"buzzer\"]\n[node.config]\ntacks = 6\ndelay = 0.05\n\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer}\n"
    ));
    let mut up = Process::start(&["up", "--mesh", mesh.arg()], &[]);
    assert!(up.wait().success(), "{:#?}", up.log());
    up.wait_for("[ quick ] 1 tick: 1 delivered, 0 failed");
    up.wait_for("[ slow ] 6 ticks: 6 delivered, 0 failed");
    up.wait_for("[ buzzer ] handled 7 messages");
}
