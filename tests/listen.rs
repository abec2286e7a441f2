//! `arduino listen` following real nodes: the events of a mesh started as separate processes
//! (or by foreman), a node restarting, the secret, and how `listen` ends.

mod common;

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{MeshFile, PATIENCE, Process, arduino, binary, free_port};

const SECRET: &str = "correct-horse-battery-staple";

/// A mesh file for an iopin -> buzzer pair on free ports.
fn pair_mesh() -> MeshFile {
    MeshFile::new(&format!(
        "[[node]]\nname = \"iopin\"\nport = {}\nto = [\"buzzer\"]\n\
         [[node]]\nname = \"buzzer\"\nport = {}\n",
        free_port(),
        free_port()
    ))
}

/// Start the iopin and the buzzer of `mesh`, each its own process, and wait until they listen.
fn start_pair(mesh: &MeshFile, env: &[(&str, &str)]) -> (Process, Process) {
    let (iopin, _) = Process::node(&["iopin", "--mesh", mesh.arg()], env);
    let (buzzer, _) = Process::node(&["buzzer", "--mesh", mesh.arg()], env);
    (iopin, buzzer)
}

/// The first stdout line of `process` from index `from` on for which `wanted` holds, polling
/// until `deadline`.
fn stdout_line(
    process: &Process,
    from: usize,
    deadline: Instant,
    wanted: impl Fn(&str) -> bool,
) -> Option<(usize, String)> {
    loop {
        let lines = process.stdout();
        if let Some((i, line)) = lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, line)| wanted(line))
        {
            return Some((i, line.clone()));
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5)); // poll interval
    }
}

/// As [`stdout_line`] within the patience, failing with everything `process` printed.
fn wait_stdout(process: &Process, from: usize, wanted: impl Fn(&str) -> bool) -> (usize, String) {
    stdout_line(process, from, Instant::now() + PATIENCE, wanted).unwrap_or_else(|| {
        panic!(
            "the line never came; stdout:\n{}\nstderr:\n{}",
            process.stdout().join("\n"),
            process.log().join("\n")
        )
    })
}

/// Send `1` to the iopin of `mesh` until `listening` shows a line for which `wanted` holds
/// (from index `from` on): `listen` may not have subscribed yet when the first one goes.
fn send_until_heard(
    mesh: &MeshFile,
    env: &[(&str, &str)],
    listening: &Process,
    from: usize,
    wanted: impl Fn(&str) -> bool,
) -> (usize, String) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ran = arduino(&["send", "--mesh", mesh.arg(), "iopin", "1"], env);
        assert!(ran.ok, "send: {}", ran.stderr);
        let soon = (Instant::now() + Duration::from_millis(500)).min(deadline);
        if let Some(found) = stdout_line(listening, from, soon, &wanted) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "listen never showed the line; stdout:\n{}\nstderr:\n{}",
            listening.stdout().join("\n"),
            listening.log().join("\n")
        );
    }
}

/// Send `1` to the iopin of `mesh` until, for each of `wanted`, `listening` has shown a line
/// for which it holds: `listen` subscribes to each node on its own, so the first messages may
/// go before it hears them all.
fn send_until_all(mesh: &MeshFile, listening: &Process, wanted: &[&dyn Fn(&str) -> bool]) {
    let deadline = Instant::now() + PATIENCE;
    let all_heard = |lines: &[String]| {
        wanted
            .iter()
            .all(|wanted| lines.iter().any(|line| wanted(line)))
    };
    loop {
        let ran = arduino(&["send", "--mesh", mesh.arg(), "iopin", "1"], &[]);
        assert!(ran.ok, "send: {}", ran.stderr);
        let soon = (Instant::now() + Duration::from_millis(500)).min(deadline);
        while !all_heard(&listening.stdout()) && Instant::now() < soon {
            std::thread::sleep(Duration::from_millis(5)); // poll interval
        }
        if all_heard(&listening.stdout()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "listen never showed every line wanted; stdout:\n{}\nstderr:\n{}",
            listening.stdout().join("\n"),
            listening.log().join("\n")
        );
    }
}

/// Whether `line` is a readable line `HH:MM:SS.mmm [ NODE ] REST`, with REST matching `rest`.
fn readable(line: &str, node: &str, rest: impl Fn(&str) -> bool) -> bool {
    let (clock, tail) = line.split_at_checked(12).unwrap_or(("", ""));
    let clock_ok = clock.len() == 12
        && clock.bytes().enumerate().all(|(i, b)| match i {
            2 | 5 => b == b':',
            8 => b == b'.',
            _ => b.is_ascii_digit(),
        });
    clock_ok
        && tail
            .strip_prefix(&format!(" [ {node} ] "))
            .is_some_and(rest)
}

/// `(N us)` at the end of an ack's line (or `(N.N ms)` past ten thousand).
fn ends_with_time(rest: &str) -> bool {
    let Some(open) = rest.rfind(" (") else {
        return false;
    };
    let time = &rest[open + 2..];
    let number = |s: &str, dot: bool| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || (dot && c == '.'))
    };
    time.strip_suffix(" us)").is_some_and(|n| number(n, false))
        || time.strip_suffix(" ms)").is_some_and(|n| number(n, true))
}

/// Without names, `listen --mesh` follows every node of the mesh that has a port: a message
/// sent to the iopin shows as the iopin's message and ack and the buzzer's, each a readable
/// line with the ack's time; with `--json` each line is an object with time, node and event.
#[test]
fn listen_follows_every_node_of_the_mesh() {
    let mesh = pair_mesh();
    let (_iopin, _buzzer) = start_pair(&mesh, &[]);

    let listening = Process::start(&["listen", "--mesh", mesh.arg()], &[]);
    let iopin_message = |line: &str| readable(line, "iopin", |rest| rest == "/datafeed < 1");
    let iopin_ack =
        |line: &str| readable(line, "iopin", |rest| rest.starts_with("> acknowledged ("));
    let buzzer_message = |line: &str| {
        readable(line, "buzzer", |rest| {
            rest == "/datafeed < 0" || rest == "/datafeed < 1"
        })
    };
    let buzzer_ack = |line: &str| readable(line, "buzzer", |rest| rest.starts_with("> "));
    send_until_all(
        &mesh,
        &listening,
        &[&iopin_message, &iopin_ack, &buzzer_message, &buzzer_ack],
    );
    for ack in listening
        .stdout()
        .iter()
        .filter(|line| iopin_ack(line) || buzzer_ack(line))
    {
        assert!(ends_with_time(ack), "an ack without its time: {ack}");
    }
    drop(listening);

    let listening = Process::start(&["listen", "--mesh", mesh.arg(), "--json"], &[]);
    let json = |node: &'static str, event: &'static str| {
        move |line: &str| {
            line.contains(&format!("\"node\":\"{node}\""))
                && line.contains(&format!("\"event\":\"{event}\""))
        }
    };
    send_until_all(
        &mesh,
        &listening,
        &[
            &json("iopin", "message"),
            &json("iopin", "ack"),
            &json("buzzer", "message"),
            &json("buzzer", "ack"),
        ],
    );
    let lines = listening.stdout();
    assert!(!lines.is_empty());
    for line in &lines {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nall:\n{}", lines.join("\n")));
        for field in ["time", "node", "event"] {
            assert!(event[field].is_string(), "no {field:?} in {line}");
        }
    }
    let of = |node: &str, event: &str| {
        lines.iter().any(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["node"] == node && value["event"] == event
        })
    };
    for (node, event) in [
        ("iopin", "message"),
        ("iopin", "ack"),
        ("buzzer", "message"),
        ("buzzer", "ack"),
    ] {
        assert!(
            of(node, event),
            "no {event} of {node}:\n{}",
            lines.join("\n")
        );
    }
}

/// A node killed and started again on its port: `listen` says once that it lost it and is
/// reconnecting, then that it is back, and the node's next events show.
#[test]
fn listen_survives_a_node_restarting() {
    let mesh = pair_mesh();
    let (_iopin, buzzer) = start_pair(&mesh, &[]);
    let listening = Process::start(&["listen", "--mesh", mesh.arg()], &[]);
    send_until_heard(&mesh, &[], &listening, 0, |line| {
        readable(line, "buzzer", |rest| rest.starts_with("> "))
    });

    buzzer.signal("KILL");
    let (lost, line) = wait_stdout(&listening, 0, |line| {
        readable(line, "buzzer", |rest| rest.contains("reconnecting"))
    });
    assert!(line.contains("gone"), "{line}");
    let (_buzzer, _) = Process::node(&["buzzer", "--mesh", mesh.arg()], &[]);
    let (back, _) = wait_stdout(&listening, lost, |line| {
        readable(line, "buzzer", |rest| rest == "back")
    });
    send_until_heard(&mesh, &[], &listening, back, |line| {
        readable(line, "buzzer", |rest| rest.starts_with("> "))
    });
    let lines = listening.stdout();
    let about_buzzer = |needle: &str| {
        lines
            .iter()
            .filter(|l| l.contains("[ buzzer ]") && l.contains(needle))
            .count()
    };
    let all = lines.join("\n");
    assert_eq!(about_buzzer("reconnecting"), 1, "{all}");
    assert_eq!(about_buzzer("] back"), 1, "{all}");
    assert!(
        lines[lost + 1..back]
            .iter()
            .all(|l| !l.contains("[ buzzer ]")),
        "{all}"
    );
    assert!(listening.log().is_empty(), "{:?}", listening.log());
}

/// With the mesh's secret in ARDUINO_SECRET, listen follows nodes that need it; without it,
/// it says in one line that the node wants the secret, and gives up.
#[test]
fn listen_needs_the_secret_of_a_mesh_that_has_one() {
    let mesh = pair_mesh();
    let env = [("ARDUINO_SECRET", SECRET)];
    let (_iopin, _buzzer) = start_pair(&mesh, &env);

    let listening = Process::start(&["listen", "--mesh", mesh.arg()], &env);
    send_until_heard(&mesh, &env, &listening, 0, |line| {
        readable(line, "buzzer", |rest| rest.starts_with("> "))
    });
    drop(listening);

    let mut listening = Process::start(&["listen", "--mesh", mesh.arg(), "iopin"], &[]);
    let status = listening.wait();
    assert!(!status.success(), "{status:?}");
    let said: Vec<String> = listening
        .stdout()
        .into_iter()
        .chain(listening.log())
        .collect();
    let about_secret: Vec<&String> = said.iter().filter(|l| l.contains("secret")).collect();
    assert_eq!(about_secret.len(), 1, "{said:#?}");
    assert!(about_secret[0].contains("iopin"), "{said:#?}");
    assert!(about_secret[0].contains("ARDUINO_SECRET"), "{said:#?}");
}

/// SIGINT and SIGTERM each end `listen` with status 0 within a second.
#[test]
fn listen_stops_on_a_signal() {
    let mesh = pair_mesh();
    let (_iopin, _buzzer) = start_pair(&mesh, &[]);
    for signal in ["INT", "TERM"] {
        let mut listening = Process::start(&["listen", "--mesh", mesh.arg()], &[]);
        send_until_heard(&mesh, &[], &listening, 0, |line| {
            line.contains("[ buzzer ] > ")
        });
        let asked = Instant::now();
        listening.signal(signal);
        let status = listening.wait();
        let took = asked.elapsed();
        assert!(status.success(), "SIG{signal}: {status:?}");
        assert!(took < Duration::from_secs(1), "SIG{signal}: took {took:?}");
        assert!(listening.log().is_empty(), "{:?}", listening.log());
    }
}

/// Start `arduino listen ARGS` with stdout and stderr piped.
fn spawn_listen(args: &[&str]) -> (Child, tempfile::TempDir) {
    let empty = tempfile::tempdir().unwrap();
    let child = Command::new(binary())
        .arg("listen")
        .args(args)
        .current_dir(empty.path())
        .env_remove("ARDUINO_MESH")
        .env_remove("ARDUINO_SECRET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, empty)
}

/// Wait for `child` to exit within `patience`, polling; kill it and fail if it does not.
fn exits_within(child: &mut Child, patience: Duration, what: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > patience {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: listen did not exit within {patience:?} of its reader going");
        }
        std::thread::sleep(Duration::from_millis(5)); // poll interval
    }
}

/// `arduino listen | head -1`: once the reader has its line and closes the pipe, `listen`
/// exits with status 0 and nothing on stderr, even when the nodes have nothing more to say.
#[test]
fn listen_into_a_closed_pipe_exits_quietly() {
    let mesh = pair_mesh();
    let (_iopin, _buzzer) = start_pair(&mesh, &[]);

    // Events flowing: the next one meets the closed pipe.
    let (mut child, _dir) = spawn_listen(&["--mesh", mesh.arg()]);
    let mut stderr = child.stderr.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let sender = std::thread::spawn({
        let mesh = mesh.arg().to_owned();
        move || {
            // Until listen has printed something, or gone.
            for _ in 0..30 {
                let ran = arduino(&["send", "--mesh", &mesh, "iopin", "1"], &[]);
                assert!(ran.ok, "{}", ran.stderr);
            }
        }
    });
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.contains("[ iopin ]") || line.contains("[ buzzer ]"),
        "{line:?}"
    );
    drop(stdout);
    let status = exits_within(&mut child, PATIENCE, "events flowing");
    let mut said = String::new();
    stderr.read_to_string(&mut said).unwrap();
    assert!(status.success(), "{status:?}: {said}");
    assert_eq!(said, "");
    sender.join().unwrap();

    // Nothing more to say: the only line is that a node is not up yet.
    let idle = MeshFile::new(&format!(
        "[[node]]\nname = \"buzzer\"\nport = {}\n",
        free_port()
    ));
    let (mut child, _dir) = spawn_listen(&["--mesh", idle.arg()]);
    let mut stderr = child.stderr.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("[ buzzer ] not up"), "{line:?}");
    drop(stdout);
    let status = exits_within(&mut child, Duration::from_secs(2), "nothing to say");
    let mut said = String::new();
    stderr.read_to_string(&mut said).unwrap();
    assert!(status.success(), "{status:?}: {said}");
    assert_eq!(said, "");
}

/// A mesh started by foreman from the shipped Procfile and mesh.toml is followed by `listen`
/// with that mesh file: the clock's ticks show at the iopin.
#[test]
fn listen_follows_a_mesh_run_by_foreman() {
    let found = Command::new("foreman").arg("version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "foreman is not installed: apt-get install -y ruby-foreman (or run `bash .ci/run`)"
    );
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(format!("{root}/Procfile"), dir.path().join("Procfile")).unwrap();
    let shipped = std::fs::read_to_string(format!("{root}/mesh.toml")).unwrap();
    assert!(shipped.contains("port = 8765") && shipped.contains("port = 8766"));
    // Ticks often and for long enough that listen, started alongside, sees some.
    let mesh = shipped
        .replace("port = 8765", &format!("port = {}", free_port()))
        .replace("port = 8766", &format!("port = {}", free_port()))
        .replace("tacks = 5", "tacks = 100000")
        .replace("delay = 1.0", "delay = 0.1");
    let mesh_path = dir.path().join("mesh.toml");
    std::fs::write(&mesh_path, mesh).unwrap();

    let mut foreman = Command::new("foreman")
        .args(["start", "--no-timestamp", "-f", "Procfile", "-d"])
        .arg(dir.path())
        .current_dir(dir.path())
        .env("ARDUINO", binary())
        .env("ARDUINO_MESH", &mesh_path)
        .env_remove("RUST_LOG")
        .env_remove("ARDUINO_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let listening = Process::start(&["listen", "--mesh", mesh_path.to_str().unwrap()], &[]);
    let heard = stdout_line(&listening, 0, Instant::now() + PATIENCE, |line| {
        readable(line, "iopin", |rest| rest.starts_with("/datafeed < "))
    });
    let acked = stdout_line(&listening, 0, Instant::now() + PATIENCE, |line| {
        readable(line, "iopin", |rest| rest.starts_with("> "))
    });
    let buzzed = stdout_line(&listening, 0, Instant::now() + PATIENCE, |line| {
        readable(line, "buzzer", |rest| rest.starts_with("/datafeed < "))
    });
    // foreman stops its processes on SIGTERM.
    let _ = Command::new("kill")
        .args(["-TERM", &foreman.id().to_string()])
        .status();
    if exits(&mut foreman).is_none() {
        let _ = foreman.kill();
        let _ = foreman.wait();
    }
    let all = listening.stdout().join("\n");
    assert!(heard.is_some(), "no tick at the iopin:\n{all}");
    assert!(acked.is_some(), "no ack of the iopin:\n{all}");
    assert!(buzzed.is_some(), "nothing at the buzzer:\n{all}");
}

/// `child`'s status once it exits within the patience, or `None`.
fn exits(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5)); // poll interval
    }
}

/// A URL that names no node (no host, no port, another scheme) is refused in one line at
/// once, rather than waited for in vain.
#[test]
fn a_url_that_names_no_node_is_refused() {
    for url in [
        "ws://",
        "http://[::1",
        "ftp://127.0.0.1:1",
        "ws://127.0.0.1",
    ] {
        let ran = common::arduino(&["listen", url], &[]);
        assert!(!ran.ok, "{url}");
        let lines: Vec<&str> = ran.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{url}: {}", ran.stderr);
        assert!(lines[0].contains("give ws://HOST:PORT"), "{}", lines[0]);
    }
}
