//! NATS: a real `nats-server` started per test on a free port, and a node's client to it.
//! Without `nats-server` on the PATH the tests say so and fail (CI installs it: Debian's
//! `nats-server`).

mod common;

use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{MeshFile, PATIENCE, Process, arduino, free_port, nats::NatsServer, ws};

/// The helper's server starts, stops (its port then refuses), and starts again on the same
/// port: what a test of a server restart needs.
#[test]
fn a_server_starts_stops_and_restarts_on_its_port() {
    let mut server = NatsServer::start();
    let port = server.port;
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    server.stop();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    server.restart();
    assert_eq!(server.port, port);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
}

/// A node's client is named after its node on the server, and after the server restarts it
/// reconnects by itself, subscribes again, and requests on the node's subject are answered
/// again; a request nobody answers fails at once as "no responders".
#[tokio::test]
async fn a_nodes_client_is_named_and_rides_out_a_server_restart() {
    let mut server = NatsServer::start();
    let node = arduino::nats::connect(&server.url(), "iopin", None).unwrap();
    let subject = arduino::nats::subject("iopin", "/datafeed").unwrap();
    assert_eq!(subject, "arduino.iopin.datafeed");
    let (requests_tx, mut requests) = tokio::sync::mpsc::channel(16);
    node.subscribe(&subject, Some("iopin"), requests_tx, None);
    let answering = node.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            if let Some(reply) = request.reply {
                answering.publish(reply, None, "acknowledged".into());
            }
        }
    });
    let sender = arduino::nats::connect(&server.url(), "clock", None).unwrap();
    // Both connect in the background: ask until answered.
    let ask_until_answered = |payload: &'static str| {
        let sender = sender.clone();
        let subject = subject.clone();
        async move {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let answered = tokio::time::timeout(
                    Duration::from_millis(500),
                    sender.request(subject.clone().into(), payload.into()),
                )
                .await;
                if let Ok(Ok(reply)) = answered {
                    return reply;
                }
                assert!(Instant::now() < deadline, "no answer: {answered:?}");
                tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
            }
        }
    };
    assert_eq!(&ask_until_answered("1").await[..], b"acknowledged");
    let connections = server.monitoring("/connz");
    assert!(
        connections.contains("\"name\": \"iopin\"") && connections.contains("\"name\": \"clock\""),
        "{connections}"
    );
    let nobody = tokio::time::timeout(
        PATIENCE,
        sender.request("arduino.nobody".into(), "1".into()),
    )
    .await
    .unwrap();
    assert_eq!(nobody, Err(arduino::nats::RequestError::NoResponders));

    server.restart();
    assert_eq!(&ask_until_answered("2").await[..], b"acknowledged");
}

/// A URL that is no NATS URL is refused in one line that shows no credentials.
#[tokio::test]
async fn a_bad_url_is_refused_in_words() {
    let Err(error) = arduino::nats::connect("http://user:s3cret@127.0.0.1:1", "iopin", None) else {
        panic!("an http:// URL was taken");
    };
    let error = error.to_string();
    assert_eq!(
        error,
        "http://127.0.0.1:1: the NATS URL must start with nats:// or tls://, not \"http://\""
    );
}

/// The demo mesh on `url`: a clock of `tacks` ticks 50 ms apart, an iopin and a buzzer,
/// none with a port; `buzzer` and `extra` add lines to the buzzer's and clock's entries.
fn demo(url: &str, tacks: u32, clock: &str, buzzer: &str) -> String {
    format!(
        "[nats]\nurl = \"{url}\"\n\
         [[node]]\nname = \"clock\"\nto = [\"iopin\"]\n{clock}\n\
         [node.config]\ntacks = {tacks}\ndelay = 0.05\n\
         [[node]]\nname = \"iopin\"\nto = [\"buzzer\"]\n{clock}\n\
         [[node]]\nname = \"buzzer\"\n{buzzer}\n"
    )
}

/// `N ticks: D delivered, F failed` from a clock's log: (N, D, F).
fn ticks(log: &[String]) -> (u64, u64, u64) {
    let line = log
        .iter()
        .find(|line| line.contains(" delivered, ") && line.contains(" ticks: "))
        .unwrap_or_else(|| panic!("no summary of ticks in:\n{}", log.join("\n")));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [n, d, f] => (n, d, f),
        _ => panic!("unexpected summary: {line}"),
    }
}

/// How many messages the summary of `node` (as logs name it) says it handled.
fn handled(log: &str, node: &str) -> u64 {
    let marker = format!("[ {node} ] handled ");
    let line = log
        .lines()
        .find(|line| line.contains(&marker))
        .unwrap_or_else(|| panic!("no summary of {node} in:\n{log}"));
    line.split(&marker)
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

/// `arduino up` runs the demo over NATS with two copies of the buzzer: every tick is
/// acknowledged, both copies handle messages and say how many, and the nodes' connections
/// are named after them on the server.
#[test]
fn up_runs_the_demo_over_nats_with_two_copies_of_a_node() {
    let server = NatsServer::start();
    let mesh = MeshFile::new(&demo(&server.url(), 12, "", "replicas = 2"));
    let ran = arduino(&["up", "--mesh", mesh.arg()], &[]);
    assert!(ran.ok, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("[ clock ] 12 ticks: 12 delivered, 0 failed"),
        "{}",
        ran.stderr
    );
    let (one, two) = (
        handled(&ran.stderr, "buzzer#1"),
        handled(&ran.stderr, "buzzer#2"),
    );
    assert_eq!(one + two, 36, "{}", ran.stderr);
    assert!(one > 0 && two > 0, "one copy took it all: {one} and {two}");
}

/// The demo as three processes through NATS, the clock started first: it waits for the
/// iopin, which is up later, and every tick is acknowledged hop by hop; each connection is
/// named after its node.
#[test]
fn separate_processes_run_the_demo_over_nats_in_any_start_order() {
    let server = NatsServer::start();
    let mesh = MeshFile::new(&demo(&server.url(), 5, "", ""));
    let mut clock = Process::start(&["clock", "--mesh", mesh.arg()], &[]);
    clock.wait_for("waiting for iopin");
    clock.wait_for("no iopin is up");
    let buzzer = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    let iopin = Process::start(&["iopin", "--mesh", mesh.arg()], &[]);
    buzzer.wait_for("answering on arduino.buzzer");
    let status = clock.wait();
    assert!(status.success(), "{}", clock.log().join("\n"));
    assert_eq!(ticks(&clock.log()), (5, 5, 0));
    assert_eq!(clock.count("< acknowledged"), 5);
    iopin.wait_for("> acknowledged");
    let connections = server.monitoring("/connz");
    for name in ["iopin", "buzzer"] {
        assert!(
            connections.contains(&format!("\"name\": \"{name}\"")),
            "{connections}"
        );
    }
}

/// In a NATS mesh, a node with a port still serves websocket clients on it (ours and a
/// Python one), and answers through NATS too.
#[tokio::test]
async fn a_node_with_a_port_serves_websockets_and_nats() {
    let server = NatsServer::start();
    let mesh = MeshFile::new(&demo(&server.url(), 1, "", ""));
    let (buzzer, addr) = Process::node(&["buzzer", "--port", "0", "--mesh", mesh.arg()], &[]);
    let mut client = ws::connect(&format!("ws://{addr}/datafeed")).await;
    assert_eq!(ws::ask(&mut client, "1").await, "buzz buzz buzz");
    // And a Python client, as the program this project grew from speaks.
    let python = Command::new("python3")
        .args([
            "-c",
            "import asyncio, sys, websockets\n\
             async def main():\n\
             \x20   async with websockets.connect(sys.argv[1]) as ws:\n\
             \x20       await ws.send('1')\n\
             \x20       print(await ws.recv())\n\
             asyncio.run(main())\n",
            &format!("ws://{addr}/datafeed"),
        ])
        .output()
        .expect("python3 runs (with `pip install websockets`)");
    assert_eq!(
        String::from_utf8_lossy(&python.stdout).trim(),
        "buzz buzz buzz",
        "{}",
        String::from_utf8_lossy(&python.stderr)
    );
    buzzer.wait_for("answering on arduino.buzzer");
    let nats = arduino::nats::connect(&server.url(), "test", None).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let reply = loop {
        match nats
            .request("arduino.buzzer.datafeed".into(), "0".into())
            .await
        {
            Ok(reply) => break reply,
            Err(error) => assert!(Instant::now() < deadline, "{error}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
    };
    assert_eq!(&reply[..], b"...");
}

/// A channel that cannot be a NATS subject is refused when a message on it is to travel
/// through NATS: the relaying node acknowledges it with an error that says why.
#[tokio::test]
async fn a_channel_that_cannot_be_a_subject_is_refused_in_words() {
    let server = NatsServer::start();
    let mesh = MeshFile::new(&demo(&server.url(), 1, "", ""));
    let _buzzer = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    let (_iopin, addr) = Process::node(&["iopin", "--port", "0", "--mesh", mesh.arg()], &[]);
    let mut client = ws::connect(&format!("ws://{addr}/v1.2")).await;
    let ack = ws::ask(&mut client, "1").await;
    assert!(ack.starts_with("error: "), "{ack}");
    assert!(
        ack.contains("the channel \"/v1.2\" has '.', which a NATS subject cannot hold"),
        "{ack}"
    );
}

/// Two processes started as the same buzzer share its load; one is killed with SIGKILL
/// mid-run: every tick still ends acknowledged or reported as failed, and the exit status
/// says whether any failed.
#[test]
fn a_copy_killed_mid_run_loses_no_tick_silently() {
    let server = NatsServer::start();
    let mesh = MeshFile::new(&demo(&server.url(), 60, "timeout = 1.0", ""));
    let first = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    let second = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    let _iopin = Process::start(&["iopin", "--mesh", mesh.arg()], &[]);
    let mut clock = Process::start(&["clock", "--mesh", mesh.arg()], &[]);
    first.wait_for("< 1 on /datafeed");
    second.wait_for("< 1 on /datafeed");
    first.signal("KILL");
    let status = clock.wait();
    let (sent, delivered, failed) = ticks(&clock.log());
    assert_eq!(sent, 60);
    assert_eq!(delivered + failed, sent, "{}", clock.log().join("\n"));
    assert_eq!(status.success(), failed == 0, "{}", clock.log().join("\n"));
    if failed > 0 {
        clock.wait_for(&format!("{failed} of 60 ticks were not delivered"));
    }
    // The copy left took the rest: ticks after the kill were acknowledged.
    let after = second.count("< ");
    assert!(after > 0 && delivered > 0);
}

/// A program for an exec sketch that says `holding TEXT` on its stderr for each message,
/// then holds it `seconds` before acknowledging `heard`: its directory, and its path.
fn slow_program(seconds: f64) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("slow.py");
    std::fs::write(
        &slow,
        format!(
            "import json, sys, time\n\
             for line in sys.stdin:\n\
             \x20   request = json.loads(line)\n\
             \x20   if 'id' not in request:\n\
             \x20       continue\n\
             \x20   if request['type'] == 'message':\n\
             \x20       print('holding', request['text'], file=sys.stderr, flush=True)\n\
             \x20       time.sleep({seconds})\n\
             \x20   print(json.dumps({{'id': request['id'], 'ack': 'heard'}}), flush=True)\n"
        ),
    )
    .unwrap();
    let path = slow.to_str().unwrap().to_owned();
    (dir, path)
}

/// A node stopping with a request in hand through NATS answers it (`error: the node is
/// stopping`, as its sketch does not finish in the grace) and the requests it had not
/// started, unsubscribes, and exits within a second.
#[tokio::test]
async fn a_stopping_node_answers_what_it_was_given_through_nats() {
    let server = NatsServer::start();
    let (_dir, slow) = slow_program(5.0);
    let mesh = MeshFile::new(&format!(
        "[nats]\nurl = \"{}\"\n[[node]]\nname = \"buzzer\"\nsketch = \"exec\"\n\
         [node.config]\ncommand = [\"python3\", \"-u\", {slow:?}]\n",
        server.url()
    ));
    let mut buzzer = Process::start(&["exec", "--name", "buzzer", "--mesh", mesh.arg()], &[]);
    buzzer.wait_for("answering on arduino.buzzer");
    let nats = arduino::nats::connect(&server.url(), "test", None).unwrap();
    nats.connected(PATIENCE).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    let ask = |text: &'static str| {
        let reply = nats
            .start_request("arduino.buzzer.datafeed".into(), None, text.into())
            .unwrap();
        async move {
            tokio::time::timeout(PATIENCE, reply)
                .await
                .unwrap()
                .unwrap()
        }
    };
    // Until the node has subscribed, a request finds no responders.
    let (first, second) = loop {
        let first = ask("1");
        let second = ask("2");
        // The node holds the first once it has it; if it never comes, nobody was subscribed.
        let reached = Instant::now() + Duration::from_millis(200);
        while buzzer.count("holding 1") == 0 && Instant::now() < reached {
            tokio::time::sleep(Duration::from_millis(5)).await; // poll interval
        }
        if buzzer.count("holding 1") > 0 {
            break (first, second);
        }
        assert!(Instant::now() < deadline, "{}", buzzer.log().join("\n"));
    };
    let asked = Instant::now();
    buzzer.signal("TERM");
    let (first, second) = tokio::join!(first, second);
    let stopping = Ok(bytes::Bytes::from_static(b"error: the node is stopping"));
    assert_eq!((first, second), (stopping.clone(), stopping));
    assert!(buzzer.wait().success());
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
}

/// The NATS server restarts mid-run, with a tick in flight (the buzzer, a slow program,
/// holds its message): the nodes reconnect, the message in flight fails, is reported and
/// counted (and the clock sends its tick again), the ticks after are acknowledged, and every
/// message and tick is accounted for, in the summary and the exit status.
#[test]
fn a_server_restart_mid_run_is_ridden_out() {
    let mut server = NatsServer::start();
    let (_dir, slow) = slow_program(0.3);
    let mesh = MeshFile::new(&format!(
        "[nats]\nurl = \"{}\"\n\
         [[node]]\nname = \"clock\"\nto = [\"iopin\"]\ntimeout = 2.0\n\
         [node.config]\ntacks = 6\ndelay = 0.05\n\
         [[node]]\nname = \"iopin\"\nto = [\"buzzer\"]\ntimeout = 2.0\n\
         [node.config]\nsequence = 1\n\
         [[node]]\nname = \"buzzer\"\nsketch = \"exec\"\n\
         [node.config]\ncommand = [\"python3\", \"-u\", {slow:?}]\n",
        server.url(),
    ));
    let buzzer = Process::start(&["exec", "--name", "buzzer", "--mesh", mesh.arg()], &[]);
    let _iopin = Process::start(&["iopin", "--mesh", mesh.arg()], &[]);
    let mut clock = Process::start(&["clock", "--mesh", mesh.arg()], &[]);
    buzzer.wait_for("holding");
    server.restart();
    let restarted = clock.log().len();
    let status = clock.wait();
    let log = clock.log().join("\n");
    // The message in flight failed, was reported and counted, and the clock sent its tick
    // again: every message sent ended acknowledged or failed.
    clock.wait_for("the connection to the NATS server was lost");
    let sends = clock
        .log()
        .into_iter()
        .find(|line| line.contains(" to peers: "))
        .unwrap_or_else(|| panic!("no summary of sends: {log}"));
    let numbers: Vec<u64> = sends
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [sent, acked, failed] = numbers[..] else {
        panic!("unexpected summary: {sends}")
    };
    assert!(failed >= 1, "the message in flight did not fail: {log}");
    assert_eq!(acked + failed, sent, "{log}");
    let (ticks_sent, delivered, ticks_failed) = ticks(&clock.log());
    assert_eq!(delivered + ticks_failed, ticks_sent, "{log}");
    assert!(
        clock.log()[restarted..]
            .iter()
            .any(|line| line.contains("< acknowledged")),
        "no tick acknowledged after the restart: {log}"
    );
    assert_eq!(status.success(), ticks_failed == 0, "{log}");
}

/// A node of a NATS mesh asked to stop exits within a second, with the server up and
/// with it gone.
#[test]
fn a_node_stops_within_a_second_with_nats_up_or_down() {
    let mut server = NatsServer::start();
    let mesh = MeshFile::new(&demo(&server.url(), 1, "", ""));
    for server_up in [true, false] {
        let mut buzzer = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
        buzzer.wait_for("answering on arduino.buzzer");
        if server_up {
            buzzer.wait_for("NATS connected");
        } else {
            server.stop();
        }
        let asked = Instant::now();
        buzzer.signal("TERM");
        let status = buzzer.wait();
        assert!(status.success(), "{}", buzzer.log().join("\n"));
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "took {:?} (server up: {server_up})",
            asked.elapsed()
        );
    }
}

/// The example NATS mesh and its Procfile run the demo under foreman, a second buzzer
/// process joining the first's queue group: every tick acknowledged, all stop cleanly.
#[test]
fn the_nats_example_runs_under_foreman() {
    use std::io::BufRead;
    let server = NatsServer::start();
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!("{root}/examples/Procfile.nats"),
        dir.path().join("Procfile"),
    )
    .unwrap();
    let shipped = std::fs::read_to_string(format!("{root}/examples/nats-mesh.toml")).unwrap();
    assert!(shipped.contains("nats://127.0.0.1:4222") && shipped.contains("port = 8766"));
    let mesh = shipped
        .replace("nats://127.0.0.1:4222", &server.url())
        .replace("port = 8766", &format!("port = {}", free_port()))
        .replace("delay = 1.0", "delay = 0.05");
    std::fs::write(dir.path().join("mesh.toml"), mesh).unwrap();
    let mut foreman = Command::new("foreman")
        .args(["start", "--no-timestamp", "-f", "Procfile", "-d"])
        .arg(dir.path())
        .current_dir(dir.path())
        .env("ARDUINO", common::binary())
        .env("ARDUINO_MESH", dir.path().join("mesh.toml"))
        .env_remove("RUST_LOG")
        .env_remove("ARDUINO_SECRET")
        .env_remove("ARDUINO_NATS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("foreman runs (apt-get install -y ruby-foreman)");
    let stdout = foreman.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
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
    assert_eq!(
        count("[ clock ] 5 ticks: 5 delivered, 0 failed"),
        1,
        "{log}"
    );
    assert_eq!(count("exited with code 0"), 4, "{log}");
    assert!(status.success(), "foreman: {status:?}\n{log}");
}

/// `tls://` through a server that requires TLS, trusting the mesh's `[tls]` CA: the demo
/// runs with two copies of the buzzer reached through it. Without `[tls]`, the node says
/// what is missing.
#[test]
fn a_tls_nats_server_carries_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &str| {
        let output = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir.path())
            .output()
            .expect("openssl runs (Debian: apt-get install -y openssl)");
        assert!(output.status.success(), "openssl {args}: {output:?}");
    };
    let req = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2";
    openssl(&format!("{req} -keyout ca.key -out ca.pem -subj /CN=ca"));
    openssl(&format!(
        "{req} -keyout node.key -out node.pem -subj /CN=nats -addext \
         subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE -CA ca.pem \
         -CAkey ca.key"
    ));
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (cert, key) = (path("node.pem"), path("node.key"));
    let server = NatsServer::with(
        free_port(),
        free_port(),
        &["--tls", "--tlscert", &cert, "--tlskey", &key],
    );
    let url = format!("tls://127.0.0.1:{}", server.port);
    let tls = "[tls]\ncert = \"node.pem\"\nkey = \"node.key\"\nca = \"ca.pem\"\n";
    let mesh_path = dir.path().join("mesh.toml");
    std::fs::write(
        &mesh_path,
        format!("{tls}{}", demo(&url, 4, "", "replicas = 2")),
    )
    .unwrap();
    let ran = arduino(&["up", "--mesh", mesh_path.to_str().unwrap()], &[]);
    assert!(ran.ok, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("[ clock ] 4 ticks: 4 delivered, 0 failed"),
        "{}",
        ran.stderr
    );

    // Without the CA, the node cannot check the server, and says what to give it.
    let plain = MeshFile::new(&demo(&server.url(), 1, "", ""));
    let buzzer = Process::start(&["buzzer", "--mesh", plain.arg()], &[]);
    buzzer.wait_for("the server requires TLS: give the mesh a [tls] table");
}

/// A node serves a bounded number of channels through NATS: a request on one channel too
/// many is answered at once with an error that says so, and the others are still served.
#[tokio::test]
async fn channels_over_the_bound_are_refused_in_words() {
    let server = NatsServer::start();
    let mesh = MeshFile::new(&demo(&server.url(), 1, "", ""));
    let buzzer = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    buzzer.wait_for("answering on arduino.buzzer");
    let nats = arduino::nats::connect(&server.url(), "test", None).unwrap();
    let ask = |channel: String| {
        let nats = nats.clone();
        async move {
            let subject = format!("arduino.buzzer.{channel}");
            let deadline = Instant::now() + PATIENCE;
            loop {
                match nats.request(subject.clone().into(), "1".into()).await {
                    Ok(reply) => return String::from_utf8(reply.to_vec()).unwrap(),
                    Err(error) => assert!(Instant::now() < deadline, "{error}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
            }
        }
    };
    for n in 0..64 {
        assert_eq!(ask(format!("c{n}")).await, "buzz buzz buzz", "channel {n}");
    }
    assert_eq!(
        ask("c64".to_owned()).await,
        "error: buzzer serves 64 channels through NATS at most: this one is one too many"
    );
    assert_eq!(ask("c0".to_owned()).await, "buzz buzz buzz");
}

/// Credentials in the URL reach the server: a user and password it requires let the client
/// in, and a wrong password is refused with the server's reason, in the node's log.
#[tokio::test]
async fn credentials_in_the_url_are_sent_and_a_refusal_is_said() {
    let server = NatsServer::with(
        free_port(),
        free_port(),
        &["--user", "pin", "--pass", "s3cret"],
    );
    let good = format!("nats://pin:s3cret@127.0.0.1:{}", server.port);
    let client = arduino::nats::connect(&good, "test", None).unwrap();
    client.connected(PATIENCE).await.unwrap();
    let (messages_tx, mut messages) = tokio::sync::mpsc::channel(1);
    client.subscribe("arduino.x", None, messages_tx, None);
    assert!(client.flush().await);
    client.publish("arduino.x".into(), None, "1".into());
    let message = tokio::time::timeout(PATIENCE, messages.recv())
        .await
        .unwrap();
    assert_eq!(&message.unwrap().payload[..], b"1");

    let bad = format!("nats://pin:wrong@127.0.0.1:{}", server.port);
    let mesh = MeshFile::new(&demo(&bad, 1, "", ""));
    let buzzer = Process::start(&["buzzer", "--mesh", mesh.arg()], &[]);
    let line = buzzer.wait_for("cannot reach the NATS server");
    assert!(
        line.contains("the server refused: Authorization Violation"),
        "{line}"
    );
    assert!(!line.contains("wrong"), "the password is shown: {line}");
}
