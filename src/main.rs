//! The `arduino` program: parse the command line, load the mesh, bind, run, and turn the
//! outcome into an exit status.

mod cli;

use std::{
    collections::HashMap,
    ffi::OsString,
    fmt::Display,
    io::{ErrorKind, Write},
    net::SocketAddr,
    pin::pin,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::{
    net::TcpListener,
    task::{self, JoinSet},
    time::Instant,
};
use tokio_tungstenite::tungstenite::{Message, http::Uri};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use arduino::{
    Events, Mesh, NodeDef, Registry, Report, client, logging, mesh::DEFAULT_MAX_MESSAGE,
};
use cli::{BenchArgs, Cli, Command, MeshArg, NodeArgs, SendArgs, UpArgs};

/// How long the nodes have, once asked to stop, before the program exits without them: the
/// program as a whole exits within a second.
const STOP_GRACE: Duration = Duration::from_millis(800);

fn main() -> ExitCode {
    let registry = arduino::builtin();
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    // Sketches are not clap subcommands: `arduino help clock` is `arduino clock --help`.
    if argv.len() >= 3
        && argv[1] == "help"
        && argv[2]
            .to_str()
            .is_some_and(|name| registry.get(name).is_ok())
    {
        argv = vec![argv[0].clone(), argv[2].clone(), "--help".into()];
    }
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(error) => return refuse(&error),
    };
    let (verbosity, job) = match cli.command {
        Command::Sketches => {
            return match sketches(&registry) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            };
        }
        Command::Up(args) => (args.verbosity, Job::Up(args)),
        Command::Send(args) => (args.verbosity, Job::Send(args)),
        Command::Bench(args) => (args.verbosity, Job::Bench(args)),
        Command::Sketch(args) => {
            let sketch = args.first().cloned().unwrap_or_default();
            if let Err(error) = registry.get(&sketch) {
                say(format_args!("arduino: {error}"));
                return ExitCode::from(2);
            }
            let argv = std::iter::once(format!("arduino {sketch}")).chain(args.into_iter().skip(1));
            let node_args = match NodeArgs::try_parse_from(argv) {
                Ok(node_args) => node_args,
                Err(error) => return refuse(&error),
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
            say(format_args!(
                "arduino: cannot start the async runtime: {error}"
            ));
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(job.run(&registry));
    // A blocking task still running (a name lookup, say) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

/// The exit status for `error`, said in one line on stderr; none when stdout was closed by its
/// reader, as `arduino send ... | head -1` does: the output is done, not failed.
fn fail(error: &anyhow::Error) -> ExitCode {
    if error.is::<StdoutClosed>() {
        return ExitCode::SUCCESS;
    }
    say(format_args!("arduino: {error:#}"));
    ExitCode::FAILURE
}

/// A command line clap refused, in one line (help and version are printed as asked).
fn refuse(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind::{
        DisplayHelp, DisplayHelpOnMissingArgumentOrSubcommand, DisplayVersion,
    };
    let code = u8::try_from(error.exit_code()).unwrap_or(2);
    if matches!(
        error.kind(),
        DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        // Help goes to stdout; a reader that went away is not an error.
        let _ = error.print();
        return ExitCode::from(code);
    }
    let text = error.render().to_string();
    let line = text
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    say(format_args!("arduino: {line} (see --help)"));
    ExitCode::from(code)
}

/// One line on stderr; a closed stderr has no one to tell.
fn say(line: impl Display) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Stdout was closed by its reader.
#[derive(Debug)]
struct StdoutClosed;

impl Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Print one line on stdout. A reader that went away ends the command with [`StdoutClosed`],
/// which exits quietly.
fn print(out: &mut impl Write, line: impl Display) -> anyhow::Result<()> {
    writeln!(out, "{line}").map_err(|error| match error.kind() {
        ErrorKind::BrokenPipe => anyhow::Error::new(StdoutClosed),
        _ => anyhow::anyhow!("cannot write to stdout: {error}"),
    })
}

/// `count` things, in English: `1 message`, `2 messages`.
fn plural(count: u64, thing: &str) -> String {
    match count {
        1 => format!("1 {thing}"),
        n => format!("{n} {thing}s"),
    }
}

/// `arduino sketches`: one line per sketch.
fn sketches(registry: &Registry) -> anyhow::Result<()> {
    let width = registry
        .names()
        .iter()
        .map(|name| name.len())
        .max()
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for entry in registry.entries() {
        print(
            &mut out,
            format_args!("{:<width$}  {}", entry.name, entry.about),
        )?;
    }
    Ok(())
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

/// `ARDUINO_SECRET`, when set (an empty one counts as unset), checked as the mesh file's is.
fn env_secret() -> anyhow::Result<Option<String>> {
    match std::env::var("ARDUINO_SECRET") {
        Ok(secret) if secret.is_empty() => Ok(None),
        Ok(secret) => match arduino::mesh::check_secret(&secret) {
            Ok(()) => Ok(Some(secret)),
            Err(reason) => bail!("the secret in ARDUINO_SECRET {reason}"),
        },
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("the secret in ARDUINO_SECRET is not valid UTF-8")
        }
    }
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
    TcpListener::bind(addr).await.map_err(|error| {
        anyhow::Error::new(arduino::Error::bind(addr, error))
            .context(format!("node {:?}", node.name))
    })
}

/// `arduino <SKETCH>`: one node, until its work is done or SIGINT/SIGTERM.
async fn node(registry: &Registry, sketch: &str, args: &NodeArgs) -> anyhow::Result<()> {
    let entry = registry.get(sketch)?;
    let mut mesh = load_mesh(&args.mesh)?;
    let name = args.apply(&mut mesh, entry)?;
    args.check(registry, &mesh, &name)?;
    let def = mesh
        .node(&name)
        .context("the node vanished from the mesh")?;
    let node = registry.build(&mesh, def, mesh.secret(env_secret()?), Events::new(&name))?;
    let listener = if entry.listens {
        Some(bind(def).await?)
    } else {
        None
    };
    let stop = CancellationToken::new();
    let mut running = pin!(arduino::run_until(node, listener, stop.clone()));
    let report = tokio::select! {
        report = &mut running => report,
        _ = shutdown_signal() => {
            stop.cancel();
            match tokio::time::timeout(STOP_GRACE, running).await {
                Ok(report) => report,
                Err(_) => {
                    warn!("node {name:?} did not stop within {STOP_GRACE:?}; leaving it");
                    return Ok(());
                }
            }
        }
    };
    match summarize(&report) {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
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
    let secret = mesh.secret(env_secret()?);
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
        nodes.push((def, node, listener));
    }
    let stop = CancellationToken::new();
    let mut running = Running::default();
    for (def, node, listener) in nodes {
        let clock = listener.is_none() && node.ticks().is_some_and(|t| t.count.is_some());
        running.spawn(
            &def.name,
            clock,
            arduino::run_until(node, listener, stop.clone()),
        );
    }
    let mut outcome = Outcome::default();
    let has_clocks = running.clocks > 0;
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = async {
            while running.clocks > 0 {
                let Some(ended) = running.next().await else { break };
                outcome.add(ended);
            }
        }, if has_clocks => info!("the clocks are done; stopping the mesh"),
    }
    stop.cancel();
    // Each node's summary is logged as it ends: a slow one delays no other's, and none delays
    // the exit past the grace.
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        match tokio::time::timeout_at(deadline, running.next()).await {
            Ok(Some(ended)) => outcome.add(ended),
            Ok(None) => break,
            Err(_) => {
                for name in running.abandon() {
                    warn!("node {name:?} did not stop within {STOP_GRACE:?}; leaving it");
                }
                break;
            }
        }
    }
    outcome.finish()
}

/// The node tasks of `arduino up`, with each one's name, so that a task that ends abnormally
/// (a panic) is reported by node rather than lost.
#[derive(Default)]
struct Running {
    tasks: JoinSet<Report>,
    names: HashMap<task::Id, (String, bool)>,
    /// Clocks (nodes with a finite number of ticks) not yet ended.
    clocks: usize,
}

impl Running {
    fn spawn(
        &mut self,
        name: &str,
        clock: bool,
        run: impl Future<Output = Report> + Send + 'static,
    ) {
        let id = self.tasks.spawn(run).id();
        self.names.insert(id, (name.to_owned(), clock));
        self.clocks += usize::from(clock);
    }

    /// The next node to end: its report, or the line that says how it ended abnormally.
    async fn next(&mut self) -> Option<Result<Report, String>> {
        let joined = self.tasks.join_next_with_id().await?;
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(error) => error.id(),
        };
        let (name, clock) = self.names.remove(&id).unwrap_or_default();
        self.clocks -= usize::from(clock);
        Some(match joined {
            Ok((_, report)) => Ok(report),
            Err(error) if error.is_panic() => {
                let payload = error.into_panic();
                let why = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                Err(format!(
                    "node {name:?} stopped abnormally: it panicked ({why})"
                ))
            }
            Err(_) => Err(format!(
                "node {name:?} stopped abnormally: it was cancelled"
            )),
        })
    }

    /// Stop waiting for the nodes still running; their names.
    fn abandon(&mut self) -> Vec<String> {
        self.tasks.abort_all();
        self.clocks = 0;
        self.names.drain().map(|(_, (name, _))| name).collect()
    }
}

/// What the nodes of `arduino up` came to, gathered as each ends.
#[derive(Default)]
struct Outcome {
    undelivered: Option<arduino::Error>,
    abnormal: Vec<String>,
}

impl Outcome {
    fn add(&mut self, ended: Result<Report, String>) {
        match ended {
            Ok(report) => {
                let failure = summarize(&report);
                self.undelivered = self.undelivered.take().or(failure);
            }
            Err(line) => self.abnormal.push(line),
        }
    }

    /// Fail when a node ended abnormally, or a clock's tick was not delivered.
    fn finish(self) -> anyhow::Result<()> {
        if let Some(first) = self.abnormal.first() {
            match self.abnormal.len() - 1 {
                0 => bail!("{first}"),
                more => bail!("{first}; and {} more", plural(more as u64, "node")),
            }
        }
        match self.undelivered {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }
}

/// Log what a node did; the error when a clock's tick was not delivered.
fn summarize(report: &Report) -> Option<arduino::Error> {
    let span = arduino::runtime::node_span(&report.node);
    let _entered = span.enter();
    if report.ticks > 0 {
        info!(
            "{}: {} delivered, {} failed",
            plural(report.ticks, "tick"),
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
    let handled = plural(report.handled, "message");
    if report.handled > 0 || (report.ticks == 0 && sent.sent == 0) {
        if sent.sent > 0 {
            info!("handled {handled}; {sends}");
        } else {
            info!("handled {handled}");
        }
    } else if sent.sent > 0 && !plain_clock {
        info!("{sends}");
    }
    (report.ticks_failed > 0).then(|| arduino::Error::Undelivered {
        node: report.node.clone(),
        failed: report.ticks_failed,
        total: report.ticks,
    })
}

/// `arduino send`: each message, one at a time; each ack printed on its own line.
async fn send(args: &SendArgs) -> anyhow::Result<()> {
    let mesh = load_mesh(&args.mesh)?;
    let url = target_url(&mesh, &args.target, &args.channel)?;
    let (secret, withheld) = secret_for(&mesh, &args.target, &url)?;
    let wait = Duration::from_secs_f64(args.timeout);
    let connecting = client::connect(&url, secret.as_deref(), DEFAULT_MAX_MESSAGE);
    let mut ws = match tokio::time::timeout(wait, connecting).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => bail!(
            "cannot reach {url}: {}",
            explain(client::describe(&error), withheld)
        ),
        Err(_) => bail!(
            "cannot reach {url}: no websocket handshake within {}s",
            args.timeout
        ),
    };
    let mut out = std::io::stdout().lock();
    let mut errors = 0;
    for message in &args.messages {
        // Sending (the node may not read) and the ack both count against the timeout.
        let deadline = Instant::now() + wait;
        match tokio::time::timeout_at(deadline, ws.send(Message::text(message.as_str()))).await {
            Err(_) => bail!("{url}: could not send {message:?} within {}s", args.timeout),
            Ok(Err(error)) => bail!("{url}: {}", client::describe(&error)),
            Ok(Ok(())) => {}
        }
        let ack = loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
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
        print(&mut out, &ack)?;
        if ack.starts_with(arduino::Ack::ERROR_PREFIX) {
            errors += 1;
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
    if errors > 0 {
        bail!(
            "{errors} of {} {} not handled",
            plural(args.messages.len() as u64, "message"),
            if errors == 1 { "was" } else { "were" }
        );
    }
    Ok(())
}

/// `arduino bench`: the figures on stdout; a non-zero exit if any message went unacknowledged
/// or was answered with an error.
async fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let mesh = load_mesh(&args.mesh)?;
    let url = target_url(&mesh, &args.target, &args.channel)?;
    let (secret, withheld) = secret_for(&mesh, &args.target, &url)?;
    let options = arduino::bench::BenchOptions {
        url: url.clone(),
        secret,
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

/// The mesh's secret for `target`, and whether one was withheld. The secret goes only to nodes
/// of the mesh: a node named on the command line, or a URL whose host and port are a node's
/// address in the mesh file. Any other address never sees it.
fn secret_for(mesh: &Mesh, target: &str, url: &str) -> anyhow::Result<(Option<String>, bool)> {
    let secret = mesh.secret(env_secret()?);
    Ok(
        if !target.starts_with("ws://") || is_node_address(mesh, url) {
            (secret, false)
        } else {
            let withheld = secret.is_some();
            (None, withheld)
        },
    )
}

/// Whether `url` points at the address of a node of `mesh`: its host (as the mesh file spells
/// it, case aside) and port. Parsed as the connection will be, so `ws://node:1@elsewhere/` is
/// `elsewhere`.
fn is_node_address(mesh: &Mesh, url: &str) -> bool {
    let Ok(uri) = url.parse::<Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let unbracket = |host: &str| {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    };
    let (host, port) = (unbracket(host), uri.port_u16().unwrap_or(80));
    mesh.nodes.iter().any(|node| {
        node.port.is_some_and(|p| p != 0 && p == port)
            && unbracket(&node.host).eq_ignore_ascii_case(&host)
    })
}

/// A connection failure's reason, with a hint when the node wants the secret that this address
/// was not given.
fn explain(reason: String, withheld: bool) -> String {
    if withheld && reason.starts_with("HTTP 401") {
        format!(
            "{reason}; the mesh's secret goes only to its own nodes: give the node's name, or \
             its address as the mesh file has it"
        )
    } else {
        reason
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A node task of `up` that panics is reported by name, and fails the run; the others'
    /// reports still come in.
    #[tokio::test]
    async fn a_node_task_that_panics_is_named_and_fails_up() {
        let mut running = Running::default();
        running.spawn("steady", false, async {
            Report {
                node: "steady".into(),
                ..Report::default()
            }
        });
        running.spawn("fragile", true, async { panic!("a bug in the runtime") });
        assert_eq!(running.clocks, 1);
        let mut outcome = Outcome::default();
        while let Some(ended) = running.next().await {
            outcome.add(ended);
        }
        assert_eq!(running.clocks, 0);
        let error = outcome.finish().unwrap_err();
        assert_eq!(
            error.to_string(),
            "node \"fragile\" stopped abnormally: it panicked (a bug in the runtime)"
        );
    }

    /// The secret goes to a node's address as the mesh file has it, and nowhere else.
    #[test]
    fn only_a_node_address_is_a_node_address() {
        let mesh = Mesh::parse(
            "[[node]]\nname = \"a\"\nport = 8765\n[[node]]\nname = \"b\"\nhost = \"::1\"\nport = 80\n",
            "mesh.toml",
        )
        .unwrap();
        for url in [
            "ws://127.0.0.1:8765/datafeed",
            "ws://127.0.0.1:8765",
            "ws://[::1]/x",
            "ws://[::1]:80/x",
        ] {
            assert!(is_node_address(&mesh, url), "{url}");
        }
        for url in [
            "ws://127.0.0.1:8766/datafeed",
            "ws://localhost:8765/",
            "ws://127.0.0.1:8765@evil.example:8765/",
            "ws://evil.example/127.0.0.1:8765",
            "ws://127.0.0.1/x",
            "not a url",
        ] {
            assert!(!is_node_address(&mesh, url), "{url}");
        }
    }
}
