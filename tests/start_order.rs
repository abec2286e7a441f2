//! The order in which nodes start does not matter: a clock waits for its peers.

mod common;

use common::{MeshFile, Process, free_port};

/// The clock starts first and finds nobody; once iopin and buzzer come up, every tick is
/// delivered and the clock exits 0.
#[test]
fn a_clock_started_first_waits_for_its_peers() {
    let (iopin, buzzer) = (free_port(), free_port());
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"clock\"\nto = [\"iopin\"]\ntimeout = 4.0\n[node.config]\ntacks = 3\ndelay = 0.05\n\n\
         [[node]]\nname = \"iopin\"\nport = {iopin}\nto = [\"buzzer\"]\n\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer}\n"
    ));
    let mut clock = Process::start(&["clock", "--mesh", mesh.arg()], &[]);
    clock.wait_for("iopin not reachable yet");

    let buzzer = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    buzzer.listening();
    let iopin = Process::start(&["iopin", "--mesh", mesh.arg()], &[]);
    iopin.listening();

    assert!(clock.wait().success(), "{:#?}", clock.log());
    clock.wait_for("3 ticks: 3 delivered, 0 failed");
    assert_eq!(clock.count("< acknowledged"), 3);
}
