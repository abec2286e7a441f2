//! Meshes across hosts: each node runs in a network namespace of its own, on a bridge, as
//! machines on one LAN would, and reaches its peers at their real addresses. The network is
//! built here as root with `ip` and taken down when the test ends, however it ends. Without
//! root or `ip netns` the tests say why and pass, unless `ARDUINO_NETNS_TESTS=required`.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use common::{MeshFile, PATIENCE, binary};

/// Networks made by this test process, so that each has names and a subnet of its own.
static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// Every name this file gives a namespace, bridge or link starts with this.
const PREFIX: &str = "ard";

/// A bridge and one namespace per host, each host at `10.213.N.(i+1)` on eth0, with its
/// loopback up. Dropping it deletes every namespace and link it made.
struct Network {
    /// `ard<pid in hex>x<n>`: at most 13 characters, so a link name fits in 15 with a suffix.
    tag: String,
    subnet: u32,
    bridge: Option<String>,
    /// The namespaces made so far, with the host end of each one's link.
    hosts: Vec<(String, String)>,
}

impl Network {
    /// A network of `count` hosts, or `None` (the test is skipped, and says why) when this
    /// machine cannot make one and `ARDUINO_NETNS_TESTS` is not `required`.
    fn new(count: usize) -> Option<Self> {
        let required = std::env::var("ARDUINO_NETNS_TESTS").is_ok_and(|v| v == "required");
        let skip = |why: String| {
            assert!(!required, "ARDUINO_NETNS_TESTS=required, but {why}");
            eprintln!("skipped: {why} (set ARDUINO_NETNS_TESTS=required to fail instead)");
        };
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            skip("building a network of namespaces needs root".to_owned());
            return None;
        }
        sweep_stale();
        let n = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let mut network = Self {
            tag: format!("{PREFIX}{:x}x{n}", std::process::id()),
            // The addresses exist only inside the namespaces, so two runs side by side
            // cannot clash on them; still, each network of a run has a /24 of its own.
            subnet: 1 + n % 250,
            bridge: None,
            hosts: Vec::new(),
        };
        if let Err(why) = network.build(count) {
            skip(format!(
                "`ip` could not build a network of namespaces: {why}"
            ));
            return None; // dropping it removes what was made
        }
        Some(network)
    }

    fn build(&mut self, count: usize) -> Result<(), String> {
        let bridge = format!("{}br", self.tag);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        self.bridge = Some(bridge.clone());
        ip(&["link", "set", &bridge, "up"])?;
        for host in 0..count {
            let namespace = self.namespace(host);
            let link = format!("{}h{host}", self.tag);
            ip(&["netns", "add", &namespace])?;
            self.hosts.push((namespace.clone(), link.clone()));
            ip(&[
                "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
            ])?;
            ip(&["link", "set", &link, "master", &bridge, "up"])?;
            let address = format!("{}/24", self.address(host));
            ip(&["-n", &namespace, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn namespace(&self, host: usize) -> String {
        format!("{}-{host}", self.tag)
    }

    /// Host number `host`'s address: hosts A, B, C are .1, .2, .3.
    fn address(&self, host: usize) -> String {
        format!("10.213.{}.{}", self.subnet, host + 1)
    }

    /// Take host `host` off the network (`up = false`) or put it back, at the bridge's end
    /// of its link, as a cable pulled and plugged in again.
    fn plug(&self, host: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["link", "set", &self.hosts[host].1, state]).unwrap();
    }

    /// Start `arduino ARGS...` on host `host`.
    fn start(&self, host: usize, args: &[&str]) -> Node {
        Node::start(&self.namespace(host), args)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for (namespace, link) in self.hosts.drain(..) {
            // Deleting a namespace deletes its end of the link, but only later: delete ours
            // now so that nothing is left when the test returns.
            let _ = ip(&["link", "del", &link]);
            let _ = ip(&["netns", "del", &namespace]);
        }
        if let Some(bridge) = self.bridge.take() {
            let _ = ip(&["link", "del", &bridge]);
        }
    }
}

/// Run `ip ARGS...`; its stderr when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Delete what test processes that were killed before their cleanup left behind: the
/// namespaces and bridges of this file's names whose process is gone.
fn sweep_stale() {
    let Ok(listed) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        let Some(namespace) = line.split_whitespace().next() else {
            continue;
        };
        let Some((tag, _host)) = namespace.rsplit_once('-') else {
            continue;
        };
        let Some(pid) = tag
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('x'))
            .and_then(|(pid, _)| u32::from_str_radix(pid, 16).ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", namespace]);
            let _ = ip(&["link", "del", &format!("{tag}br")]);
        }
    }
}

/// Lines a process wrote to stderr, shared with the thread that reads them.
#[derive(Default)]
struct Log {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

/// `arduino` running in a namespace (`ip netns exec` execs it: the child is arduino itself);
/// killed when dropped.
struct Node {
    child: Child,
    log: Arc<Log>,
    name: String,
    _cwd: tempfile::TempDir,
}

impl Node {
    fn start(namespace: &str, args: &[&str]) -> Self {
        Self::start_program(namespace, binary(), args)
    }

    /// `program` (arduino, or another such as nats-server) in `namespace`.
    fn start_program(namespace: &str, program: &str, args: &[&str]) -> Self {
        // An empty working directory, so that no mesh.toml is read by accident.
        let cwd = tempfile::tempdir().unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", namespace, program])
            .args(args)
            .current_dir(cwd.path())
            .env_remove("RUST_LOG")
            .env_remove("ARDUINO_MESH")
            .env_remove("ARDUINO_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec starts");
        let log = Arc::new(Log::default());
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            // A test that failed while holding the lock poisoned it: the lines still count.
            let lock = || lines.lines.lock().unwrap_or_else(|e| e.into_inner());
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lock().0.push(line);
                lines.changed.notify_all();
            }
            lock().1 = true;
            lines.changed.notify_all();
        });
        Self {
            child,
            log,
            name: format!("{namespace}: {program} {}", args.join(" ")),
            _cwd: cwd,
        }
    }

    /// The first line from index `from` on that contains `needle`, with its index, waiting
    /// for it; panics with the whole log if it does not come.
    fn wait_for_after(&self, needle: &str, from: usize) -> (usize, String) {
        let deadline = Instant::now() + PATIENCE;
        let mut guard = self.log.lines.lock().unwrap();
        loop {
            if let Some((i, line)) = guard
                .0
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| l.contains(needle))
            {
                return (i, line.clone());
            }
            let now = Instant::now();
            assert!(
                !guard.1 && now < deadline,
                "`{}` never logged {needle:?}; its log:\n{}",
                self.name,
                guard.0.join("\n")
            );
            guard = self
                .log
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap()
                .0;
        }
    }

    fn wait_for(&self, needle: &str) -> String {
        self.wait_for_after(needle, 0).1
    }

    fn count(&self, needle: &str) -> usize {
        let guard = self.log.lines.lock().unwrap();
        guard.0.iter().filter(|l| l.contains(needle)).count()
    }

    fn log(&self) -> String {
        self.log.lines.lock().unwrap().0.join("\n")
    }

    fn terminate(&self) {
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// Wait for the process to exit and its log to end, polling.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "`{}` did not exit; its log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5)); // poll interval
        };
        let mut guard = self.log.lines.lock().unwrap();
        while !guard.1 && Instant::now() < deadline {
            guard = self
                .log
                .changed
                .wait_timeout(guard, Duration::from_millis(100))
                .unwrap()
                .0;
        }
        status
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hosts of the demo: the clock on A, the buzzer on B, the iopin on C.
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// The demo mesh over `network`, with `clock` and `iopin` lines added to those nodes.
/// Each host is a namespace of its own, with ports of its own: fixed ports cannot clash.
fn demo_mesh(network: &Network, clock: &str, iopin: &str) -> MeshFile {
    let (buzzer_host, iopin_host) = (network.address(B), network.address(C));
    MeshFile::new(&format!(
        r#"
[[node]]
name = "clock"
to = ["iopin"]
{clock}
[[node]]
name = "iopin"
host = "{iopin_host}"
port = 8765
to = ["buzzer"]
seed = 7
{iopin}
[[node]]
name = "buzzer"
host = "{buzzer_host}"
port = 8766
"#
    ))
}

/// The clock's summary: (ticks, delivered, failed).
fn clock_summary(clock: &Node) -> (u64, u64, u64) {
    common::ticks_of(&clock.wait_for(" ticks: "))
}

/// Three hosts: the clock on A drives the iopin on C, which streams to the buzzer on B, each
/// reached at its own address; every tick is acknowledged hop by hop.
#[test]
fn the_demo_mesh_runs_across_three_hosts() {
    let Some(network) = Network::new(3) else {
        return;
    };
    let mesh = demo_mesh(
        &network,
        "[node.config]\ntacks = 3\ndelay = 0.05",
        "[node.config]\nsequence = 3",
    );
    let buzzer_at = format!("listening on ws://{}:8766", network.address(B));
    let iopin_at = format!("listening on ws://{}:8765", network.address(C));
    let mut buzzer = network.start(B, &["buzzer", "--mesh", mesh.arg()]);
    buzzer.wait_for(&buzzer_at);
    let mut iopin = network.start(C, &["iopin", "--mesh", mesh.arg()]);
    iopin.wait_for(&iopin_at);
    let mut clock = network.start(A, &["clock", "--mesh", mesh.arg()]);
    let status = clock.wait();
    assert!(status.success(), "{}", clock.log());
    assert_eq!(clock_summary(&clock), (3, 3, 0));
    assert_eq!(clock.count("< acknowledged"), 3, "{}", clock.log());
    clock.wait_for(&format!(
        "link to iopin up (ws://{}:8765/datafeed)",
        network.address(C)
    ));

    iopin.terminate();
    buzzer.terminate();
    assert!(iopin.wait().success(), "{}", iopin.log());
    assert!(buzzer.wait().success(), "{}", buzzer.log());
    iopin.wait_for(&format!(
        "link to buzzer up (ws://{}:8766/datafeed)",
        network.address(B)
    ));
    iopin.wait_for("handled 3 messages; sent 9 to peers: 9 acknowledged, 0 failed");
    buzzer.wait_for("handled 9 messages");
    assert_eq!(buzzer.count("] < "), 9, "{}", buzzer.log());
    assert_eq!(buzzer.count("] > "), 9, "{}", buzzer.log());
}

/// The demo over a NATS server on host A, its nodes without ports on the others: each hop is
/// a request through the server, across the network; every tick is acknowledged hop by hop.
#[test]
fn the_demo_mesh_runs_across_hosts_over_nats() {
    let Some(network) = Network::new(3) else {
        return;
    };
    let server_at = network.address(A);
    let server = Node::start_program(
        &network.namespace(A),
        "nats-server",
        &["-a", &server_at, "-p", "4222"],
    );
    server.wait_for("Server is ready");
    let mesh = MeshFile::new(&format!(
        "[nats]\nurl = \"nats://{server_at}:4222\"\n\
         [[node]]\nname = \"clock\"\nto = [\"iopin\"]\n[node.config]\ntacks = 3\ndelay = 0.05\n\
         [[node]]\nname = \"iopin\"\nto = [\"buzzer\"]\n\
         [[node]]\nname = \"buzzer\"\n"
    ));
    let mut buzzer = network.start(B, &["buzzer", "--mesh", mesh.arg()]);
    buzzer.wait_for("NATS connected");
    let mut iopin = network.start(C, &["iopin", "--mesh", mesh.arg()]);
    iopin.wait_for("NATS connected");
    let mut clock = network.start(A, &["clock", "--mesh", mesh.arg()]);
    let status = clock.wait();
    assert!(status.success(), "{}", clock.log());
    assert_eq!(clock_summary(&clock), (3, 3, 0), "{}", clock.log());
    iopin.terminate();
    buzzer.terminate();
    assert!(iopin.wait().success(), "{}", iopin.log());
    assert!(buzzer.wait().success(), "{}", buzzer.log());
    iopin.wait_for("handled 3 messages; sent 9 to peers: 9 acknowledged, 0 failed");
    buzzer.wait_for("handled 9 messages");
}

/// A host taken off the network mid-run: the ticks that cannot reach it fail, and say why in
/// the clock's log and exit status; once it is back, ticks are acknowledged again.
#[test]
fn a_host_cut_off_is_reported_and_rejoins() {
    let Some(network) = Network::new(3) else {
        return;
    };
    // The iopin gives up on the buzzer well before the clock gives up on the iopin, so the
    // iopin's reason reaches the clock; no retries, so every failed tick is counted.
    let mesh = demo_mesh(
        &network,
        "timeout = 3.0\n[node.config]\ntacks = 100000\ndelay = 0.05\nretries = 0",
        "timeout = 0.5",
    );
    let buzzer = network.start(B, &["buzzer", "--mesh", mesh.arg()]);
    buzzer.wait_for("listening on ws://");
    let iopin = network.start(C, &["iopin", "--mesh", mesh.arg()]);
    iopin.wait_for("listening on ws://");
    let mut clock = network.start(A, &["clock", "--mesh", mesh.arg()]);
    let (acked, _) = clock.wait_for_after("< acknowledged", 0);
    clock.wait_for_after("< acknowledged", acked + 1);

    network.plug(B, false);
    let (failed_at, line) = clock.wait_for_after("message to iopin failed: iopin answered: ", 0);
    assert!(
        line.contains("buzzer did not acknowledge within 0.5s")
            || line.contains("buzzer is unreachable"),
        "{line}"
    );
    iopin.wait_for("message to buzzer failed: ");

    network.plug(B, true);
    let (back_at, _) = clock.wait_for_after("< acknowledged", failed_at);
    clock.wait_for_after("< acknowledged", back_at + 1);
    let heard = buzzer.count("] < ");

    clock.terminate();
    let status = clock.wait();
    let (ticks, delivered, failed) = clock_summary(&clock);
    assert!(failed >= 1, "{}", clock.log());
    assert_eq!(clock.count("< acknowledged") as u64, delivered);
    assert_eq!(clock.count("message to iopin failed") as u64, failed);
    // Ticks that were not delivered make the exit status non-zero, with a line saying so.
    assert!(!status.success(), "{}", clock.log());
    clock.wait_for(&format!(
        "clock: {failed} of {ticks} ticks were not delivered"
    ));
    assert!(heard > 0, "the buzzer heard nothing");
}
