//! Nodes of the Python asyncio program this project grew from join a mesh of ours, and ours
//! theirs: `tests/python/node.py` (Python's `websockets`) beside the real binary.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use common::{MeshFile, Process};

/// A Python node, killed when dropped.
struct Python(Child);

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python(args: &[&str]) -> (Python, BufReader<std::process::ChildStdout>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/node.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (the tests need Python 3 with `pip install websockets`)");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (Python(child), stdout)
}

/// Our iopin streams its bits to a Python buzzer, and gets one ack for each.
#[test]
fn our_iopin_streams_to_a_python_buzzer() {
    let (_buzzer, mut out) = python(&["buzzer", "--port", "0"]);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|_| line.contains("serving on"))
        .unwrap_or_else(|| {
            panic!("the Python buzzer did not start (is `websockets` installed?): {line:?}")
        })
        .to_owned();
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"iopin\"\nport = 0\nto = [\"ws://{addr}\"]\n[node.config]\nsequence = 4\n"
    ));
    let (iopin, iopin_addr) = Process::node(&["iopin", "--mesh", mesh.arg()], &[]);
    let send = std::process::Command::new(common::binary())
        .args(["send", &format!("ws://{iopin_addr}"), "0", "1"])
        .output()
        .unwrap();
    assert!(
        send.status.success(),
        "{}",
        String::from_utf8_lossy(&send.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&send.stdout),
        "acknowledged\nacknowledged\n"
    );

    // The Python buzzer saw all eight bits, on the iopin's channel.
    let mut seen = 0;
    while seen < 8 {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the Python buzzer stopped early"
        );
        if line.contains("/datafeed") {
            seen += 1;
        }
    }
    drop(iopin);
}

/// A Python clock drives our buzzer and gets our acks.
#[test]
fn a_python_clock_drives_our_buzzer() {
    let (_buzzer, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let port = addr.port().to_string();
    let (mut clock, out) = python(&["clock", "--port", &port, "-t", "3"]);
    let acks: Vec<String> = out
        .lines()
        .map(Result::unwrap)
        .filter(|line| line.starts_with("[ clock ] <"))
        .collect();
    assert!(clock.0.wait().unwrap().success());
    assert_eq!(
        acks,
        [
            "[ clock ] < ...",
            "[ clock ] < buzz buzz buzz",
            "[ clock ] < ..."
        ]
    );
}
