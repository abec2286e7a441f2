//! `arduino check`: the mesh file checked as startup checks it, and printed as a tree.

mod common;

use common::{MeshFile, arduino};

/// The shipped mesh.toml passes, and its nodes, addresses and links are printed as a tree.
#[test]
fn check_prints_the_shipped_mesh() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/mesh.toml");
    let ran = arduino(&["check", "--mesh", shipped], &[]);
    assert!(ran.ok, "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            &format!("{shipped}: 3 nodes, 2 links")[..],
            "clock (clock) -> iopin",
            "  iopin (iopin) ws://127.0.0.1:8765 -> buzzer",
            "    buzzer (buzzer) ws://127.0.0.1:8766",
        ]
    );
}

/// A broken mesh fails with the same one line as starting it does, from every check startup
/// makes: the file's own, and each sketch's setup through the registry.
#[test]
fn check_fails_as_startup_does() {
    for (text, says) in [
        (
            "[[node]]\nname = \"a\"\nsketch = \"buzzer\"\nport = 1\nto = [\"b\"]\n",
            "`to` names \"b\"",
        ),
        (
            "[[node]]\nname = \"buzzer\"\nport = 1\n[node.config]\nsuond = \"x\"\n",
            "config key `suond` is not known",
        ),
        (
            "[[node]]\nname = \"iopin\"\nport = 1\n[node.config]\nchance = 2.0\n",
            "chance",
        ),
        ("[[node]\n", "mesh.toml"),
    ] {
        let mesh = MeshFile::new(text);
        let checked = arduino(&["check", "--mesh", mesh.arg()], &[]);
        assert!(!checked.ok, "{text}: {}", checked.stdout);
        assert!(checked.stdout.is_empty(), "{}", checked.stdout);
        assert_eq!(checked.stderr.lines().count(), 1, "{}", checked.stderr);
        assert!(checked.stderr.contains(says), "{text}: {}", checked.stderr);
        let up = arduino(&["up", "--mesh", mesh.arg()], &[]);
        assert!(!up.ok);
        assert_eq!(
            checked.stderr.trim(),
            up.stderr.lines().last().unwrap_or_default().trim(),
            "{text}"
        );
    }
}

/// Without --mesh and without ./mesh.toml, check says the file is missing.
#[test]
fn check_needs_a_mesh_file() {
    let ran = arduino(&["check"], &[]);
    assert!(!ran.ok);
    assert!(ran.stderr.contains("mesh.toml"), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
}
