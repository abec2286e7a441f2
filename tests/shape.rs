//! A node's `[node.input]`: what each message's ack says when it goes through debounce,
//! sample, throttle or buffer, over real sockets, from several connections and from one that
//! pipelines; the mesh file's checks; and `every` driving a buzzer with no clock.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use arduino::{
    Ack, ConfigError, Context, Event, Events, Input, Mesh, Observer, Registry, Setup, Sketch,
    shape::Batch,
};
use common::ws;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// Acknowledges `got TEXT`; batches whole as `batch of N: TEXTS` when `batches` is set.
struct Echo;

impl Sketch for Echo {
    fn setup(_: &mut Setup<'_>) -> Result<Self, ConfigError> {
        Ok(Echo)
    }

    async fn loop_once(&mut self, _ctx: &mut Context, input: Input<'_>) -> Ack {
        match input {
            Input::Message { text, .. } => Ack::from(format!("got {text}")),
            Input::Tick(_) => Ack::NA,
        }
    }
}

/// Takes batches whole.
struct Tally;

impl Sketch for Tally {
    const TAKES_BATCHES: bool = true;

    fn setup(_: &mut Setup<'_>) -> Result<Self, ConfigError> {
        Ok(Tally)
    }

    async fn loop_once(&mut self, _ctx: &mut Context, _input: Input<'_>) -> Ack {
        Ack::from("one at a time")
    }

    async fn loop_batch(&mut self, _ctx: &mut Context, batch: Batch<'_>) -> Ack {
        let texts: Vec<&str> = batch.texts().collect();
        Ack::from(format!("batch of {}: {}", batch.len(), texts.join(" ")))
    }
}

fn registry() -> Registry {
    arduino::builtin()
        .with::<Echo>("echo", "acks what it got")
        .with::<Tally>("tally", "acks batches whole")
}

/// Counts the messages the node has read, so that a test can order senders.
struct Seen(watch::Sender<usize>);

impl Observer for Seen {
    fn observe(&self, _node: &str, event: &Event<'_>) {
        if let Event::MessageIn { .. } = event {
            self.0.send_modify(|n| *n += 1);
        }
    }
}

struct Node {
    node: common::InProcess,
    seen: watch::Receiver<usize>,
}

impl Node {
    async fn start(sketch: &str, input: &str) -> Self {
        let text = format!(
            "[[node]]\nname = \"shaped\"\nsketch = \"{sketch}\"\nport = 1\n[node.input]\n{input}\n"
        );
        let mesh = Mesh::parse(&text, "test mesh").unwrap();
        let (seen_tx, seen) = watch::channel(0);
        let events = Events::new("shaped").observe(Arc::new(Seen(seen_tx)));
        let node = common::InProcess::start_with(&registry(), &mesh, events).await;
        Self { node, seen }
    }

    async fn connect(&self) -> ws::Client {
        ws::connect(&format!("ws://{}/in", self.node.addr)).await
    }

    /// Wait until the node has read `n` messages in all.
    async fn read(&mut self, n: usize) {
        tokio::time::timeout(
            Duration::from_secs(5),
            self.seen.wait_for(|&seen| seen >= n),
        )
        .await
        .expect("the node reads in time")
        .unwrap();
    }
}

async fn send(client: &mut ws::Client, text: &str) {
    client.send(Message::text(text)).await.unwrap();
}

async fn ack(client: &mut ws::Client) -> String {
    match ws::next(client).await {
        Some(Message::Text(ack)) => ack.to_string(),
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// Debounce, one pipelining connection: each message a newer one replaced is acked
/// `superseded`, in order, and the last is handled once the quiet time has passed.
#[tokio::test]
async fn debounce_supersedes_a_pipelined_burst_in_order() {
    let node = Node::start("echo", "debounce = 0.3").await;
    let mut client = node.connect().await;
    let sent = Instant::now();
    for text in ["1", "2", "3"] {
        send(&mut client, text).await;
    }
    assert_eq!(ack(&mut client).await, "superseded");
    assert_eq!(ack(&mut client).await, "superseded");
    assert_eq!(ack(&mut client).await, "got 3");
    assert!(sent.elapsed() >= Duration::from_millis(300));
    let report = node.node.stop().await;
    assert_eq!(report.handled, 3);
}

/// Debounce, several connections: a message from another connection supersedes the held
/// one, whose sender is told so at once; each connection goes on being served.
#[tokio::test]
async fn debounce_across_connections() {
    let mut node = Node::start("echo", "debounce = 0.3").await;
    let mut a = node.connect().await;
    let mut b = node.connect().await;
    send(&mut a, "a1").await;
    node.read(1).await;
    send(&mut b, "b1").await;
    assert_eq!(ack(&mut a).await, "superseded");
    assert_eq!(ack(&mut b).await, "got b1");
    assert_eq!(ws::ask(&mut a, "a2").await, "got a2");
    node.node.stop().await;
}

/// Sample: of a burst within one beat, the newest is handled on the beat; the others are
/// superseded, in order.
#[tokio::test]
async fn sample_hands_over_the_newest_on_the_beat() {
    let node = Node::start("echo", "sample = 0.3").await;
    let mut client = node.connect().await;
    for text in ["1", "2", "3"] {
        send(&mut client, text).await;
    }
    assert_eq!(ack(&mut client).await, "superseded");
    assert_eq!(ack(&mut client).await, "superseded");
    assert_eq!(ack(&mut client).await, "got 3");
    assert_eq!(ws::ask(&mut client, "4").await, "got 4");
    node.node.stop().await;
}

/// Throttle without a queue: past the burst, messages are refused with an error ack, in
/// order, never dropped in silence.
#[tokio::test]
async fn throttle_refuses_over_its_limit() {
    let node = Node::start("echo", "throttle = 0.5\nburst = 2").await;
    let mut client = node.connect().await;
    for text in ["1", "2", "3", "4"] {
        send(&mut client, text).await;
    }
    assert_eq!(ack(&mut client).await, "got 1");
    assert_eq!(ack(&mut client).await, "got 2");
    for _ in 0..2 {
        let refused = ack(&mut client).await;
        assert!(
            refused.starts_with("error: over the node's throttle"),
            "{refused}"
        );
    }
    node.node.stop().await;
}

/// Throttle with a queue: a pipelining sender is paced, not refused (its connection waits
/// while its message is queued), and another sender finding the queue full is refused at
/// once, ahead of the queued message's ack.
#[tokio::test]
async fn throttle_queue_paces_one_sender_and_refuses_another() {
    let mut node = Node::start("echo", "throttle = 4\nqueue = 1").await;
    let mut a = node.connect().await;
    let mut b = node.connect().await;
    let sent = Instant::now();
    for text in ["a1", "a2", "a3"] {
        send(&mut a, text).await;
    }
    assert_eq!(ack(&mut a).await, "got a1");
    node.read(2).await;
    send(&mut b, "b1").await;
    let refused = ack(&mut b).await;
    assert!(
        refused.starts_with("error: over the node's throttle"),
        "{refused}"
    );
    assert_eq!(ack(&mut a).await, "got a2");
    assert_eq!(ack(&mut a).await, "got a3");
    // 4 a second: a3 passed no sooner than half a second after a1.
    assert!(sent.elapsed() >= Duration::from_millis(500));
    node.node.stop().await;
}

/// Buffer, for a sketch that takes batches: the batch is one input, and every message of it,
/// whichever connection it came from, gets the batch's ack.
#[tokio::test]
async fn a_batch_sketch_gets_the_batch_whole() {
    let mut node = Node::start("tally", "buffer = 3").await;
    let mut a = node.connect().await;
    let mut b = node.connect().await;
    send(&mut a, "x").await;
    node.read(1).await;
    send(&mut b, "y").await;
    node.read(2).await;
    send(&mut a, "z").await;
    assert_eq!(ack(&mut a).await, "batch of 3: x y z");
    assert_eq!(ack(&mut a).await, "batch of 3: x y z");
    assert_eq!(ack(&mut b).await, "batch of 3: x y z");
    node.node.stop().await;
}

/// Buffer, for any other sketch: once the batch is complete its messages are handed over one
/// by one, each acked with its own ack, in order on each connection.
#[tokio::test]
async fn other_sketches_get_a_batch_one_by_one() {
    let node = Node::start("echo", "buffer = 4").await;
    let mut client = node.connect().await;
    for text in ["1", "2", "3", "4", "5"] {
        send(&mut client, text).await;
    }
    for text in ["1", "2", "3", "4"] {
        assert_eq!(ack(&mut client).await, format!("got {text}"));
    }
    // The fifth waits for company: no ack yet.
    assert!(
        tokio::time::timeout(ws::SHORT, client.next())
            .await
            .is_err()
    );
    node.node.stop().await;
}

/// Buffer with `within`: a batch that does not fill goes out once the time has passed since
/// its first message.
#[tokio::test]
async fn a_batch_goes_out_within_its_time() {
    let node = Node::start("tally", "buffer = 100\nwithin = 0.3").await;
    let mut client = node.connect().await;
    let sent = Instant::now();
    send(&mut client, "m").await;
    send(&mut client, "n").await;
    assert_eq!(ack(&mut client).await, "batch of 2: m n");
    assert_eq!(ack(&mut client).await, "batch of 2: m n");
    assert!(sent.elapsed() >= Duration::from_millis(300));
    node.node.stop().await;
}

/// A flood on a debounced node: every message gets exactly one ack, in order, and only the
/// last is handled (the operator holds one message whatever comes in).
#[tokio::test]
async fn a_flood_on_a_debounced_node_gets_one_ack_each() {
    let node = Node::start("echo", "debounce = 0.2").await;
    let client = node.connect().await;
    let (mut write, mut read) = client.split();
    const FLOOD: usize = 5000;
    let sending = tokio::spawn(async move {
        for n in 0..FLOOD {
            write.feed(Message::text(n.to_string())).await.unwrap();
        }
        write.flush().await.unwrap();
        write
    });
    let mut superseded = 0;
    let last = loop {
        let ack = match tokio::time::timeout(Duration::from_secs(10), read.next()).await {
            Ok(Some(Ok(Message::Text(ack)))) => ack.to_string(),
            other => panic!("expected an ack, got {other:?}"),
        };
        if ack != "superseded" {
            break ack;
        }
        superseded += 1;
    };
    assert_eq!(last, format!("got {}", FLOOD - 1));
    assert_eq!(superseded, FLOOD - 1);
    let _write = sending.await.unwrap();
    let report = node.node.stop().await;
    assert_eq!(report.handled, FLOOD as u64);
}

/// A node asked to stop answers the message it holds: `error: the node is stopping`.
#[tokio::test]
async fn a_held_message_is_answered_when_the_node_stops() {
    let mut node = Node::start("echo", "debounce = 60").await;
    let mut client = node.connect().await;
    send(&mut client, "late").await;
    node.read(1).await;
    let stopping = tokio::spawn(node.node.stop());
    assert_eq!(ack(&mut client).await, "error: the node is stopping");
    stopping.await.unwrap();
}

fn check(input: &str) -> Result<(), String> {
    check_node("echo", input)
}

fn check_node(sketch: &str, input: &str) -> Result<(), String> {
    let text = format!(
        "[[node]]\nname = \"n\"\nsketch = \"{sketch}\"\nport = 1\nto = [\"b\"]\n[node.input]\n{input}\n\
         [[node]]\nname = \"b\"\nsketch = \"buzzer\"\nport = 2\n"
    );
    let mesh = Mesh::parse(&text, "mesh.toml").map_err(|e| e.to_string())?;
    registry().check(&mesh).map_err(|e| e.to_string())
}

/// The mesh file's `[node.input]` is checked at load, in one line naming the node and key.
#[test]
fn the_input_table_is_checked_at_load() {
    for good in [
        "every = 1.0",
        "debounce = 0.2",
        "every = 5\ndebounce = 0.5",
        "sample = 0.5",
        "throttle = 10\nburst = 5\nqueue = 3",
        "buffer = 10",
        "buffer = 10\nwithin = 1.5",
        "within = 2",
    ] {
        check(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    let error = check("debounce = 0.2\nsample = 1").unwrap_err();
    assert!(
        error.starts_with("mesh.toml:1:1: node \"n\": `input` gives both `debounce` and `sample`: a node takes one of"),
        "{error}"
    );
    let error = check("throttle = 5\nwithin = 1").unwrap_err();
    assert!(error.contains("both `throttle` and `buffer`"), "{error}");
    assert!(
        check("queue = 3")
            .unwrap_err()
            .contains("`input.queue` needs `throttle`")
    );
    assert!(
        check("burst = 3")
            .unwrap_err()
            .contains("`input.burst` needs `throttle`")
    );
    for (bad, says) in [
        (
            "debounce = 0",
            "`input.debounce` must be between 0.001 and 86400 seconds, not 0",
        ),
        ("every = -1", "`input.every` must be between"),
        ("sample = nan", "`input.sample` must be between"),
        (
            "throttle = 0",
            "`input.throttle` must be between 0.001 and 1000000 messages a second, not 0",
        ),
        (
            "throttle = 1\nburst = 0",
            "`input.burst` must be between 1 and 100000, not 0",
        ),
        (
            "throttle = 1\nqueue = 1000000",
            "`input.queue` must be between 0 and 100000",
        ),
        (
            "buffer = 0",
            "`input.buffer` must be between 1 and 100000 messages, not 0",
        ),
    ] {
        let error = check(bad).unwrap_err();
        assert!(error.contains(says), "{bad}: {error}");
        assert!(!error.contains('\n'), "{error}");
    }
    let error = check("debounse = 0.2").unwrap_err();
    assert!(
        error.contains("unknown key `input.debounse` in node \"n\" (did you mean `debounce`?)"),
        "{error}"
    );
    let error = check("debounce = \"soon\"").unwrap_err();
    assert!(error.contains("must be a number"), "{error}");
    // A sketch with a timer of its own cannot take another.
    let error = check_node("clock", "every = 1").unwrap_err();
    assert!(
        error.contains("`input.every` cannot be given: the sketch runs on a timer of its own"),
        "{error}"
    );
}

/// `every` on an iopin: its timer's ticks are drawn and streamed like messages, so it drives
/// a buzzer with no clock in the mesh at all.
#[test]
fn an_iopin_with_every_drives_a_buzzer_with_no_clock() {
    let (pin, buzzer) = (common::free_port(), common::free_port());
    let mesh = common::MeshFile::new(&format!(
        "[[node]]\nname = \"iopin\"\nport = {pin}\nto = [\"buzzer\"]\nseed = 1\n\
         [node.config]\nchance = 0.0\nsequence = 2\n[node.input]\nevery = 0.05\n\
         [[node]]\nname = \"buzzer\"\nport = {buzzer}\n"
    ));
    let up = common::Process::start(&["up", "--mesh", mesh.arg(), "-v"], &[]);
    up.wait_for("drew 1 1 for timer tick 3 on /datafeed");
    assert!(up.count("buzz buzz buzz") >= 6, "{:?}", up.log());
}

/// The `shaping` example program, built as `cargo run --example shaping` would, run on `mesh`
/// (an example mesh file with its port and `replace` changed) for `seconds`; its stdout.
fn run_example(mesh: &str, replace: &[(&str, &str)], seconds: &str) -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", "shaping"])
        .current_dir(root)
        .status()
        .unwrap();
    assert!(built.success());
    let program = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("examples/shaping");
    let mut text = std::fs::read_to_string(format!("{root}/examples/{mesh}")).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    let file = common::MeshFile::new(&text);
    let output = std::process::Command::new(program)
        .args([file.arg(), seconds])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Seed 000's example: the task runs on its timer and when poked; what arrives together
/// (both signallers' first pokes and the first tick) runs it once; every poke is acked.
#[test]
fn the_reactive_example_runs_its_task_on_pokes_and_on_its_timer() {
    let port = common::free_port().to_string();
    let lines = run_example(
        "reactive.toml",
        &[
            ("port = 8770", &format!("port = {port}")),
            ("every = 5.0", "every = 1.0"),
        ],
        "4",
    );
    let runs: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("task run "))
        .collect();
    assert!(
        lines.contains(&"poke-a is done: 5 sent, every one acknowledged".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"poke-b is done: 2 sent, every one acknowledged".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"7 messages sent in all".to_owned()),
        "{lines:?}"
    );
    assert!(runs.iter().any(|l| l.contains(": poke ")), "{lines:?}");
    assert!(
        runs.iter().any(|l| l.contains(": timer tick ")),
        "{lines:?}"
    );
    // 7 pokes and at most 5 ticks (at 0, 1, 2, 3 and 4 s): the first pokes and tick came
    // together and ran the task once.
    assert!(runs.len() <= 12 - 2, "{lines:?}");
}

/// Seed 004's example: the jobs' results reach the collector in batches of at most four, and
/// every result is in exactly one batch.
#[test]
fn the_batching_example_groups_results() {
    let port = common::free_port().to_string();
    let lines = run_example(
        "batching.toml",
        &[("port = 8771", &format!("port = {port}"))],
        "3",
    );
    let batches: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("collector sends "))
        .collect();
    let first = batches.first().expect("a batch");
    for job in ["job-a:0", "job-b:0", "job-c:0", "job-d:0"] {
        assert!(first.contains(job), "{lines:?}");
    }
    let results: usize = batches
        .iter()
        .map(|l| l.split(": ").nth(1).unwrap().split(' ').count())
        .inspect(|&n| assert!((1..=4).contains(&n), "{lines:?}"))
        .sum();
    assert_eq!(results, 13, "{lines:?}");
    assert!(
        lines.contains(&"13 messages sent in all".to_owned()),
        "{lines:?}"
    );
}

/// The operators as a sketch's own code uses them, with messages tagged by connection, under
/// the paused clock: who is superseded, who passes, who waits and who is refused, and when.
#[tokio::test(start_paused = true)]
async fn operators_from_rust_settle_each_connections_messages_on_time() {
    use arduino::shape::{Admit, Debounce, Throttle};
    use tokio::time::{Instant, advance};

    let start = Instant::now();
    let mut debounce = Debounce::new(Duration::from_millis(300));
    assert_eq!(debounce.push(("a", 1)), None);
    advance(Duration::from_millis(100)).await;
    assert_eq!(debounce.push(("b", 1)), Some(("a", 1)));
    advance(Duration::from_millis(100)).await;
    assert_eq!(debounce.push(("a", 2)), Some(("b", 1)));
    assert_eq!(debounce.ready().await, ("a", 2));
    assert_eq!(start.elapsed(), Duration::from_millis(500));

    let start = Instant::now();
    let mut throttle = Throttle::new(2.0, 1, 1);
    assert_eq!(throttle.push(("a", 1)), Admit::Now(("a", 1)));
    assert_eq!(throttle.push(("a", 2)), Admit::Queued);
    assert_eq!(throttle.push(("b", 1)), Admit::Refused(("b", 1)));
    assert_eq!(throttle.ready().await, ("a", 2));
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(throttle.push(("b", 2)), Admit::Queued);
    assert_eq!(throttle.ready().await, ("b", 2));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}
