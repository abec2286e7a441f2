//! What a node says when it cannot start: one clear line on stderr and a non-zero exit.

mod common;

use common::{MeshFile, Process, arduino};

/// Runs `arduino ARGS`, expecting failure; returns stderr.
fn fails(args: &[&str]) -> String {
    let ran = arduino(args, &[]);
    assert!(!ran.ok, "`arduino {}` succeeded", args.join(" "));
    ran.stderr
}

/// A port in use: the address is named, and the exit is non-zero.
#[test]
fn a_port_in_use_is_named() {
    let (_first, addr) = Process::node(&["buzzer", "--port", "0"], &[]);
    let port = addr.port().to_string();
    let stderr = fails(&["buzzer", "--port", &port]);
    assert_eq!(
        stderr.trim(),
        format!("arduino: node \"buzzer\": cannot listen on 127.0.0.1:{port}: in use")
    );
}

/// Mistakes in the mesh file are reported with the file (and the line and column, when the
/// mistake is at one place) and the node, before anything starts.
#[test]
fn a_wrong_mesh_file_is_reported_with_file_and_node() {
    let cases = [
        ("[[node]]\nname = \"buzzer\nport = 1\n", "mesh.toml:2:"),
        (
            "[[node]]\nname = \"buzzer\"\nprot = 9001\n",
            "mesh.toml:3:1: unknown key `prot` in node \"buzzer\" (did you mean `port`?)",
        ),
        (
            "[[node]]\nname = \"buzzer\"\nport = 9001\n[[node]]\nname = \"buzzer\"\nport = 9002\n",
            "node \"buzzer\": the name is used by another node too",
        ),
        (
            "[[node]]\nname = \"buzzer\"\nport = 9001\nto = [\"bell\"]\n",
            "node \"buzzer\": `to` names \"bell\", which is not a node of this mesh",
        ),
        (
            "[[node]]\nname = \"buzzer\"\nport = 9001\n[node.config]\nsond = \"x\"\n",
            "node \"buzzer\": config key `sond` is not known to sketch buzzer (did you mean `sound`?)",
        ),
        (
            "[[node]]\nname = \"buzzer\"\nport = 9001\n[[node]]\nname = \"iopin\"\nport = 9002\n[node.config]\nchance = \"high\"\n",
            "node \"iopin\": config key `chance` must be a number, not \"high\"",
        ),
    ];
    for (text, expected) in cases {
        let mesh = MeshFile::new(text);
        let stderr = fails(&["buzzer", "--mesh", mesh.arg()]);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with(&format!("arduino: {}:", mesh.arg())),
            "{stderr}"
        );
        assert!(
            lines[0].contains(expected),
            "expected {expected:?} in {stderr}"
        );
    }
    let stderr = fails(&["buzzer", "--mesh", "/nonexistent/mesh.toml"]);
    assert!(
        stderr.contains("/nonexistent/mesh.toml: cannot read the mesh file"),
        "{stderr}"
    );
}

/// An unknown sketch exits non-zero and lists the sketches that exist: every one the program
/// registers, in order.
#[test]
fn an_unknown_sketch_lists_the_sketches() {
    let stderr = fails(&["bell", "--port", "0"]);
    let names = arduino::builtin().names();
    assert!(names.len() > 1, "{names:?}");
    assert_eq!(
        stderr.trim(),
        format!(
            "arduino: unknown sketch \"bell\"; the sketches are: {}",
            names.join(", ")
        )
    );
}

/// `arduino sketches` lists every registered sketch, in order, with its line on what it does.
#[test]
fn sketches_are_listed() {
    let ran = arduino(&["sketches"], &[]);
    assert!(ran.ok);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    let registry = arduino::builtin();
    assert_eq!(lines.len(), registry.entries().len(), "{}", ran.stdout);
    for (line, entry) in lines.iter().zip(registry.entries()) {
        assert_eq!(line.split_whitespace().next(), Some(entry.name), "{line}");
        assert!(line.ends_with(entry.about), "{line}");
    }
}

/// A clock with nobody to drive says so instead of ticking into the void.
#[test]
fn a_clock_without_peers_says_so() {
    let stderr = fails(&["clock"]);
    assert!(
        stderr.contains("the clock has nothing to drive"),
        "{stderr}"
    );
}
