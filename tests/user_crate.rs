//! A crate of the user's own, with `arduino` as its only dependency, a sketch and a `main` of
//! one line, gets the whole program: built with cargo and run as real processes.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Instant,
};

use common::{MeshFile, PATIENCE};

const SKETCH: &str = r#"
use arduino::rand::{RngExt, rngs::SmallRng};
use arduino::{Ack, ConfigError, Context, Input, Setup, Sketch};

/// A die: each `roll` is answered with a number from 1 to `sides`.
pub struct Die {
    sides: u32,
    rng: SmallRng,
}

impl Sketch for Die {
    fn setup(setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        let sides: u32 = setup.get("sides", 6)?;
        if sides == 0 {
            return Err(ConfigError::invalid("sides", "must be 1 or more"));
        }
        Ok(Die { sides, rng: setup.rng() })
    }

    async fn loop_once(&mut self, _ctx: &mut Context, input: Input<'_>) -> Ack {
        match input {
            Input::Message { text: "roll", .. } => {
                Ack::from(format!("rolled {}", self.rng.random_range(1..=self.sides)))
            }
            Input::Message { .. } => Ack::error("say `roll`"),
            Input::Tick(_) => Ack::NA,
        }
    }
}
"#;

const MAIN: &str = r#"
mod die;

fn main() -> std::process::ExitCode {
    arduino::cli::main(arduino::builtin().with::<die::Die>("die", "rolls a die on each message"))
}
"#;

/// Write the user's crate in `dir` and build it with cargo; the path of its binary.
fn build_user_crate(dir: &Path) -> PathBuf {
    let repo = env!("CARGO_MANIFEST_DIR");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"dice\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [dependencies]\narduino = {{ path = {repo:?} }}\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/die.rs"), SKETCH).unwrap();
    std::fs::write(dir.join("src/main.rs"), MAIN).unwrap();
    // The same versions as this repository's, so the compiled dependencies are reused.
    std::fs::copy(Path::new(repo).join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let target = Path::new(repo).join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let built = Command::new(cargo)
        .arg("build")
        .arg("--quiet")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "the user's crate does not build:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    target.join("debug").join("dice")
}

/// Run the user's program to its end.
fn run(binary: &Path, args: &[&str], dir: &Path) -> Output {
    Command::new(binary)
        .args(args)
        .current_dir(dir)
        .env_remove("ARDUINO_MESH")
        .env_remove("ARDUINO_SECRET")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// A node of the user's program, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the user's program and wait for its `listening on ws://ADDR` line: the process and
/// ADDR.
fn start(binary: &Path, args: &[&str], dir: &Path) -> (Running, String) {
    let child = Command::new(binary)
        .args(args)
        .current_dir(dir)
        .env_remove("ARDUINO_MESH")
        .env_remove("ARDUINO_SECRET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Owned at once, so that the process is killed and waited for however this ends.
    let mut running = Running(child);
    let stderr = running.0.stderr.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines_rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("`{args:?}` never said where it listens: {seen:?}"));
        if let Some(rest) = line.split("listening on ws://").nth(1) {
            let addr = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            return (running, addr);
        }
        seen.push(line);
    }
}

fn stop(mut running: Running) -> std::process::ExitStatus {
    let pid = running.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the node did not stop");
        std::thread::sleep(std::time::Duration::from_millis(10)); // poll interval
    }
}

/// The user's program has every subcommand, its own sketch beside the built-in ones, and runs
/// it as a node alone (`die --port 0`) and in a mesh (`up`), reached with its own `send`.
#[test]
fn a_users_crate_gets_the_whole_program() {
    let dir = tempfile::tempdir().unwrap();
    let binary = build_user_crate(dir.path());

    let help = run(&binary, &["--help"], dir.path());
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for command in ["up", "send", "listen", "check", "sketches", "bench"] {
        assert!(help.contains(command), "no `{command}` in:\n{help}");
    }
    let sketches = run(&binary, &["sketches"], dir.path());
    let sketches = String::from_utf8_lossy(&sketches.stdout);
    assert!(sketches.contains("die     rolls a die"), "{sketches}");
    assert!(sketches.contains("clock"), "{sketches}");
    let die_help = run(&binary, &["die", "--help"], dir.path());
    let die_help = String::from_utf8_lossy(&die_help.stdout);
    assert!(die_help.contains("rolls a die"), "{die_help}");
    assert!(!die_help.contains("--tacks"), "{die_help}");

    let (node, addr) = start(&binary, &["die", "--port", "0", "--seed", "1"], dir.path());
    let url = format!("ws://{addr}");
    let sent = run(&binary, &["send", &url, "roll", "roll"], dir.path());
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let acks = String::from_utf8_lossy(&sent.stdout);
    assert_eq!(acks.lines().count(), 2, "{acks}");
    assert!(acks.lines().all(|ack| ack.starts_with("rolled ")), "{acks}");
    assert!(stop(node).success());

    let mesh = MeshFile::new(
        "[[node]]\nname = \"table\"\nsketch = \"die\"\nport = 0\n[node.config]\nsides = 1\n",
    );
    let checked = run(&binary, &["check", "--mesh", mesh.arg()], dir.path());
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(String::from_utf8_lossy(&checked.stdout).contains("table (die)"));
    let (mesh_node, addr) = start(&binary, &["up", "--mesh", mesh.arg()], dir.path());
    let sent = run(
        &binary,
        &["send", &format!("ws://{addr}"), "roll"],
        dir.path(),
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&sent.stdout), "rolled 1\n");
    assert!(stop(mesh_node).success());
}
