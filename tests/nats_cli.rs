//! `send`, `listen` and `view` through NATS, and the events nodes publish on
//! `arduino.events.<node>`: a real `nats-server` per test on a free port, and meshes run by
//! `arduino up` whose nodes have no port, so that NATS is the only way to them.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{MeshFile, PATIENCE, Process, arduino, free_port, nats::NatsServer};

/// A mesh over the server at `url`: a buzzer alone, without a port, and with `more` after it.
fn buzzer_mesh(url: &str, more: &str) -> MeshFile {
    MeshFile::new(&format!(
        "[nats]\nurl = \"{url}\"\n[[node]]\nname = \"buzzer\"\n{more}"
    ))
}

/// `send` through NATS prints each message's ack, in order, and exits 0.
#[test]
fn send_gets_the_acks_through_nats() {
    let server = NatsServer::start();
    let mesh = buzzer_mesh(&server.url(), "");
    let _up = Process::start(&["up", "--mesh", mesh.arg()], &[]);
    let ran = arduino(
        &[
            "send",
            "buzzer",
            "1",
            "0",
            "--mesh",
            mesh.arg(),
            "--timeout",
            "10",
        ],
        &[],
    );
    assert!(ran.ok, "{}", ran.stderr);
    assert_eq!(ran.stdout, "buzz buzz buzz\n...\n");
}

/// `send` started before the node waits for it, within its timeout, and then succeeds.
#[test]
fn send_before_the_node_is_up_waits_for_it() {
    let server = NatsServer::start();
    let mesh = buzzer_mesh(&server.url(), "");
    let mut send = Process::start(
        &[
            "send",
            "buzzer",
            "1",
            "--mesh",
            mesh.arg(),
            "--timeout",
            "10",
        ],
        &[],
    );
    // The send is under way when the node starts: it has asked, and no one answered.
    let deadline = Instant::now() + PATIENCE;
    while !has_asked(&server.monitoring("/connz"), "send") {
        assert!(Instant::now() < deadline, "send never asked");
        std::thread::sleep(Duration::from_millis(10)); // poll interval
    }
    assert!(send.stdout().is_empty());
    let _up = Process::start(&["up", "--mesh", mesh.arg()], &[]);
    assert!(send.wait().success(), "{}", send.log().join("\n"));
    assert_eq!(send.stdout(), ["buzz buzz buzz"]);
}

/// Whether the connection named `name` in the server's `/connz` has sent a message.
fn has_asked(connz: &str, name: &str) -> bool {
    let connz: serde_json::Value = serde_json::from_str(connz).unwrap();
    connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == name && c["in_msgs"].as_u64().unwrap_or(0) > 0)
}

/// `send` to a node that never comes up fails within its timeout, saying no copy is up.
#[test]
fn send_to_a_node_never_up_fails_in_time() {
    let server = NatsServer::start();
    let mesh = buzzer_mesh(&server.url(), "");
    let started = Instant::now();
    let ran = arduino(
        &[
            "send",
            "buzzer",
            "1",
            "--mesh",
            mesh.arg(),
            "--timeout",
            "1",
        ],
        &[],
    );
    let took = started.elapsed();
    assert!(!ran.ok);
    assert!(ran.stderr.contains("no buzzer is up"), "{}", ran.stderr);
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

/// The mesh's secret never travels through NATS: not in what `send` publishes, nor in the
/// events nodes publish.
#[tokio::test]
async fn send_never_gives_the_secret_to_nats() {
    let server = NatsServer::start();
    let secret = "s3cret-never-on-nats";
    let mesh = MeshFile::new(&format!(
        "secret = \"{secret}\"\n[nats]\nurl = \"{}\"\n[[node]]\nname = \"buzzer\"\n",
        server.url()
    ));
    let watcher = arduino::nats::connect(&server.url(), "watcher", None).unwrap();
    watcher.connected(PATIENCE).await.unwrap();
    let _up = Process::start(&["up", "--mesh", mesh.arg()], &[]);
    // The buzzer answers before the watcher listens to everything: a subscriber to `>` would
    // take requests itself, and a request sent before the buzzer is up would get no answer
    // rather than "no responders".
    let deadline = Instant::now() + PATIENCE;
    while watcher
        .request("arduino.buzzer.datafeed".into(), "0".into())
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the buzzer never answered");
        tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
    }
    let (seen_tx, mut seen) = tokio::sync::mpsc::channel(1024);
    watcher.subscribe(">", None, seen_tx, None);
    assert!(watcher.flush().await);
    let path = mesh.arg().to_owned();
    let ran = tokio::task::spawn_blocking(move || {
        arduino(
            &["send", "buzzer", "1", "--mesh", &path, "--timeout", "10"],
            &[],
        )
    })
    .await
    .unwrap();
    assert!(ran.ok, "{}", ran.stderr);
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(1);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline.into(), seen.recv()).await {
        count += 1;
        let all = [
            &msg.subject[..],
            msg.headers.as_deref().unwrap_or(b""),
            &msg.payload[..],
        ]
        .concat();
        assert!(!String::from_utf8_lossy(&all).contains(secret), "{msg:?}");
    }
    assert!(count > 0, "the watcher saw nothing");
}

/// A node reached only through NATS publishes its events on `arduino.events.<node>`: the JSON
/// objects of its `/events` feed.
#[tokio::test]
async fn a_nats_node_publishes_its_events() {
    let server = NatsServer::start();
    let mesh = buzzer_mesh(&server.url(), "");
    let watcher = arduino::nats::connect(&server.url(), "watcher", None).unwrap();
    watcher.connected(PATIENCE).await.unwrap();
    let (events_tx, mut events) = tokio::sync::mpsc::channel(1024);
    watcher.subscribe("arduino.events.buzzer", None, events_tx, None);
    assert!(watcher.flush().await);
    let _up = Process::start(&["up", "--mesh", mesh.arg()], &[]);
    let deadline = Instant::now() + PATIENCE;
    let ack = loop {
        let asked = watcher
            .request("arduino.buzzer.datafeed".into(), "1".into())
            .await;
        if let Ok(ack) = asked {
            break ack;
        }
        assert!(Instant::now() < deadline, "the buzzer never answered");
        tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
    };
    assert_eq!(&ack[..], b"buzz buzz buzz");
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &serde_json::Value| e["event"] == "ack") {
        let msg = tokio::time::timeout(PATIENCE, events.recv())
            .await
            .expect("no event within the patience")
            .unwrap();
        seen.push(serde_json::from_slice(&msg.payload).unwrap());
    }
    let message = seen.iter().find(|e| e["event"] == "message").unwrap();
    assert_eq!(message["node"], "buzzer");
    assert_eq!(message["text"], "1");
    assert_eq!(message["channel"], "/datafeed");
    assert!(message["time"].is_string());
}

/// With `events = false` in `[nats]`, a node publishes nothing on `arduino.events.<node>`; a
/// node of a mesh without it, asked after, does (the watcher hears it, so it would have heard
/// the first).
#[tokio::test]
async fn events_false_publishes_no_events() {
    let server = NatsServer::start();
    let quiet = buzzer_mesh(&server.url(), "");
    let text = std::fs::read_to_string(&quiet.path).unwrap();
    std::fs::write(
        &quiet.path,
        text.replacen("[nats]\n", "[nats]\nevents = false\n", 1),
    )
    .unwrap();
    let chatty = MeshFile::new(&format!(
        "[nats]\nurl = \"{}\"\n[[node]]\nname = \"bell\"\nsketch = \"buzzer\"\n",
        server.url()
    ));
    let watcher = arduino::nats::connect(&server.url(), "watcher", None).unwrap();
    watcher.connected(PATIENCE).await.unwrap();
    let (events_tx, mut events) = tokio::sync::mpsc::channel(1024);
    watcher.subscribe("arduino.events.>", None, events_tx, None);
    assert!(watcher.flush().await);
    let _quiet = Process::start(&["up", "--mesh", quiet.arg()], &[]);
    let _chatty = Process::start(&["up", "--mesh", chatty.arg()], &[]);
    for subject in ["arduino.buzzer.datafeed", "arduino.bell.datafeed"] {
        let deadline = Instant::now() + PATIENCE;
        while watcher.request(subject.into(), "1".into()).await.is_err() {
            assert!(Instant::now() < deadline, "{subject} never answered");
            tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
        }
    }
    loop {
        let msg = tokio::time::timeout(PATIENCE, events.recv())
            .await
            .expect("the bell's events never came")
            .unwrap();
        assert_eq!(&msg.subject[..], b"arduino.events.bell", "{msg:?}");
        let event: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        if event["event"] == "ack" {
            break;
        }
    }
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// With the NATS server gone, a node goes on acking its websocket clients; the events it
/// cannot publish are dropped and counted in its log, not kept.
#[test]
fn events_are_dropped_and_counted_while_the_server_is_down() {
    let mut server = NatsServer::start();
    let port = free_port();
    let mesh = buzzer_mesh(&server.url(), &format!("port = {port}\n"));
    let quiet = [("RUST_LOG", "arduino=info,arduino::sketches=warn")];
    let up = Process::start(&["up", "--mesh", mesh.arg()], &quiet);
    up.wait_for("NATS connected");
    server.stop();
    up.wait_for("NATS connection");
    let url = format!("ws://127.0.0.1:{port}/datafeed");
    let messages: Vec<String> = (0..2000).map(|n| (n % 2).to_string()).collect();
    let mut args = vec!["send", url.as_str(), "--timeout", "10"];
    args.extend(messages.iter().map(String::as_str));
    let ran = arduino(&args, &[]);
    assert!(ran.ok, "{}", ran.stderr);
    assert_eq!(ran.stdout.lines().count(), 2000);
    let before = rss_kib(up.pid());
    let ran = arduino(&args, &[]);
    assert!(ran.ok, "{}", ran.stderr);
    let grown = rss_kib(up.pid()).saturating_sub(before);
    assert!(grown < 4096, "the node grew by {grown} KiB");
    // Each message and its ack are two events: 8000 at least, said within a few seconds.
    let said = || -> u64 {
        up.log()
            .iter()
            .filter_map(|l| {
                let (before, _) = l.split_once(" events not published on arduino.events.buzzer")?;
                before.rsplit(' ').next()?.parse::<u64>().ok()
            })
            .sum()
    };
    let deadline = Instant::now() + PATIENCE;
    while said() < 8000 {
        assert!(Instant::now() < deadline, "only {} said dropped", said());
        std::thread::sleep(Duration::from_millis(50)); // poll interval
    }
    let line = up.wait_for("events not published on arduino.events.buzzer");
    assert!(line.contains("not connected to the NATS server"), "{line}");
}

/// Start `arduino listen ARGS` on the mesh and wait until its NATS subscription is in place
/// (the server counts it), so that what is sent next is heard.
fn listening(server: &NatsServer, mesh: &MeshFile, args: &[&str]) -> Process {
    let mut all = vec!["listen", "--mesh", mesh.arg()];
    all.extend_from_slice(args);
    let listen = Process::start(&all, &[]);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let connz: serde_json::Value =
            serde_json::from_str(&server.monitoring("/connz?subs=1")).unwrap();
        let subscribed = connz["connections"].as_array().unwrap().iter().any(|c| {
            c["name"] == "listen"
                && c["subscriptions_list"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty())
        });
        if subscribed {
            return listen;
        }
        assert!(Instant::now() < deadline, "listen never subscribed");
        std::thread::sleep(Duration::from_millis(10)); // poll interval
    }
}

/// `listen` through NATS prints, as lines a person reads, what a node did with a message.
#[test]
fn listen_prints_the_events_of_a_message_sent() {
    let server = NatsServer::start();
    let mesh = buzzer_mesh(&server.url(), "");
    let _up = Process::start(&["up", "--mesh", mesh.arg()], &[]);
    let listen = listening(&server, &mesh, &[]);
    let ran = arduino(
        &[
            "send",
            "buzzer",
            "1",
            "--mesh",
            mesh.arg(),
            "--timeout",
            "10",
        ],
        &[],
    );
    assert!(ran.ok, "{}", ran.stderr);
    let deadline = Instant::now() + PATIENCE;
    let wanted = ["[ buzzer ] /datafeed < 1", "[ buzzer ] > buzz buzz buzz"];
    while !wanted
        .iter()
        .all(|w| listen.stdout().iter().any(|line| line.contains(w)))
    {
        assert!(
            Instant::now() < deadline,
            "listen printed {:?}",
            listen.stdout()
        );
        std::thread::sleep(Duration::from_millis(10)); // poll interval
    }
}

/// `listen --json` through NATS gives one JSON object a line, each with `node` and `event`.
#[test]
fn listen_json_gives_json_lines() {
    let server = NatsServer::start();
    let mesh = buzzer_mesh(&server.url(), "");
    let _up = Process::start(&["up", "--mesh", mesh.arg()], &[]);
    let listen = listening(&server, &mesh, &["buzzer", "--json"]);
    let ran = arduino(
        &[
            "send",
            "buzzer",
            "0",
            "--mesh",
            mesh.arg(),
            "--timeout",
            "10",
        ],
        &[],
    );
    assert!(ran.ok, "{}", ran.stderr);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let lines = listen.stdout();
        let events: Vec<serde_json::Value> = lines
            .iter()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("{line:?}")))
            .collect();
        for event in &events {
            assert!(
                event["node"].is_string() && event["event"].is_string(),
                "{event}"
            );
        }
        if events
            .iter()
            .any(|e| e["event"] == "ack" && e["ack"] == "...")
        {
            break;
        }
        assert!(Instant::now() < deadline, "listen printed {lines:?}");
        std::thread::sleep(Duration::from_millis(10)); // poll interval
    }
}

/// `GET path` of the HTTP server at `addr`: the body, once `done` says it has what it needs
/// (an event stream does not end).
fn http_get(addr: &str, path: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(error) => assert!(Instant::now() < deadline, "{addr}: {error}"),
        }
        std::thread::sleep(Duration::from_millis(10)); // poll interval
    };
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut got = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{path} answered {text}");
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// `arduino view` on a NATS mesh shows its nodes without a port as up, and its `/events`
/// carries what they do.
#[test]
fn the_view_follows_nats_only_nodes() {
    let server = NatsServer::start();
    let mesh = buzzer_mesh(&server.url(), "");
    let _up = Process::start(&["up", "--mesh", mesh.arg()], &[]);
    let addr = format!("127.0.0.1:{}", free_port());
    let _view = Process::start(&["view", "--mesh", mesh.arg(), &addr], &[]);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let body = http_get(&addr, "/mesh.json", |text| text.ends_with('}'));
        let json = body.split_once("\r\n\r\n").unwrap().1;
        let picture: serde_json::Value = serde_json::from_str(json).unwrap();
        if picture["nodes"][0]["state"] == "up" {
            break;
        }
        assert!(Instant::now() < deadline, "{picture}");
        std::thread::sleep(Duration::from_millis(50)); // poll interval
    }
    let path = mesh.arg().to_owned();
    let sending = std::thread::spawn(move || {
        // Until the view's stream is open, messages may go unseen: send a few, a moment apart.
        for _ in 0..50 {
            let ran = arduino(&["send", "buzzer", "1", "--mesh", &path], &[]);
            assert!(ran.ok, "{}", ran.stderr);
        }
    });
    let events = http_get(&addr, "/events", |text| {
        text.contains(r#""event":"message""#) && text.contains(r#""ack":"buzz buzz buzz""#)
    });
    assert!(events.contains(r#""node":"buzzer""#), "{events}");
    sending.join().unwrap();
}
