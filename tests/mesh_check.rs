//! A mistake in the mesh file is refused before anything starts: one line on stderr naming
//! the file, the node and the fault, a non-zero exit, and never a panic.

mod common;

use std::{
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{MeshFile, PATIENCE, arduino, binary};

/// Runs `arduino ARGS --mesh FILE` on `text` and expects it to refuse the file: exits non-zero
/// within the patience (a node that starts anyway is killed and fails the test), with exactly
/// one line on stderr, which must start with `arduino: FILE`; returns the rest of it.
fn refused(text: &str, args: &[&str]) -> String {
    let mesh = MeshFile::new(text);
    let mut child = Command::new(binary())
        .args(args)
        .args(["--mesh", mesh.arg()])
        .current_dir(mesh.dir.path())
        .env_remove("ARDUINO_MESH")
        .env_remove("ARDUINO_SECRET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5)); // poll interval
    };
    let stderr = reader.join().unwrap();
    let command = format!("arduino {} on {text:?}", args.join(" "));
    assert!(
        !stderr.contains("panicked"),
        "{command} panicked:\n{stderr}"
    );
    let status = status.unwrap_or_else(|| panic!("{command} started instead:\n{stderr}"));
    assert!(!status.success(), "{command} succeeded:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{command}: not one line:\n{stderr}");
    let prefix = format!("arduino: {}", mesh.arg());
    let rest = lines[0].strip_prefix(&prefix);
    rest.unwrap_or_else(|| panic!("{command}: {stderr}"))
        .to_owned()
}

/// A peer without an address (no port, or port 0) is reached by the nodes of its own `arduino
/// up`, so only a node run on its own refuses it, before anything starts.
#[test]
fn a_peer_without_an_address_is_refused_only_by_a_node_on_its_own() {
    for (port, expected) in [
        (
            "",
            "node \"iopin\": `to` names \"buzzer\", which has no port: only the nodes of its own `arduino up` reach it",
        ),
        (
            "port = 0\n",
            "node \"iopin\": `to` names \"buzzer\", which has port 0",
        ),
    ] {
        let text = format!(
            "[[node]]\nname = \"iopin\"\nport = 0\nto = [\"buzzer\"]\n[[node]]\nname = \"buzzer\"\n{port}"
        );
        let line = refused(&text, &["iopin"]);
        assert!(line.contains(expected), "expected {expected:?} in {line}");
        let mesh = MeshFile::new(&text);
        let ran = arduino(&["check", "--mesh", mesh.arg()], &[]);
        assert!(ran.ok, "check refused {text:?}: {}", ran.stderr);
    }
}

/// As [`refused`], by both `arduino up` and `arduino iopin`, which must say the same thing;
/// checks that the line contains each of `expected`.
fn refused_by_both(text: &str, expected: &[&str]) -> String {
    let line = refused(text, &["up"]);
    for part in expected {
        assert!(line.contains(part), "expected {part:?} in {line}");
    }
    let again = refused(text, &["iopin"]);
    assert_eq!(line, again, "`up` and `iopin` disagree on {text:?}");
    line
}

/// Values that pass as TOML but cannot become durations, intervals or limits are refused in
/// words, with their range, instead of panicking once the node runs.
#[test]
fn values_out_of_range_are_refused_in_words() {
    let node = "[[node]]\nname = \"iopin\"\nport = 0\n";
    // Never bound: the file is refused first.
    let peer = "[[node]]\nname = \"iopin\"\nport = 1\n";
    let cases = [
        (
            format!("{node}timeout = 1e300\n"),
            "node \"iopin\": `timeout` must be between 0.001 and 86400 seconds, not 1e300",
        ),
        (
            format!("{node}timeout = 1e-300\n"),
            "node \"iopin\": `timeout` must be between 0.001 and 86400 seconds, not 1e-300",
        ),
        (
            format!("{node}timeout = nan\n"),
            "`timeout` must be between 0.001 and 86400 seconds, not NaN",
        ),
        (
            format!("{node}timeout = -inf\n"),
            "`timeout` must be between 0.001 and 86400 seconds, not -inf",
        ),
        (
            format!("{node}max_connections = 9223372036854775807\n"),
            "node \"iopin\": `max_connections` must be between 1 and 1000000, not 9223372036854775807",
        ),
        (
            format!("{node}max_message = 0\n"),
            "node \"iopin\": `max_message` must be between 64 and 1073741824 bytes, not 0",
        ),
        (
            format!("{node}[node.config]\nsequence = 0\n"),
            "node \"iopin\": config key `sequence` must be between 1 and 64, not 0",
        ),
        (
            format!(
                "[[node]]\nname = \"clock\"\nto = [\"iopin\"]\n[node.config]\ndelay = 1e300\n\n{peer}"
            ),
            "node \"clock\": config key `delay` must be between 0 and 86400 seconds, not 1e300",
        ),
        (
            format!(
                "[[node]]\nname = \"clock\"\nto = [\"iopin\"]\n[node.config]\ndelay = inf\n\n{peer}"
            ),
            "node \"clock\": config key `delay` must be between 0 and 86400 seconds, not inf",
        ),
        (
            format!(
                "[[node]]\nname = \"clock\"\nto = [\"iopin\"]\n[node.config]\ntacks = -9223372036854775808\n\n{peer}"
            ),
            "node \"clock\": config key `tacks` must be a whole number, 0 or more, not -9223372036854775808",
        ),
    ];
    for (text, expected) in cases {
        refused_by_both(&text, &[expected]);
    }
}

/// Mistakes that used to surface only once the mesh ran (or never) are refused at load: a
/// peer nobody can find, one address spelt two ways, a cycle of peers, a secret that cannot
/// travel in a header, a channel that is no URL path.
#[test]
fn mistakes_found_late_are_refused_at_load() {
    let cases = [
        (
            "[[node]]\nname = \"iopin\"\nhost = \"localhost\"\nport = 1\n[[node]]\nname = \"buzzer\"\nport = 1\n",
            "node \"buzzer\": 127.0.0.1:1 is the same address as localhost:1 of node \"iopin\"",
        ),
        (
            "[[node]]\nname = \"iopin\"\nhost = \"0.0.0.0\"\nport = 1\n[[node]]\nname = \"buzzer\"\nhost = \"10.9.8.7\"\nport = 1\n",
            "node \"buzzer\": 10.9.8.7:1 is the same address as 0.0.0.0:1 of node \"iopin\" (0.0.0.0 listens on every IPv4 address of the machine)",
        ),
        (
            "[[node]]\nname = \"iopin\"\nhost = \"::1\"\nport = 1\n[[node]]\nname = \"buzzer\"\nhost = \"[::1]\"\nport = 1\n",
            "node \"buzzer\": [::1]:1 is also the address of node \"iopin\"",
        ),
        (
            "[[node]]\nname = \"iopin\"\nport = 1\nto = [\"relay\"]\n[[node]]\nname = \"relay\"\nsketch = \"iopin\"\nport = 2\nto = [\"iopin\"]\n",
            "node \"iopin\": its peers wait on each other in a cycle, iopin -> relay -> iopin",
        ),
        (
            "[[node]]\nname = \"a\"\nsketch = \"iopin\"\nport = 1\nto = [\"b\"]\n[[node]]\nname = \"b\"\nsketch = \"iopin\"\nport = 2\nto = [\"c\"]\n[[node]]\nname = \"c\"\nsketch = \"iopin\"\nport = 3\nto = [\"a\"]\n",
            "node \"a\": its peers wait on each other in a cycle, a -> b -> c -> a",
        ),
        ("secret = \"\"\n", "`secret` is empty"),
        (
            "secret = \"hunter2 \"\n",
            "`secret` starts or ends with a space",
        ),
        (
            "secret = \"hun\\nter2\"\n",
            "`secret` has a control character",
        ),
        (
            "[[node]]\nname = \"clock\"\nto = [\"iopin\"]\n[node.config]\nchannel = \"datafeed\"\n[[node]]\nname = \"iopin\"\nport = 1\n",
            "node \"clock\": config key `channel` must be a path starting with `/`, not \"datafeed\"",
        ),
        (
            "[[node]]\nname = \"clock\"\nto = [\"iopin\"]\n[node.config]\nchannel = \"/data feed\"\n[[node]]\nname = \"iopin\"\nport = 1\n",
            "node \"clock\": config key `channel` must be a URL path",
        ),
    ];
    for (text, expected) in cases {
        refused_by_both(text, &[expected]);
    }
}

/// TOML and type mistakes read like a compiler's: `FILE:LINE:COLUMN: what is wrong`, in words
/// rather than Rust types, with a did-you-mean for a misspelt key.
#[test]
fn mistakes_are_located_and_worded() {
    let cases = [
        (
            "[[node]]\nname = \"buzzer\"\nport = 8766\n\n[[node]]\nname = \"iopin\"\nprot = 8765\n",
            ":7:1: unknown key `prot` in node \"iopin\" (did you mean `port`?)",
        ),
        (
            "[[node]]\nname = \"iopin\"\nport = 70000\n",
            ":3:8: node \"iopin\": `port` must be a port number (0 to 65535), not 70000",
        ),
        (
            "[[node]]\nname = 7\n",
            ":2:8: `name` must be a string, not 7",
        ),
        (
            "[[node]]\nname = \"iopin\"\nport = 1\n[node.config]\nchanse = 0.5\n",
            ": node \"iopin\": config key `chanse` is not known to sketch iopin (did you mean `chance`?)",
        ),
        (
            "[[node]]\nname = \"iopin\"\nport = 1\n[[node]]\nname = \"buzzer\"\nport = 1\n",
            ":4:1: node \"buzzer\": 127.0.0.1:1 is also the address of node \"iopin\"",
        ),
    ];
    for (text, expected) in cases {
        let line = refused_by_both(text, &[]);
        assert_eq!(line, expected);
    }
    let line = refused("[[node]]\nname = \"iopin\nport = 1\n", &["up"]);
    assert!(line.starts_with(":2:"), "{line}");
}

/// An address that is not this machine's is named in words, not as an OS error number.
#[test]
fn an_address_of_another_machine_is_named_in_words() {
    // 192.0.2.1 is reserved for documentation: no machine has it.
    let mesh = MeshFile::new("[[node]]\nname = \"iopin\"\nhost = \"192.0.2.1\"\nport = 8765\n");
    let ran = common::arduino(&["up", "--mesh", mesh.arg()], &[]);
    assert!(!ran.ok);
    assert_eq!(
        ran.stderr.trim(),
        "arduino: node \"iopin\": cannot listen on 192.0.2.1:8765: not an address of this machine"
    );
}

/// A "mesh file" that never ends (/dev/zero) is refused in one line, not read until memory
/// runs out.
#[test]
fn an_endless_file_is_refused() {
    let ran = common::arduino(&["check", "--mesh", "/dev/zero"], &[]);
    assert!(!ran.ok);
    assert_eq!(
        ran.stderr.trim(),
        "arduino: /dev/zero: the mesh file is over 16 MiB: is it a mesh file?"
    );
}
