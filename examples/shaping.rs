//! Shaped input, from the project's seeds: a task run on a timer or when poked, debounced
//! (`examples/reactive.toml`), and results grouped in batches before they go out
//! (`examples/batching.toml`). Runs every node of the mesh file in this one process and
//! prints what the task and the collector do.
//!
//! ```sh
//! cargo run --example shaping -- examples/reactive.toml      # for 12 s, or give the seconds
//! cargo run --example shaping -- examples/batching.toml 4
//! ```

use std::time::Duration;

use anyhow::Context as _;
use arduino::{Ack, ConfigError, Context, Events, Input, Mesh, Setup, Sketch, shape::Batch};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

/// Seed 000's task: does its work when run, and says why it ran.
pub struct Task {
    runs: u64,
}

impl Sketch for Task {
    fn setup(_setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        Ok(Task { runs: 0 })
    }

    async fn loop_once(&mut self, _ctx: &mut Context, input: Input<'_>) -> Ack {
        self.runs += 1;
        let why = match input {
            Input::Message { channel, text } => format!("poke {text} on {channel}"),
            Input::Tick(n) => format!("timer tick {n}"),
        };
        println!("task run {}: {why}", self.runs);
        Ack::from(format!("ran #{}", self.runs))
    }
}

/// Seed 004's collector: sends a batch of results on in one go.
pub struct Collector;

impl Sketch for Collector {
    const TAKES_BATCHES: bool = true;

    fn setup(_setup: &mut Setup<'_>) -> Result<Self, ConfigError> {
        Ok(Collector)
    }

    async fn loop_once(&mut self, _ctx: &mut Context, _input: Input<'_>) -> Ack {
        Ack::error("the collector takes batches: give it `buffer` in [node.input]")
    }

    async fn loop_batch(&mut self, _ctx: &mut Context, batch: Batch<'_>) -> Ack {
        let results: Vec<String> = batch
            .messages()
            .iter()
            .map(|message| {
                format!(
                    "{}:{}",
                    message.channel.trim_start_matches('/'),
                    message.text
                )
            })
            .collect();
        println!(
            "collector sends {} results at once: {}",
            batch.len(),
            results.join(" ")
        );
        Ack::from(format!("sent with {} others", batch.len() - 1))
    }
}

/// The built-in sketches, the task and the collector.
pub fn registry() -> arduino::Registry {
    arduino::builtin()
        .with::<Task>("task", "seed 000's task: runs on a timer or when poked")
        .with::<Collector>(
            "collector",
            "seed 004's collector: sends results in batches",
        )
}

/// Run every node of `mesh` until `seconds` have passed; then print what the signallers sent.
///
/// # Errors
///
/// When a node cannot be set up or its port cannot be bound.
pub async fn run(mesh: &Mesh, seconds: f64) -> anyhow::Result<()> {
    let registry = registry();
    let stop = CancellationToken::new();
    let mut nodes = JoinSet::new();
    for def in &mesh.nodes {
        let node = registry.build(mesh, def, None, Events::new(&def.name))?;
        let listener = match def.port {
            Some(port) => Some(
                TcpListener::bind((def.host.as_str(), port))
                    .await
                    .with_context(|| format!("cannot listen on {}:{port}", def.host))?,
            ),
            None => None,
        };
        nodes.spawn(arduino::run_until(node, listener, stop.clone()));
    }
    let until = tokio::time::sleep(Duration::try_from_secs_f64(seconds).unwrap_or_default());
    tokio::pin!(until);
    let mut sent = 0;
    loop {
        tokio::select! {
            () = &mut until => break,
            done = nodes.join_next() => match done {
                // A signaller done: its ticks, each acked (`superseded` or the task's ack).
                Some(Ok(report)) => {
                    sent += report.ticks;
                    println!("{} is done: {} sent, every one acknowledged", report.node, report.ticks);
                }
                Some(Err(error)) => anyhow::bail!("a node failed: {error}"),
                None => break,
            },
        }
    }
    stop.cancel();
    while nodes.join_next().await.is_some() {}
    println!("{sent} messages sent in all");
    Ok(())
}

#[allow(dead_code)] // the tests include this file for its sketches, not for `main`
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    arduino::logging::init("warn", false);
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "examples/reactive.toml".to_owned());
    let seconds: f64 = match args.next() {
        Some(seconds) => seconds
            .parse()
            .context("the seconds to run must be a number")?,
        None => 12.0,
    };
    let mesh = Mesh::load(path.as_ref())?;
    run(&mesh, seconds).await
}
