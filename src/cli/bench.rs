//! `arduino bench`: measure a node, and print the figures on stdout.

use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::{
    MeshArg, Verbosity, explain, plural, print, seconds, seconds_or_zero, secret_for, target_url,
    whole,
};

#[derive(Debug, Args)]
pub(super) struct BenchArgs {
    /// A node of the mesh file, or a URL such as ws://127.0.0.1:8766.
    #[arg(value_name = "NODE|ws://URL")]
    pub(super) target: String,
    /// Concurrent connections, 1 to 100000.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clients)]
    pub(super) clients: usize,
    /// Messages in all, shared among the clients, 1 to 1000000000.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10_000, value_parser = bench_messages)]
    pub(super) messages: usize,
    /// Messages each client keeps in flight (1: stop and wait), 1 to 65536.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = window)]
    pub(super) window: usize,
    /// Messages each client sends first, not measured, 0 to 1000000000.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = warmup)]
    pub(super) warmup: usize,
    /// The text of each message.
    #[arg(long, default_value = "1")]
    pub(super) message: String,
    /// The channel (websocket path); a URL's own path wins.
    #[arg(long, short, default_value = "/datafeed")]
    pub(super) channel: String,
    /// Seconds to keep every connection open after the run (to measure the node's memory):
    /// 0, or 0.001 to 86400.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0, value_parser = seconds_or_zero)]
    pub(super) hold: f64,
    /// Seconds to wait for each connection and for each acknowledgement (0.001 to 86400).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = seconds)]
    pub(super) timeout: f64,
    #[command(flatten)]
    pub(super) mesh: MeshArg,
    #[command(flatten)]
    pub(super) verbosity: Verbosity,
}

fn clients(text: &str) -> Result<usize, String> {
    whole(text, 1, 100_000, "clients")
}

fn window(text: &str) -> Result<usize, String> {
    whole(text, 1, 65_536, "messages")
}

fn bench_messages(text: &str) -> Result<usize, String> {
    whole(text, 1, 1_000_000_000, "messages")
}

fn warmup(text: &str) -> Result<usize, String> {
    whole(text, 0, 1_000_000_000, "messages")
}

/// `arduino bench`: the figures on stdout; a non-zero exit if any message went unacknowledged
/// or was answered with an error.
pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let mesh = args.mesh.load_or_empty()?;
    let url = target_url(&mesh, &args.target, &args.channel)?;
    let (secret, withheld) = secret_for(&mesh, &args.target, &url)?;
    let options = arduino::bench::BenchOptions {
        url: url.clone(),
        secret,
        tls: mesh.tls.clone(),
        clients: args.clients,
        messages: args.messages,
        window: args.window,
        warmup: args.warmup,
        text: args.message.clone(),
        hold: Duration::from_secs_f64(args.hold),
        timeout: Duration::from_secs_f64(args.timeout),
    };
    let mut out = std::io::stdout().lock();
    print(
        &mut out,
        format_args!(
            "bench {url}: {}, window {}, {} of {}",
            plural(args.clients as u64, "client"),
            args.window,
            plural(args.messages as u64, "message"),
            plural(args.message.len() as u64, "byte")
        ),
    )?;
    let connections = arduino::bench::connect(&options)
        .await
        .map_err(|error| match error {
            arduino::Error::Node { url, reason } => {
                anyhow::anyhow!("cannot reach {url}: {}", explain(reason, withheld))
            }
            other => other.into(),
        })?;
    let report = arduino::bench::measure(options, connections).await?;
    let micros = |q: f64| report.percentile(q).as_secs_f64() * 1e6;
    print(
        &mut out,
        format_args!(
            "acknowledged {} of {} ({}) in {:.3} s: {:.0} msgs/s",
            report.acked,
            report.sent,
            plural(report.errors, "error"),
            report.elapsed.as_secs_f64(),
            report.rate()
        ),
    )?;
    print(
        &mut out,
        format_args!(
            "round trip: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
            micros(0.5),
            micros(0.99),
            micros(1.0)
        ),
    )?;
    if report.acked + report.errors != report.sent || report.errors > 0 {
        bail!(
            "{} of {} {} not acknowledged cleanly",
            report.sent - report.acked,
            plural(report.sent, "message"),
            if report.sent - report.acked == 1 {
                "was"
            } else {
                "were"
            }
        );
    }
    Ok(())
}
