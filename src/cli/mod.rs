//! The `arduino` program as a library call: [`main`] parses the command line, sets up logging,
//! the panic hook and the runtime, runs one command and turns its outcome into an exit status.
//! A crate of your own gets the whole program, with its own sketches, from a `main` of one line:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     arduino::cli::main(arduino::builtin())
//! }
//! ```
//!
//! One file per command: `node` (`arduino <SKETCH>`), `up`, `send`, `listen`, `check`,
//! `sketches`, `bench`. What more than one of them needs (the mesh file, the secret, the
//! signals, the summary of a node's run, printing to stdout) is here.

mod bench;
mod check;
mod listen;
mod node;
mod send;
mod sketches;
mod up;
mod view;

use std::{
    ffi::OsString,
    fmt::Display,
    io::{ErrorKind, Write},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::http::Uri;
use tracing::info;

use crate::{Mesh, NodeDef, Registry, Report, logging};

/// How long the nodes have, once asked to stop, before the program exits without them: the
/// program as a whole exits within a second.
const STOP_GRACE: Duration = Duration::from_millis(800);

/// Run the `arduino` program with the sketches of `registry`: every subcommand and flag, the
/// log, Ctrl-C and SIGTERM, and the exit status (0 when the work is done or the program was
/// asked to stop; 1 with one line on stderr when it failed; 2 for a command line it refused).
///
/// ```no_run
/// # use arduino::{Ack, Context, Input, Setup, Sketch, ConfigError};
/// # struct Thermometer;
/// # impl Sketch for Thermometer {
/// #     fn setup(_: &mut Setup<'_>) -> Result<Self, ConfigError> { Ok(Thermometer) }
/// #     async fn loop_once(&mut self, _: &mut Context, _: Input<'_>) -> Ack { Ack::NA }
/// # }
/// fn main() -> std::process::ExitCode {
///     arduino::cli::main(arduino::builtin().with::<Thermometer>("thermometer", "reports a temperature"))
/// }
/// ```
pub fn main(registry: Registry) -> ExitCode {
    main_from(registry, std::env::args_os().collect())
}

/// [`main`], with the command line given.
fn main_from(registry: Registry, mut argv: Vec<OsString>) -> ExitCode {
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
        Command::Up(args) => (args.verbosity, Job::Up(args)),
        Command::Send(args) => (args.verbosity, Job::Send(args)),
        Command::Listen(args) => (args.verbosity, Job::Listen(args)),
        Command::Check(args) => (args.verbosity, Job::Check(args)),
        Command::View(args) => (args.verbosity, Job::View(args)),
        Command::Bench(args) => (args.verbosity, Job::Bench(args)),
        Command::Sketches(args) => {
            return match sketches::run(&registry, &args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            };
        }
        Command::Sketch(args) => {
            let sketch = args.first().cloned().unwrap_or_default();
            let entry = match registry.get(&sketch) {
                Ok(entry) => entry,
                Err(error) => {
                    say(format_args!("arduino: {error}"));
                    return ExitCode::from(2);
                }
            };
            let node_args = match node::parse(entry, args.into_iter().skip(1)) {
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
    // One thread: what one node (or one client) costs least on. `arduino up` adds threads of
    // its own for its nodes (see `up::Shards`).
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

/// A mesh of simulated Arduino sketches talking over websockets.
#[derive(Debug, Parser)]
#[command(
    name = "arduino",
    version,
    after_help = "Run a sketch as a node with `arduino <SKETCH> [OPTIONS]` (see `arduino sketches`),\n\
                  for example `arduino iopin --port 8765`, or `arduino clock --port 8765` to drive it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every node of the mesh in one process, until the clocks are done or Ctrl-C.
    Up(up::UpArgs),
    /// Send messages to a node (the arguments, or else the lines of stdin), one at a time, and
    /// print each acknowledgement.
    Send(send::SendArgs),
    /// Follow what nodes do, live: every node of the mesh that has a port, or those named.
    Listen(listen::ListenArgs),
    /// Check the mesh file as startup does, and print its nodes and links.
    Check(check::CheckArgs),
    /// Serve a live picture of the mesh to a browser (http://127.0.0.1:8080/ by default).
    View(view::ViewArgs),
    /// List the sketches that can be run.
    Sketches(sketches::SketchesArgs),
    /// Measure a node: acknowledged messages per second, and round-trip latency percentiles.
    ///
    /// The clients run on one thread, so they use one core and leave the other to the node.
    Bench(bench::BenchArgs),
    /// Run a sketch as a node: `arduino <SKETCH> [OPTIONS]`.
    #[command(external_subcommand)]
    Sketch(Vec<String>),
}

/// A command that runs in the async runtime.
enum Job {
    Node(String, node::NodeArgs),
    Up(up::UpArgs),
    Send(send::SendArgs),
    Listen(listen::ListenArgs),
    Check(check::CheckArgs),
    View(view::ViewArgs),
    Bench(bench::BenchArgs),
}

impl Job {
    async fn run(self, registry: &Registry) -> anyhow::Result<()> {
        match self {
            Job::Node(sketch, args) => node::run(registry, &sketch, &args).await,
            Job::Up(args) => up::run(registry, &args).await,
            Job::Send(args) => send::run(&args).await,
            Job::Listen(args) => listen::run(&args).await,
            Job::Check(args) => check::run(registry, &args),
            Job::View(args) => view::run(&args).await,
            Job::Bench(args) => bench::run(&args).await,
        }
    }
}

/// How much to log: by default every message and ack; `-v` adds clients, channels and the
/// links at work, `-vv` frames; `-q` no line per message (lifecycle and warnings only), `-qq`
/// errors only.
#[derive(Debug, Clone, Copy, Default, Args)]
struct Verbosity {
    /// Log more: -v clients, channels and links at work, -vv everything.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log less: -q no line per message (lifecycle and warnings), -qq errors only.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
}

impl Verbosity {
    /// The log filter when `RUST_LOG` is not set.
    fn filter(self) -> &'static str {
        match (self.verbose, self.quiet) {
            (0, 0) => "arduino=info",
            (0, 1) => "arduino=info,arduino::sketches=warn",
            (0, _) => "arduino=error",
            (1, _) => "arduino=debug",
            _ => "arduino=trace,tokio_tungstenite=debug,tungstenite=debug",
        }
    }

    /// Whether log lines show their fields (client addresses, peers).
    fn fields(self) -> bool {
        self.verbose > 0
    }
}

/// Where the mesh file is.
#[derive(Debug, Clone, Default, Args)]
struct MeshArg {
    /// The mesh file [default: ./mesh.toml, or $ARDUINO_MESH].
    #[arg(long, value_name = "FILE", env = "ARDUINO_MESH")]
    mesh: Option<PathBuf>,
}

impl MeshArg {
    /// The file to read, and whether the user named it (a missing file is then an error).
    fn path(&self) -> (PathBuf, bool) {
        match &self.mesh {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from("mesh.toml"), false),
        }
    }

    /// The mesh file, or an empty mesh when the default file is absent.
    fn load_or_empty(&self) -> anyhow::Result<Mesh> {
        let (path, named) = self.path();
        if !named && !path.exists() {
            return Ok(Mesh::empty(&path.display().to_string()));
        }
        Ok(Mesh::load(&path)?)
    }
}

/// The shortest and longest durations a flag (or the mesh file) may give, in seconds.
const SECONDS: (f64, f64) = (0.001, 86_400.0);

/// A duration from 0.001 s to a day: small enough for `Duration`, large enough for a timer.
fn seconds(text: &str) -> Result<f64, String> {
    let (min, max) = SECONDS;
    match text.trim().parse::<f64>() {
        Ok(x) if (min..=max).contains(&x) => Ok(x),
        _ => Err(format!("give a number of seconds from {min} to {max}")),
    }
}

/// As [`seconds`], or 0 for "none".
fn seconds_or_zero(text: &str) -> Result<f64, String> {
    let (min, max) = SECONDS;
    match text.trim().parse::<f64>() {
        Ok(x) if x == 0.0 || (min..=max).contains(&x) => Ok(x),
        _ => Err(format!(
            "give 0, or a number of seconds from {min} to {max}"
        )),
    }
}

/// A whole number from `min` to `max`, refused in words otherwise.
fn whole(text: &str, min: usize, max: usize, what: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("give a whole number of {what} from {min} to {max}")),
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

/// `ARDUINO_SECRET`, when set (an empty one counts as unset), checked as the mesh file's is.
fn env_secret() -> anyhow::Result<Option<String>> {
    match std::env::var("ARDUINO_SECRET") {
        Ok(secret) if secret.is_empty() => Ok(None),
        Ok(secret) => match crate::mesh::check_secret(&secret) {
            Ok(()) => Ok(Some(secret)),
            Err(reason) => bail!("the secret in ARDUINO_SECRET {reason}"),
        },
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("the secret in ARDUINO_SECRET is not valid UTF-8")
        }
    }
}

/// Bind the port a node of the mesh listens on.
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
        anyhow::Error::new(crate::Error::bind(addr, error)).context(format!("node {:?}", node.name))
    })
}

/// Log what a node did; the error when a clock's tick was not delivered.
fn summarize(report: &Report) -> Option<crate::Error> {
    let span = crate::runtime::node_span(&report.node);
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
    (report.ticks_failed > 0).then(|| crate::Error::Undelivered {
        node: report.node.clone(),
        failed: report.ticks_failed,
        total: report.ticks,
    })
}

/// The mesh's secret for `target`, and whether one was withheld. The secret goes only to nodes
/// of the mesh: a node named on the command line, or a URL whose host and port are a node's
/// address in the mesh file. Any other address never sees it.
fn secret_for(mesh: &Mesh, target: &str, url: &str) -> anyhow::Result<(Option<String>, bool)> {
    let secret = mesh.secret(env_secret()?);
    Ok(if !is_url(target) || is_node_address(mesh, url) {
        (secret, false)
    } else {
        let withheld = secret.is_some();
        (None, withheld)
    })
}

/// Whether a target on the command line is an address rather than a node's name.
fn is_url(target: &str) -> bool {
    target.contains("://")
}

/// Whether `url` points at the address of a node of `mesh`: its host (as the mesh file spells
/// it, case aside) and port, in the scheme the mesh speaks (with `[tls]`, `wss://` or
/// `https://` only: the secret never travels in the clear). Parsed as the connection will be,
/// so `ws://node:1@elsewhere/` is `elsewhere`.
fn is_node_address(mesh: &Mesh, url: &str) -> bool {
    let Ok(uri) = url.parse::<Uri>() else {
        return false;
    };
    let secure = matches!(uri.scheme_str(), Some("wss" | "https"));
    if secure != mesh.tls.is_some() {
        return false;
    }
    let Some(host) = uri.host() else {
        return false;
    };
    let unbracket = |host: &str| {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    };
    let default_port = if secure { 443 } else { 80 };
    let (host, port) = (unbracket(host), uri.port_u16().unwrap_or(default_port));
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

/// The node of `mesh` called `name`, or an error listing those that listen.
fn mesh_node<'a>(mesh: &'a Mesh, name: &str) -> anyhow::Result<&'a NodeDef> {
    mesh.node(name).with_context(|| {
        let known: Vec<&str> = mesh
            .nodes
            .iter()
            .filter(|n| n.port.is_some())
            .map(|n| n.name.as_str())
            .collect();
        format!(
            "{}: no node {name:?} (nodes that listen: {}; or give a ws:// URL)",
            mesh.path,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )
    })
}

/// `ws://...` or `wss://...` as given (with `channel` when it has no path), or the URL of the
/// mesh's node.
fn target_url(mesh: &Mesh, target: &str, channel: &str) -> anyhow::Result<String> {
    let channel = channel.trim_start_matches('/');
    if let Some(rest) = target
        .strip_prefix("ws://")
        .or_else(|| target.strip_prefix("wss://"))
    {
        return Ok(if rest.contains('/') {
            target.to_owned()
        } else {
            format!("{target}/{channel}")
        });
    }
    let node = mesh_node(mesh, target)?;
    let url = mesh.url(node).with_context(|| {
        format!(
            "{}: node {target:?} has no port to reach it at (a node without one is reached \
                 only by the nodes of its own `arduino up`, or through NATS with a [nats] table)",
            mesh.path
        )
    })?;
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

    #[test]
    fn the_contract_commands_parse() {
        let cli = Cli::try_parse_from(["arduino", "iopin", "--port", "8765"]).unwrap();
        assert!(
            matches!(cli.command, Command::Sketch(ref args) if args == &["iopin", "--port", "8765"])
        );
        let cli = Cli::try_parse_from(["arduino", "up", "--mesh", "m.toml"]).unwrap();
        assert!(
            matches!(cli.command, Command::Up(ref up) if up.mesh.path().0.as_path() == std::path::Path::new("m.toml"))
        );
        let cli =
            Cli::try_parse_from(["arduino", "send", "iopin", "--channel", "/x", "1", "0"]).unwrap();
        let Command::Send(send) = cli.command else {
            panic!()
        };
        assert_eq!(send.messages, ["1", "0"]);
        assert_eq!(send.channel, "/x");
        // No message: they come from stdin.
        let cli = Cli::try_parse_from(["arduino", "send", "iopin"]).unwrap();
        assert!(matches!(cli.command, Command::Send(ref send) if send.messages.is_empty()));
        let cli = Cli::try_parse_from(["arduino", "check", "--mesh", "m.toml"]).unwrap();
        assert!(matches!(cli.command, Command::Check(_)));
        let cli =
            Cli::try_parse_from(["arduino", "listen", "iopin", "ws://h:1", "--json"]).unwrap();
        assert!(
            matches!(cli.command, Command::Listen(ref listen) if listen.json && listen.targets == ["iopin", "ws://h:1"])
        );
        let cli = Cli::try_parse_from(["arduino", "sketches", "-v"]).unwrap();
        assert!(matches!(cli.command, Command::Sketches(ref s) if s.verbosity.verbose == 1));
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
