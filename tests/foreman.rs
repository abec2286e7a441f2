//! The shipped Procfile and mesh.toml, under the real foreman.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Instant,
};

use common::{PATIENCE, binary, free_port};

/// foreman starts the three nodes of the shipped files; the clock's five ticks are
/// acknowledged; when the clock exits, foreman stops the others, which stop cleanly.
#[test]
fn the_shipped_procfile_runs_the_demo_under_foreman() {
    let found = Command::new("foreman").arg("version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "foreman is not installed: apt-get install -y ruby-foreman (or run `bash .ci/run`)"
    );

    // The shipped files, with the mesh's ports moved to free ones so tests can run side by side.
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(format!("{root}/Procfile"), dir.path().join("Procfile")).unwrap();
    let shipped = std::fs::read_to_string(format!("{root}/mesh.toml")).unwrap();
    assert!(shipped.contains("port = 8765") && shipped.contains("port = 8766"));
    let mesh = shipped
        .replace("port = 8765", &format!("port = {}", free_port()))
        .replace("port = 8766", &format!("port = {}", free_port()))
        .replace("delay = 1.0", "delay = 0.05");
    std::fs::write(dir.path().join("mesh.toml"), mesh).unwrap();

    let mut foreman = Command::new("foreman")
        .args(["start", "--no-timestamp", "-f", "Procfile", "-d"])
        .arg(dir.path())
        .current_dir(dir.path())
        .env("ARDUINO", binary())
        .env("ARDUINO_MESH", dir.path().join("mesh.toml"))
        .env_remove("RUST_LOG")
        .env_remove("ARDUINO_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    let stdout = foreman.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    let started = Instant::now();
    let mut lines = Vec::new();
    while let Ok(line) = lines_rx.recv_timeout(PATIENCE.saturating_sub(started.elapsed())) {
        lines.push(line);
    }
    if foreman.try_wait().unwrap().is_none() {
        let _ = foreman.kill(); // it hung: the asserts below say what was missing
    }
    let status = foreman.wait().unwrap();
    let log = lines.join("\n");
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("[ clock ] < acknowledged"), 5, "{log}");
    assert_eq!(
        count("[ clock ] 5 ticks: 5 delivered, 0 failed"),
        1,
        "{log}"
    );
    assert_eq!(count("clock.1  | exited with code 0"), 1, "{log}");
    assert_eq!(count("[ iopin ] stopping"), 1, "{log}");
    assert_eq!(count("[ buzzer ] stopping"), 1, "{log}");
    assert_eq!(
        count("[ iopin ] handled 5 messages; sent 15 to peers: 15 acknowledged, 0 failed"),
        1,
        "{log}"
    );
    assert_eq!(count("exited with code 0"), 3, "{log}");
    assert!(status.success(), "foreman: {status:?}\n{log}");
}
