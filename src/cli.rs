//! The command line: clap types, and how flags turn into mesh settings. Opens no file or
//! socket: `main.rs` loads the mesh and hands it here to be adjusted.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use arduino::{Error, Mesh, NodeDef, Registry, sketches::Entry};

/// A mesh of simulated Arduino sketches talking over websockets.
#[derive(Debug, Parser)]
#[command(
    name = "arduino",
    version,
    after_help = "Run a sketch as a node with `arduino <SKETCH> [OPTIONS]` (see `arduino sketches`),\n\
                  for example `arduino iopin --port 8765`, or `arduino clock --port 8765` to drive it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every node of the mesh in one process, until the clocks are done or Ctrl-C.
    Up(UpArgs),
    /// Send messages to a node, one at a time, and print each acknowledgement.
    Send(SendArgs),
    /// List the sketches that can be run.
    Sketches,
    /// Measure a node: acknowledged messages per second, and round-trip latency percentiles.
    ///
    /// The clients run on one thread, so they use one core and leave the other to the node.
    Bench(BenchArgs),
    /// Run a sketch as a node: `arduino <SKETCH> [OPTIONS]`.
    #[command(external_subcommand)]
    Sketch(Vec<String>),
}

/// How much to log: `-v` for every message and ack, `-vv` for frames; `-q` for no line per
/// message (lifecycle and warnings only), `-qq` for errors only.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct Verbosity {
    /// Log more: -v every message and ack, -vv everything.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log less: -q no line per message (lifecycle and warnings), -qq errors only.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
}

impl Verbosity {
    /// The log filter when `RUST_LOG` is not set.
    pub fn filter(self) -> &'static str {
        match (self.verbose, self.quiet) {
            (0, 0) => "arduino=info",
            (0, 1) => "arduino=info,arduino::sketches=warn",
            (0, _) => "arduino=error",
            (1, _) => "arduino=debug",
            _ => "arduino=trace,tokio_tungstenite=debug,tungstenite=debug",
        }
    }

    /// Whether log lines show their fields (client addresses, peers).
    pub fn fields(self) -> bool {
        self.verbose > 0
    }
}

/// Where the mesh file is.
#[derive(Debug, Clone, Default, Args)]
pub struct MeshArg {
    /// The mesh file [default: ./mesh.toml, or $ARDUINO_MESH].
    #[arg(long, value_name = "FILE", env = "ARDUINO_MESH")]
    pub mesh: Option<PathBuf>,
}

impl MeshArg {
    /// The file to read, and whether the user named it (a missing file is then an error).
    pub fn path(&self) -> (PathBuf, bool) {
        match &self.mesh {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from("mesh.toml"), false),
        }
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub mesh: MeshArg,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// A node of the mesh file, or a URL such as ws://127.0.0.1:8765.
    #[arg(value_name = "NODE|ws://URL")]
    pub target: String,
    /// The messages, sent one at a time, each after the previous one's ack.
    #[arg(value_name = "MSG", required = true)]
    pub messages: Vec<String>,
    /// The channel (websocket path) to send on; a URL's own path wins.
    #[arg(long, short, default_value = "/datafeed")]
    pub channel: String,
    /// Seconds to wait for the connection and for each acknowledgement (0.001 to 86400).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = seconds)]
    pub timeout: f64,
    #[command(flatten)]
    pub mesh: MeshArg,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

/// Run the sketch as a node: listen (or, for a clock, drive its peers) until the work is done
/// or SIGINT/SIGTERM. Settings come from the node's entry in the mesh file; flags override it.
#[derive(Debug, Parser)]
#[command(name = "arduino <SKETCH>")]
pub struct NodeArgs {
    /// Host to listen on (for a clock: host of the node to drive).
    #[arg(
        short,
        long,
        value_name = "HOST",
        visible_short_alias = 'H',
        visible_alias = "host"
    )]
    pub socket: Option<String>,
    /// Port to listen on, 0 for any free one (for a clock: port of the node to drive).
    #[arg(short, long)]
    pub port: Option<u16>,
    /// Clock ticks to send [clock; default 5].
    #[arg(short, long)]
    pub tacks: Option<u64>,
    /// Seconds between clock ticks: 0, or 0.001 to 86400 [clock; default 1].
    #[arg(short, long, value_name = "SECONDS", value_parser = seconds_or_zero)]
    pub delay: Option<f64>,
    /// This node's entry in the mesh file [default: the sketch's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Seed for the sketch's randomness, so runs repeat.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds a peer has to acknowledge a message, 0.001 to 86400 [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub timeout: Option<f64>,
    /// The largest message accepted, 1 byte to 1 GiB (1073741824) [default: 1048576].
    #[arg(long, value_name = "BYTES", value_parser = message_bytes)]
    pub max_message: Option<usize>,
    /// How many clients may be connected at once, 1 to 1000000 [default: 4096].
    #[arg(long, value_name = "N", value_parser = connections)]
    pub max_connections: Option<usize>,
    #[command(flatten)]
    pub mesh: MeshArg,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A node of the mesh file, or a URL such as ws://127.0.0.1:8766.
    #[arg(value_name = "NODE|ws://URL")]
    pub target: String,
    /// Concurrent connections, 1 to 100000.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clients)]
    pub clients: usize,
    /// Messages in all, shared among the clients, 1 to 1000000000.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10_000, value_parser = bench_messages)]
    pub messages: usize,
    /// Messages each client keeps in flight (1: stop and wait), 1 to 65536.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = window)]
    pub window: usize,
    /// Messages each client sends first, not measured, 0 to 1000000000.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = warmup)]
    pub warmup: usize,
    /// The text of each message.
    #[arg(long, default_value = "1")]
    pub message: String,
    /// The channel (websocket path); a URL's own path wins.
    #[arg(long, short, default_value = "/datafeed")]
    pub channel: String,
    /// Seconds to keep every connection open after the run (to measure the node's memory):
    /// 0, or 0.001 to 86400.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0, value_parser = seconds_or_zero)]
    pub hold: f64,
    /// Seconds to wait for each connection and for each acknowledgement (0.001 to 86400).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = seconds)]
    pub timeout: f64,
    #[command(flatten)]
    pub mesh: MeshArg,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

/// The shortest and longest durations a flag (or the mesh file) may give, in seconds.
pub const SECONDS: (f64, f64) = (0.001, 86_400.0);
/// The largest `--max-message`: 1 GiB.
pub const MAX_MESSAGE_LIMIT: usize = 1 << 30;
/// The largest `--max-connections`.
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

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

fn message_bytes(text: &str) -> Result<usize, String> {
    whole(text, 1, MAX_MESSAGE_LIMIT, "bytes").map_err(|e| format!("{e} (1 GiB)"))
}

fn connections(text: &str) -> Result<usize, String> {
    whole(text, 1, MAX_CONNECTIONS_LIMIT, "connections")
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

/// The flags that set a key of the sketch's own config: how the flag is spelt, and the key.
const SKETCH_FLAGS: [(&str, &str); 2] = [("-t/--tacks", "tacks"), ("-d/--delay", "delay")];

impl NodeArgs {
    /// Apply the flags to `mesh` for a node running `sketch`, adding the node when the mesh
    /// file does not have it. Returns the node's name.
    ///
    /// # Errors
    ///
    /// When the mesh's node of that name runs another sketch, or the flags make the mesh
    /// invalid (two nodes on one port, say).
    pub fn apply(&self, mesh: &mut Mesh, sketch: &Entry) -> Result<String, Error> {
        let name = self.name.clone().unwrap_or_else(|| sketch.name.to_owned());
        let index = match mesh.nodes.iter().position(|node| node.name == name) {
            Some(index) => index,
            None => {
                let mut node = NodeDef::new(sketch.name);
                node.name.clone_from(&name);
                if name != sketch.name {
                    node.sketch = Some(sketch.name.to_owned());
                }
                mesh.nodes.push(node);
                mesh.nodes.len() - 1
            }
        };
        let node = &mut mesh.nodes[index];
        if node.sketch() != sketch.name {
            return Err(Error::Mesh {
                path: mesh.path.clone(),
                message: format!(
                    "node {name:?} runs sketch {:?}, not {:?} (pick another node with --name)",
                    node.sketch(),
                    sketch.name
                ),
            });
        }
        if sketch.listens {
            if let Some(host) = &self.socket {
                node.host.clone_from(host);
            }
            // `--port 0` is set after the check: the OS picks the port, so the mesh's peers
            // cannot reach this node, which is what its user asked for.
            if let Some(port) = self.port.filter(|&port| port != 0) {
                node.port = Some(port);
            }
        } else if self.port == Some(0) {
            return Err(command_line(format!(
                "--port 0 (any free port) is for nodes that listen; give {name} the port of the \
                 node it drives"
            )));
        } else if let Some(port) = self.port {
            let host = self
                .socket
                .as_deref()
                .unwrap_or(arduino::mesh::DEFAULT_HOST);
            node.to = vec![if host.contains(':') && !host.starts_with('[') {
                format!("ws://[{host}]:{port}")
            } else {
                format!("ws://{host}:{port}")
            }];
        } else if self.socket.is_some() {
            return Err(command_line(format!(
                "-s/--socket names the node {name} drives: give --port too"
            )));
        }
        if !sketch.listens && self.max_connections.is_some() {
            return Err(command_line(format!(
                "--max-connections is for nodes that listen; {} does not",
                sketch.name
            )));
        }
        if let Some(tacks) = self.tacks {
            node.config.insert(
                "tacks".into(),
                toml::Value::Integer(tacks.min(i64::MAX as u64) as i64),
            );
        }
        if let Some(delay) = self.delay {
            node.config
                .insert("delay".into(), toml::Value::Float(delay));
        }
        if self.seed.is_some() {
            node.seed = self.seed;
        }
        if self.timeout.is_some() {
            node.timeout = self.timeout;
        }
        if self.max_message.is_some() {
            node.max_message = self.max_message;
        }
        if self.max_connections.is_some() {
            node.max_connections = self.max_connections;
        }
        mesh.validate()?;
        if sketch.listens && self.port == Some(0) {
            mesh.nodes[index].port = Some(0);
        }
        Ok(name)
    }

    /// Set up every node of `mesh`, as [`Registry::check`] does. When what fails is a flag
    /// that sets a key of the sketch's config (`-t`, `-d`) on node `name`, the flag is blamed,
    /// not the mesh file: `-t/--tacks is for the clock; iopin does not take it`.
    ///
    /// # Errors
    ///
    /// The first error [`Registry::check`] finds, reworded when a flag caused it.
    pub fn check(&self, registry: &Registry, mesh: &Mesh, name: &str) -> Result<(), Error> {
        let Err(error) = registry.check(mesh) else {
            return Ok(());
        };
        let given = SKETCH_FLAGS.iter().filter(|(_, key)| match *key {
            "tacks" => self.tacks.is_some(),
            _ => self.delay.is_some(),
        });
        for &(flag, key) in given {
            let mut without = mesh.clone();
            let Some(node) = without.nodes.iter_mut().find(|node| node.name == name) else {
                continue;
            };
            node.config.remove(key);
            let sketch = node.sketch().to_owned();
            if registry.check(&without).is_err() {
                continue;
            }
            let reason = match &error {
                Error::Mesh { message, .. } => message.clone(),
                other => other.to_string(),
            };
            return Err(command_line(
                if reason.contains(&format!("`{key}` is not known")) {
                    format!("{flag} is for the clock; {sketch} does not take it")
                } else {
                    format!("{flag}: {reason}")
                },
            ));
        }
        Err(error)
    }
}

/// A mistake in the flags, blamed on the command line.
fn command_line(message: String) -> Error {
    Error::Mesh {
        path: "command line".to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_args(args: &[&str]) -> NodeArgs {
        NodeArgs::try_parse_from(args).unwrap()
    }

    fn registry() -> arduino::Registry {
        arduino::builtin()
    }

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
        assert!(Cli::try_parse_from(["arduino", "send", "iopin"]).is_err());
        let args = node_args(&[
            "clock",
            "-p",
            "8765",
            "-t",
            "3",
            "-d",
            "0.5",
            "-s",
            "localhost",
        ]);
        assert_eq!(
            (args.port, args.tacks, args.delay),
            (Some(8765), Some(3), Some(0.5))
        );
        assert_eq!(args.socket.as_deref(), Some("localhost"));
        assert!(NodeArgs::try_parse_from(["clock", "-d", "-1"]).is_err());
    }

    #[test]
    fn a_clock_port_names_the_node_it_drives() {
        let registry = registry();
        let mut mesh = Mesh::parse(include_str!("../mesh.toml"), "mesh.toml").unwrap();
        let name = node_args(&["clock", "--port", "9000", "-t", "2"])
            .apply(&mut mesh, registry.get("clock").unwrap())
            .unwrap();
        let clock = mesh.node(&name).unwrap();
        assert_eq!(clock.to, ["ws://127.0.0.1:9000"]);
        assert_eq!(clock.config["tacks"].as_integer(), Some(2));
        assert!(clock.port.is_none());
    }

    #[test]
    fn flags_override_the_mesh_file_for_that_node() {
        let registry = registry();
        let mut mesh = Mesh::parse(include_str!("../mesh.toml"), "mesh.toml").unwrap();
        node_args(&["buzzer", "--port", "9001", "--seed", "7"])
            .apply(&mut mesh, registry.get("buzzer").unwrap())
            .unwrap();
        let buzzer = mesh.node("buzzer").unwrap();
        assert_eq!((buzzer.port, buzzer.seed), (Some(9001), Some(7)));
        // The iopin now streams to the buzzer's new port.
        let iopin = mesh.node("iopin").unwrap();
        assert_eq!(mesh.peers(iopin).unwrap()[0].url, "ws://127.0.0.1:9001");
    }

    #[test]
    fn a_node_of_another_sketch_is_refused() {
        let registry = registry();
        let mut mesh = Mesh::parse(include_str!("../mesh.toml"), "mesh.toml").unwrap();
        let error = node_args(&["buzzer", "--name", "iopin"])
            .apply(&mut mesh, registry.get("buzzer").unwrap())
            .unwrap_err();
        assert!(
            error.to_string().contains("runs sketch \"iopin\""),
            "{error}"
        );
    }

    #[test]
    fn port_zero_runs_a_node_others_stream_to() {
        let registry = registry();
        let mut mesh = Mesh::parse(include_str!("../mesh.toml"), "mesh.toml").unwrap();
        node_args(&["buzzer", "--port", "0"])
            .apply(&mut mesh, registry.get("buzzer").unwrap())
            .unwrap();
        assert_eq!(mesh.node("buzzer").unwrap().port, Some(0));
    }

    #[test]
    fn a_port_clash_from_flags_is_refused() {
        let registry = registry();
        let mut mesh = Mesh::parse(include_str!("../mesh.toml"), "mesh.toml").unwrap();
        let error = node_args(&["buzzer", "--port", "8765"])
            .apply(&mut mesh, registry.get("buzzer").unwrap())
            .unwrap_err();
        assert!(error.to_string().contains("also the address"), "{error}");
    }
}
