//! Helpers for the integration tests: start the real `arduino` binary as processes, read what
//! they log, and talk to them with a real websocket client. Nothing here sleeps a fixed time:
//! every wait polls for an event, bounded by a deadline that only turns a hang into a failure.

#![allow(dead_code)] // each test file uses its own subset

pub mod nats;

use std::{
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

/// How long any single wait may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_arduino")
}

/// A port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lines a process wrote, shared with the thread that reads them.
#[derive(Default)]
struct Lines {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Lines {
    fn follow(self: &Arc<Self>, stream: impl Read + Send + 'static) {
        let lines = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                lines.lines.lock().unwrap().0.push(line);
                lines.changed.notify_all();
            }
            lines.lines.lock().unwrap().1 = true;
            lines.changed.notify_all();
        });
    }

    /// The first line (from `from` on) containing `needle`, waiting for it.
    fn wait_for(&self, needle: &str, from: usize) -> Option<(usize, String)> {
        let deadline = Instant::now() + PATIENCE;
        let mut guard = self.lines.lock().unwrap();
        loop {
            if let Some((i, line)) = guard
                .0
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| l.contains(needle))
            {
                return Some((i, line.clone()));
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                return None;
            }
            guard = self.changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().0.clone()
    }

    /// Wait until the stream ends (the process exited and closed it).
    fn wait_closed(&self) {
        let deadline = Instant::now() + PATIENCE;
        let mut guard = self.lines.lock().unwrap();
        while !guard.1 && Instant::now() < deadline {
            guard = self
                .changed
                .wait_timeout(guard, Duration::from_millis(100))
                .unwrap()
                .0;
        }
    }
}

/// A running `arduino` process; killed when dropped.
pub struct Process {
    child: Child,
    /// An empty working directory, so that no `mesh.toml` is picked up by accident.
    _cwd: Option<tempfile::TempDir>,
    stderr: Arc<Lines>,
    stdout: Arc<Lines>,
    name: String,
}

impl Process {
    /// Start `arduino ARGS...` with extra environment variables, in an empty directory (so
    /// only a `--mesh` given in ARGS is read); RUST_LOG is cleared so the default log level
    /// applies unless `env` sets it.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_in(args, env, None)
    }

    /// As [`Process::start`], in directory `dir`.
    pub fn start_in(args: &[&str], env: &[(&str, &str)], dir: Option<&Path>) -> Self {
        let mut command = Command::new(binary());
        command
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("ARDUINO_MESH")
            .env_remove("ARDUINO_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let cwd = match dir {
            Some(dir) => {
                command.current_dir(dir);
                None
            }
            None => {
                let empty = tempfile::tempdir().unwrap();
                command.current_dir(empty.path());
                Some(empty)
            }
        };
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the arduino binary starts");
        let stderr = Arc::new(Lines::default());
        stderr.follow(child.stderr.take().unwrap());
        let stdout = Arc::new(Lines::default());
        stdout.follow(child.stdout.take().unwrap());
        Self {
            child,
            _cwd: cwd,
            stderr,
            stdout,
            name: args.join(" "),
        }
    }

    /// Start a node and wait until it listens; returns it with its bound address.
    pub fn node(args: &[&str], env: &[(&str, &str)]) -> (Self, SocketAddr) {
        let process = Self::start(args, env);
        let addr = process.listening();
        (process, addr)
    }

    /// Wait for the node's `listening on ws://ADDR` line and return ADDR.
    pub fn listening(&self) -> SocketAddr {
        let line = self.wait_for("listening on ws://");
        let addr = line
            .split("ws://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default();
        addr.parse()
            .unwrap_or_else(|_| panic!("no address in {line:?}"))
    }

    /// The first stderr line containing `needle`, waiting for it; panics with the whole log if
    /// it does not come.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_after(needle, 0).1
    }

    /// As [`Process::wait_for`], looking only at lines from index `from` on.
    pub fn wait_for_after(&self, needle: &str, from: usize) -> (usize, String) {
        self.stderr.wait_for(needle, from).unwrap_or_else(|| {
            panic!(
                "`{}` never logged {needle:?}; its log:\n{}",
                self.name,
                self.stderr.all().join("\n")
            )
        })
    }

    /// Everything written to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.stderr.all()
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.all()
    }

    /// How many stderr lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().iter().filter(|l| l.contains(needle)).count()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal` (`TERM`, `INT`, `KILL`, `STOP`, `CONT`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Wait for the process to exit, polling; panics if it does not within the patience.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.stderr.wait_closed();
                self.stdout.wait_closed();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "`{}` did not exit; its log:\n{}",
                self.name,
                self.stderr.all().join("\n")
            );
            std::thread::sleep(Duration::from_millis(5)); // poll interval
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mesh file in a temporary directory, removed with it.
pub struct MeshFile {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl MeshFile {
    pub fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.toml");
        std::fs::write(&path, text).unwrap();
        Self { dir, path }
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// A websocket client for tests.
pub mod ws {
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpStream;
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

    pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

    pub async fn connect(url: &str) -> Client {
        tokio::time::timeout(super::PATIENCE, connect_async(url))
            .await
            .expect("connect in time")
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
            .0
    }

    /// The next message that is not a ping or pong.
    pub async fn next(client: &mut Client) -> Option<Message> {
        loop {
            match tokio::time::timeout(super::PATIENCE, client.next())
                .await
                .expect("a message in time")
            {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Send `text` and return the text of the reply.
    pub async fn ask(client: &mut Client, text: &str) -> String {
        client.send(Message::text(text)).await.unwrap();
        match next(client).await {
            Some(Message::Text(ack)) => ack.to_string(),
            other => panic!("expected an ack for {text:?}, got {other:?}"),
        }
    }

    pub const SHORT: Duration = Duration::from_millis(200);
}

/// A node run by the library itself, in the test's own runtime: for sketches the test defines.
pub struct InProcess {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<arduino::Result<arduino::Report>>,
}

impl InProcess {
    /// Set up the first node of `mesh` (mesh file text) with `registry`, and serve it on a
    /// free port of 127.0.0.1.
    pub async fn start(registry: &arduino::Registry, mesh: &str) -> Self {
        let mesh = arduino::Mesh::parse(mesh, "test mesh").unwrap();
        let events = arduino::Events::new(&mesh.nodes[0].name);
        Self::start_with(registry, &mesh, events).await
    }

    /// As [`InProcess::start`], with the node's events going to `events`.
    pub async fn start_with(
        registry: &arduino::Registry,
        mesh: &arduino::Mesh,
        events: arduino::Events,
    ) -> Self {
        let node = registry.build(mesh, &mesh.nodes[0], None, events).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(arduino::run(node, Some(listener), async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop,
            running,
        }
    }

    /// Stop the node and return its report.
    pub async fn stop(self) -> arduino::Report {
        self.stop.send(()).unwrap();
        tokio::time::timeout(PATIENCE, self.running)
            .await
            .expect("the node stops in time")
            .unwrap()
            .unwrap()
    }
}

/// What a command of `arduino` that runs to its end did.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run `arduino ARGS` to its end, in an empty directory, with `env` set and the mesh and
/// secret variables otherwise cleared.
pub fn arduino(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let empty = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary());
    command
        .args(args)
        .current_dir(empty.path())
        .env_remove("ARDUINO_MESH")
        .env_remove("ARDUINO_SECRET")
        .env_remove("RUST_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("the arduino binary runs");
    Ran {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `promtool check metrics` accepts `metrics` without a word: Prometheus would scrape it.
pub fn promtool_accepts(metrics: &str) {
    use std::io::Write;
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool: {e}: install it (Debian: apt-get install -y prometheus)")
        });
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n{metrics}",
        output.status
    );
}

/// The numbers of a clock's summary line (`[ clock ] 40 ticks: 40 delivered, 0 failed`):
/// (ticks, delivered, failed).
pub fn ticks_of(line: &str) -> (u64, u64, u64) {
    // After the node's name, which may hold digits.
    let summary = line.rsplit("] ").next().unwrap_or(line);
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [ticks, delivered, failed] => (ticks, delivered, failed),
        _ => panic!("unexpected summary {line:?}"),
    }
}
