//! The runtime's events, in one place a program can subscribe to: an observer sees a node's
//! lifecycle, every message in and ack out, and its links to peers.

mod common;

use std::sync::{Arc, Mutex};

use arduino::{Event, Events, Observer};
use common::ws;

/// Records what it sees, in words.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Observer for Recorder {
    fn observe(&self, node: &str, event: &Event<'_>) {
        let seen = match event {
            Event::Listening { .. } => "listening".to_owned(),
            Event::ClientUp { channel, .. } => format!("client up on {channel}"),
            Event::MessageIn { text, .. } => format!("in {text}"),
            Event::AckOut { ack, .. } => format!("out {ack}"),
            Event::PeerUp { peer, .. } => format!("peer up {peer}"),
            Event::Stopping => "stopping".to_owned(),
            _ => return,
        };
        self.0.lock().unwrap().push(format!("{node}: {seen}"));
    }
}

/// An observer sees an iopin's events in order: listening, a client, each message and ack,
/// its link to the buzzer coming up, and the stop.
#[tokio::test]
async fn an_observer_sees_every_event_in_order() {
    let (_buzzer, buzzer) = common::Process::node(&["buzzer", "--port", "0"], &[]);
    let mesh = arduino::Mesh::parse(
        &format!("[[node]]\nname = \"pin\"\nsketch = \"iopin\"\nport = 1\nto = [\"ws://{buzzer}\"]\n[node.config]\nsequence = 1\n"),
        "test mesh",
    )
    .unwrap();
    let recorder = Arc::new(Recorder::default());
    let events = Events::new("pin").observe(recorder.clone());
    let node = common::InProcess::start_with(&arduino::builtin(), &mesh, events).await;
    let mut client = ws::connect(&format!("ws://{}/porch", node.addr)).await;
    assert_eq!(ws::ask(&mut client, "7").await, "acknowledged");
    assert_eq!(ws::ask(&mut client, "8").await, "acknowledged");
    node.stop().await;

    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "pin: listening",
            "pin: client up on /porch",
            "pin: in 7",
            &format!("pin: peer up ws://{buzzer}"),
            "pin: out acknowledged",
            "pin: in 8",
            "pin: out acknowledged",
            "pin: stopping",
        ]
    );
}

/// Text from clients is logged escaped and cut: a message cannot forge a log line, reach the
/// terminal with escape codes, or make a 1 MiB line. (The lines looked at are the runtime's
/// own, which carry the client's address at -v; what a sketch logs is the sketch's business.)
#[tokio::test]
async fn logged_text_cannot_forge_lines_or_flood_the_log() {
    let (buzzer, addr) = common::Process::node(&["buzzer", "--port", "0", "-v"], &[]);
    let mut client = ws::connect(&format!("ws://{addr}/porch")).await;
    let forged = "1\n[ clock ] 5 ticks: 5 delivered\u{1b}[2J\u{1b}[31mred";
    assert_eq!(ws::ask(&mut client, forged).await, "...");
    let big = "x".repeat(1 << 20);
    assert_eq!(ws::ask(&mut client, &big).await, "...");
    assert_eq!(ws::ask(&mut client, "last").await, "...");
    buzzer.wait_for("< last");

    let client_address = format!(
        "client={}",
        client.get_ref().get_ref().local_addr().unwrap()
    );
    let log: Vec<_> = buzzer
        .log()
        .into_iter()
        .filter(|line| line.contains(&client_address))
        .collect();
    let forging: Vec<_> = log.iter().filter(|l| l.contains("5 ticks")).collect();
    assert_eq!(forging.len(), 1, "{log:#?}");
    assert!(
        forging[0]
            .starts_with(r"[ buzzer ] < 1\n[ clock ] 5 ticks: 5 delivered\u{1b}[2J\u{1b}[31mred "),
        "{}",
        forging[0]
    );
    assert!(!log.iter().any(|l| l.contains('\u{1b}')), "{log:#?}");
    let longest = log.iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 400, "a log line of {longest} bytes");
    let cut = format!("< {}... ({} bytes)", &big[..120], big.len());
    assert_eq!(
        log.iter().filter(|l| l.contains(&cut)).count(),
        1,
        "{log:#?}"
    );
}

/// The runtime logs every message and its ack at info, so that a sketch (the buzzer here,
/// which logs nothing per message itself) is seen at work without logging code of its own;
/// `-q` drops those lines and keeps the lifecycle ones.
#[tokio::test]
async fn every_message_and_its_ack_are_logged_unless_quiet() {
    for quiet in [false, true] {
        let args: &[&str] = if quiet {
            &["buzzer", "--port", "0", "-q"]
        } else {
            &["buzzer", "--port", "0"]
        };
        let (mut buzzer, addr) = common::Process::node(args, &[]);
        let mut client = ws::connect(&format!("ws://{addr}/porch")).await;
        assert_eq!(ws::ask(&mut client, "1").await, "buzz buzz buzz");
        assert_eq!(ws::ask(&mut client, "0").await, "...");
        buzzer.signal("TERM");
        assert!(buzzer.wait().success());
        buzzer.wait_for("[ buzzer ] handled 2 messages");
        let log = buzzer.log();
        let per_message: Vec<&str> = log
            .iter()
            .map(String::as_str)
            .filter(|line| line.starts_with("[ buzzer ] < ") || line.starts_with("[ buzzer ] > "))
            .collect();
        if quiet {
            assert_eq!(per_message, [] as [&str; 0], "{log:#?}");
        } else {
            assert_eq!(
                per_message,
                [
                    "[ buzzer ] < 1 on /porch",
                    "[ buzzer ] > buzz buzz buzz",
                    "[ buzzer ] < 0 on /porch",
                    "[ buzzer ] > ...",
                ],
                "{log:#?}"
            );
            // Said once, by the runtime: the sketch does not repeat it.
            let sounds = log.iter().filter(|line| line.contains("buzz buzz buzz"));
            assert_eq!(sounds.count(), 1, "{log:#?}");
        }
        assert!(
            log[0].starts_with("[ buzzer ] listening on ws://"),
            "{log:#?}"
        );
    }
}
