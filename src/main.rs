//! The `arduino` program: parse the command line, load the mesh, bind, run, and turn the
//! outcome into an exit status.

mod cli;

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::info;

use arduino::{
    Events, Mesh, NodeDef, Registry, Report, client, logging, mesh::DEFAULT_MAX_MESSAGE,
};
use cli::{BenchArgs, Cli, Command, MeshArg, NodeArgs, SendArgs, UpArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let registry = arduino::builtin();
    let (verbosity, job) = match cli.command {
        Command::Sketches => {
            let width = registry
                .names()
                .iter()
                .map(|name| name.len())
                .max()
                .unwrap_or(0);
            for entry in registry.entries() {
                println!("{:<width$}  {}", entry.name, entry.about);
            }
            return ExitCode::SUCCESS;
        }
        Command::Up(args) => (args.verbosity, Job::Up(args)),
        Command::Send(args) => (args.verbosity, Job::Send(args)),
        Command::Bench(args) => (args.verbosity, Job::Bench(args)),
        Command::Sketch(args) => {
            let sketch = args.first().cloned().unwrap_or_default();
            if let Err(error) = registry.get(&sketch) {
                eprintln!("arduino: {error}");
                return ExitCode::from(2);
            }
            let argv = std::iter::once(format!("arduino {sketch}")).chain(args.into_iter().skip(1));
            let node_args = match NodeArgs::try_parse_from(argv) {
                Ok(node_args) => node_args,
                Err(error) => error.exit(),
            };
            (node_args.verbosity, Job::Node(sketch, node_args))
        }
    };
    logging::init(verbosity.filter(), verbosity.fields());
    // A sketch that panics fails one message and the node goes on: say so in one log line, in
    // the node's own span, rather than a backtrace banner.
    std::panic::set_hook(Box::new(|info| tracing::error!("{info}")));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("arduino: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(job.run(&registry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("arduino: {error:#}");
            ExitCode::FAILURE
        }
    }
}

enum Job {
    Node(String, NodeArgs),
    Up(UpArgs),
    Send(SendArgs),
    Bench(BenchArgs),
}

impl Job {
    async fn run(self, registry: &Registry) -> anyhow::Result<()> {
        match self {
            Job::Node(sketch, args) => node(registry, &sketch, &args).await,
            Job::Up(args) => up(registry, &args).await,
            Job::Send(args) => send(&args).await,
            Job::Bench(args) => bench(&args).await,
        }
    }
}

/// The mesh file, or an empty mesh when the default file is absent.
fn load_mesh(arg: &MeshArg) -> anyhow::Result<Mesh> {
    let (path, named) = arg.path();
    if !named && !path.exists() {
        return Ok(Mesh::empty(&path.display().to_string()));
    }
    Ok(Mesh::load(&path)?)
}

fn env_secret() -> Option<String> {
    std::env::var("ARDUINO_SECRET").ok()
}

async fn bind(node: &NodeDef) -> anyhow::Result<TcpListener> {
    let Some(port) = node.port else {
        bail!(
            "node {:?} has no port to listen on: give --port, or `port` in the mesh file",
            node.name
        );
    };
    let addr: SocketAddr = tokio::net::lookup_host((node.host.as_str(), port))
        .await
        .with_context(|| format!("node {:?}: cannot resolve host {:?}", node.name, node.host))?
        .next()
        .with_context(|| format!("node {:?}: host {:?} has no address", node.name, node.host))?;
    TcpListener::bind(addr)
        .await
        .map_err(|error| arduino::Error::bind(addr, error).into())
}

/// `arduino <SKETCH>`: one node, until its work is done or SIGINT/SIGTERM.
async fn node(registry: &Registry, sketch: &str, args: &NodeArgs) -> anyhow::Result<()> {
    let entry = registry.get(sketch)?;
    let mut mesh = load_mesh(&args.mesh)?;
    let name = args.apply(&mut mesh, entry)?;
    registry.check(&mesh)?;
    let def = mesh
        .node(&name)
        .context("the node vanished from the mesh")?;
    let node = registry.build(&mesh, def, mesh.secret(env_secret()), Events::new(&name))?;
    let listener = if entry.listens {
        Some(bind(def).await?)
    } else {
        None
    };
    let report = arduino::run(node, listener, shutdown_signal()).await?;
    conclude(&[report])
}

/// `arduino up`: every node of the mesh in one process. All are set up and bound before any
/// starts; the mesh stops when its clocks are done, or on SIGINT/SIGTERM.
async fn up(registry: &Registry, args: &UpArgs) -> anyhow::Result<()> {
    let (path, _) = args.mesh.path();
    let mesh = Mesh::load(&path)?;
    if mesh.nodes.is_empty() {
        bail!("{}: the mesh has no nodes", mesh.path);
    }
    // Setting up every node checks the whole mesh; only then are ports bound.
    let secret = mesh.secret(env_secret());
    let built = mesh
        .nodes
        .iter()
        .map(|def| registry.build(&mesh, def, secret.clone(), Events::new(&def.name)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut nodes = Vec::new();
    for (def, node) in mesh.nodes.iter().zip(built) {
        let listener = if registry.get(def.sketch())?.listens {
            Some(bind(def).await?)
        } else {
            None
        };
        nodes.push((node, listener));
    }
    let stop = CancellationToken::new();
    let mut clocks = JoinSet::new();
    let mut servers = JoinSet::new();
    for (node, listener) in nodes {
        let finite = listener.is_none() && node.ticks().is_some_and(|t| t.count.is_some());
        let run = arduino::run_until(node, listener, stop.clone());
        if finite {
            clocks.spawn(run);
        } else {
            servers.spawn(run);
        }
    }
    let has_clocks = !clocks.is_empty();
    let mut reports = Vec::new();
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = async {
            while let Some(report) = clocks.join_next().await {
                reports.extend(report);
            }
        }, if has_clocks => info!("the clocks are done; stopping the mesh"),
    }
    stop.cancel();
    while let Some(report) = clocks.join_next().await {
        reports.extend(report);
    }
    while let Some(report) = servers.join_next().await {
        reports.extend(report);
    }
    conclude(&reports)
}

/// Log what each node did; fail when a clock's tick was not delivered.
fn conclude(reports: &[Report]) -> anyhow::Result<()> {
    let mut failure = None;
    for report in reports {
        let span = arduino::runtime::node_span(&report.node);
        let _entered = span.enter();
        if report.ticks > 0 {
            info!(
                "{} ticks: {} delivered, {} failed",
                report.ticks,
                report.ticks - report.ticks_failed,
                report.ticks_failed
            );
        }
        let sent = report.sent;
        // A message in flight when the node was stopped ends in neither: say so.
        let abandoned = sent.sent - sent.acked - sent.failed;
        let mut sends = format!(
            "sent {} to peers: {} acknowledged, {} failed",
            sent.sent, sent.acked, sent.failed
        );
        if abandoned > 0 {
            sends.push_str(&format!(", {abandoned} abandoned as the node stopped"));
        }
        let plain_clock = report.ticks > 0
            && report.handled == 0
            && sent.sent == report.ticks
            && sent.acked == sent.sent;
        if report.handled > 0 || (report.ticks == 0 && sent.sent == 0) {
            if sent.sent > 0 {
                info!("handled {} messages; {sends}", report.handled);
            } else {
                info!("handled {} messages", report.handled);
            }
        } else if sent.sent > 0 && !plain_clock {
            info!("{sends}");
        }
        if report.ticks_failed > 0 && failure.is_none() {
            failure = Some(arduino::Error::Undelivered {
                node: report.node.clone(),
                failed: report.ticks_failed,
                total: report.ticks,
            });
        }
    }
    match failure {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// `arduino send`: each message, one at a time; each ack printed on its own line.
async fn send(args: &SendArgs) -> anyhow::Result<()> {
    let mesh = load_mesh(&args.mesh)?;
    let url = target_url(&mesh, &args.target, &args.channel)?;
    let secret = mesh.secret(env_secret());
    let mut ws = client::connect(&url, secret.as_deref(), DEFAULT_MAX_MESSAGE)
        .await
        .map_err(|error| anyhow::anyhow!("cannot reach {url}: {}", client::describe(&error)))?;
    let wait = Duration::from_secs_f64(args.timeout);
    let mut errors = 0;
    for message in &args.messages {
        ws.send(Message::text(message.as_str()))
            .await
            .map_err(|error| anyhow::anyhow!("{url}: {}", client::describe(&error)))?;
        let ack = loop {
            match tokio::time::timeout(wait, ws.next()).await {
                Err(_) => bail!(
                    "{url}: no acknowledgement for {message:?} within {}s",
                    args.timeout
                ),
                Ok(Some(Ok(Message::Text(ack)))) => break ack,
                Ok(Some(Ok(Message::Close(frame)))) => bail!(
                    "{url} closed the connection: {}",
                    frame.map_or_else(String::new, |f| format!(
                        "{} {}",
                        u16::from(f.code),
                        f.reason
                    ))
                ),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(error))) => bail!("{url}: {}", client::describe(&error)),
                Ok(None) => bail!("{url} closed the connection before acknowledging {message:?}"),
            }
        };
        println!("{ack}");
        if ack.starts_with(arduino::Ack::ERROR_PREFIX) {
            errors += 1;
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
    if errors > 0 {
        bail!(
            "{errors} of {} messages were not handled",
            args.messages.len()
        );
    }
    Ok(())
}

/// `arduino bench`: the figures on stdout; a non-zero exit if any message went unacknowledged
/// or was answered with an error.
async fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let mesh = load_mesh(&args.mesh)?;
    let url = target_url(&mesh, &args.target, &args.channel)?;
    let options = arduino::bench::BenchOptions {
        url: url.clone(),
        secret: mesh.secret(env_secret()),
        clients: args.clients as usize,
        messages: args.messages,
        window: args.window as usize,
        warmup: args.warmup,
        text: args.message.clone(),
        hold: Duration::from_secs_f64(args.hold),
    };
    println!(
        "bench {url}: {} client(s), window {}, {} messages of {} bytes",
        args.clients,
        args.window,
        args.messages,
        args.message.len()
    );
    let report = arduino::bench::run(options).await?;
    let micros = |q: f64| report.percentile(q).as_secs_f64() * 1e6;
    println!(
        "acknowledged {} of {} ({} errors) in {:.3} s: {:.0} msgs/s",
        report.acked,
        report.sent,
        report.errors,
        report.elapsed.as_secs_f64(),
        report.rate()
    );
    println!(
        "round trip: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        micros(0.5),
        micros(0.99),
        micros(1.0)
    );
    if report.acked + report.errors != report.sent || report.errors > 0 {
        bail!(
            "{} of {} messages were not acknowledged cleanly",
            report.sent - report.acked,
            report.sent
        );
    }
    Ok(())
}

/// `ws://...` as given (with `channel` when it has no path), or the URL of the mesh's node.
fn target_url(mesh: &Mesh, target: &str, channel: &str) -> anyhow::Result<String> {
    let channel = channel.trim_start_matches('/');
    if let Some(rest) = target.strip_prefix("ws://") {
        return Ok(if rest.contains('/') {
            target.to_owned()
        } else {
            format!("{target}/{channel}")
        });
    }
    let node = mesh.node(target).with_context(|| {
        let known: Vec<&str> = mesh
            .nodes
            .iter()
            .filter(|n| n.port.is_some())
            .map(|n| n.name.as_str())
            .collect();
        format!(
            "{}: no node {target:?} (nodes that listen: {}; or give a ws:// URL)",
            mesh.path,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )
    })?;
    let url = node
        .url()
        .with_context(|| format!("{}: node {target:?} does not listen", mesh.path))?;
    Ok(format!("{url}/{channel}"))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what foreman sends).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
