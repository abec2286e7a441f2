//! `arduino <SKETCH>`: one node, until its work is done or SIGINT/SIGTERM. The sketch's help,
//! and how its flags turn into mesh settings.

use std::pin::pin;

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches, Parser};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{
    MeshArg, STOP_GRACE, Verbosity, bind, env_secret, seconds, seconds_or_zero, shutdown_signal,
    summarize, whole,
};
use crate::{Directory, Error, Events, Mesh, NodeDef, Registry, sketches::Entry};

/// Whether `node` goes through NATS: then it needs no port to be reached.
fn node_is_nats(node: &crate::Node) -> bool {
    node.spec.directory.nats().is_some()
}

/// Run the sketch as a node: listen (or, for a clock, drive its peers) until the work is done
/// or SIGINT/SIGTERM. Settings come from the node's entry in the mesh file; flags override it.
#[derive(Debug, Parser)]
#[command(name = "arduino <SKETCH>")]
pub(super) struct NodeArgs {
    /// Host to listen on (for a clock: host of the node to drive).
    #[arg(
        short,
        long,
        value_name = "HOST",
        visible_short_alias = 'H',
        visible_alias = "host"
    )]
    pub(super) socket: Option<String>,
    /// Port to listen on, 0 for any free one (for a clock: port of the node to drive).
    #[arg(short, long)]
    pub(super) port: Option<u16>,
    /// Clock ticks to send [clock; default 5].
    #[arg(short, long)]
    pub(super) tacks: Option<u64>,
    /// Seconds between clock ticks: 0, or 0.001 to 86400 [clock; default 1].
    #[arg(short, long, value_name = "SECONDS", value_parser = seconds_or_zero)]
    pub(super) delay: Option<f64>,
    /// This node's entry in the mesh file [default: the sketch's name].
    #[arg(long)]
    pub(super) name: Option<String>,
    /// Seed for the sketch's randomness, so runs repeat.
    #[arg(long)]
    pub(super) seed: Option<u64>,
    /// Seconds a peer has to acknowledge a message, 0.001 to 86400 [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub(super) timeout: Option<f64>,
    /// The largest message accepted, 1 byte to 1 GiB (1073741824) [default: 1048576].
    #[arg(long, value_name = "BYTES", value_parser = message_bytes)]
    pub(super) max_message: Option<usize>,
    /// How many clients may be connected at once, 1 to 1000000 [default: 4096].
    #[arg(long, value_name = "N", value_parser = connections)]
    pub(super) max_connections: Option<usize>,
    #[command(flatten)]
    pub(super) mesh: MeshArg,
    #[command(flatten)]
    pub(super) verbosity: Verbosity,
}

/// The largest `--max-message`: 1 GiB.
const MAX_MESSAGE_LIMIT: usize = 1 << 30;
/// The largest `--max-connections`.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

fn message_bytes(text: &str) -> Result<usize, String> {
    whole(text, 1, MAX_MESSAGE_LIMIT, "bytes").map_err(|e| format!("{e} (1 GiB)"))
}

fn connections(text: &str) -> Result<usize, String> {
    whole(text, 1, MAX_CONNECTIONS_LIMIT, "connections")
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
    pub(super) fn apply(&self, mesh: &mut Mesh, sketch: &Entry) -> Result<String, Error> {
        let name = self.name.clone().unwrap_or_else(|| sketch.name.to_owned());
        let scheme = if mesh.tls.is_some() { "wss" } else { "ws" };
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
            let host = self.socket.as_deref().unwrap_or(crate::mesh::DEFAULT_HOST);
            node.to = vec![if host.contains(':') && !host.starts_with('[') {
                format!("{scheme}://[{host}]:{port}")
            } else {
                format!("{scheme}://{host}:{port}")
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
    pub(super) fn check(&self, registry: &Registry, mesh: &Mesh, name: &str) -> Result<(), Error> {
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

/// The sketch's help and flags, as `arduino SKETCH --help` shows them: what the sketch does
/// (its registry entry's `about`), and only the flags that apply to it, worded for a sketch
/// that listens or for one that drives other nodes. The one place the sketch's help is made.
pub(super) fn sketch_help(entry: &Entry) -> clap::Command {
    let name = entry.name;
    let declares = |key: &str| entry.config.iter().any(|declared| declared.name == key);
    let mut command = NodeArgs::command()
        .bin_name(format!("arduino {name}"))
        .about(format!("{name}: {}", entry.about))
        .long_about(None);
    // -t and -d set the keys `tacks` and `delay`: shown only for a sketch that has them, and
    // still taken otherwise, so that giving them is blamed in words.
    if !declares("tacks") {
        command = command.mut_arg("tacks", |arg| arg.hide(true));
    }
    if !declares("delay") {
        command = command.mut_arg("delay", |arg| arg.hide(true));
    }
    let runs = if entry.listens {
        command = command
            .mut_arg("socket", |arg| {
                arg.help("Host to listen on [default: the mesh file's, or 127.0.0.1]")
            })
            .mut_arg("port", |arg| {
                arg.help("Port to listen on, 0 for any free one [default: the mesh file's]")
            });
        format!("Runs {name} as a node: it listens until Ctrl-C or SIGTERM.")
    } else {
        command = command
            .mut_arg("socket", |arg| {
                arg.help("Host of the node to drive, with --port [default: 127.0.0.1]")
            })
            .mut_arg("port", |arg| {
                arg.help("Port of the node to drive [default: the peers of its mesh entry]")
            })
            .mut_arg("max_connections", |arg| arg.hide(true));
        format!("Runs {name} as a node that drives others, until its work is done or Ctrl-C.")
    };
    let config = match entry.describe_config().trim_end().to_owned() {
        keys if keys.is_empty() => format!("{name} takes no config keys."),
        keys => {
            format!("Config keys ([node.config] in the mesh file), with their defaults:\n{keys}")
        }
    };
    command.after_help(format!(
        "{runs} Settings come from the node's entry in the mesh file (--name, default \
         {name:?}); flags override it.\n\n{config}"
    ))
}

/// The flags of `arduino SKETCH ARGS...` (ARGS without the program and sketch names).
pub(super) fn parse(
    entry: &Entry,
    args: impl IntoIterator<Item = String>,
) -> Result<NodeArgs, clap::Error> {
    let argv = std::iter::once(format!("arduino {}", entry.name)).chain(args);
    let matches = sketch_help(entry).try_get_matches_from(argv)?;
    NodeArgs::from_arg_matches(&matches)
}

/// `arduino <SKETCH>`: one node, until its work is done or SIGINT/SIGTERM.
pub(super) async fn run(registry: &Registry, sketch: &str, args: &NodeArgs) -> anyhow::Result<()> {
    let entry = registry.get(sketch)?;
    let mut mesh = args.mesh.load_or_empty()?;
    let nats = crate::nats::apply_url(&mut mesh, std::env::var(crate::nats::URL_VAR).ok())?;
    let name = args.apply(&mut mesh, entry)?;
    args.check(registry, &mesh, &name)?;
    let def = mesh
        .node(&name)
        .context("the node vanished from the mesh")?;
    let node = registry.build(&mesh, def, mesh.secret(env_secret()?), Events::new(&name))?;
    // Through NATS, every node of the mesh is reachable, port or not; and a node started
    // more than once answers in one queue group with its other copies.
    let node = match nats {
        Some(url) => {
            if def.replicas() > 1 {
                tracing::info!(
                    "{name} has replicas = {}: this process is one copy (start more the same \
                     way, or run them all with `arduino up`)",
                    def.replicas()
                );
            }
            let serving = entry.listens.then(|| name.clone());
            let events = mesh.nats.as_ref().is_none_or(|nats| nats.events);
            node.in_process(Directory::new([], 1).over_nats(url, mesh.tls.clone(), serving, events))
        }
        None => {
            mesh.reachable_alone(def)?;
            node
        }
    };
    let listener = match def.port {
        None if node_is_nats(&node) => None,
        _ if entry.listens => Some(bind(def).await?),
        _ => None,
    };
    let stop = CancellationToken::new();
    let mut running = pin!(crate::run_until(node, listener, stop.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node_args(args: &[&str]) -> NodeArgs {
        NodeArgs::try_parse_from(args).unwrap()
    }

    fn registry() -> Registry {
        crate::builtin()
    }

    #[test]
    fn the_sketch_flags_parse() {
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
        let registry = registry();
        let args = parse(registry.get("iopin").unwrap(), ["-t".into(), "3".into()]).unwrap();
        assert_eq!(args.tacks, Some(3));
    }

    /// A sketch's help says what it does, and words and shows its flags for what it is.
    #[test]
    fn a_sketchs_help_fits_the_sketch() {
        let registry = registry();
        let help = |name: &str| {
            sketch_help(registry.get(name).unwrap())
                .render_help()
                .to_string()
        };
        let clock = help("clock");
        assert!(clock.contains("ticks on an interval"), "{clock}");
        assert!(clock.contains("--tacks"), "{clock}");
        assert!(clock.contains("Port of the node to drive"), "{clock}");
        assert!(!clock.contains("--max-connections"), "{clock}");
        let iopin = help("iopin");
        assert!(iopin.contains("draws random bits"), "{iopin}");
        assert!(!iopin.contains("--tacks"), "{iopin}");
        assert!(!iopin.contains("--delay"), "{iopin}");
        assert!(iopin.contains("Port to listen on"), "{iopin}");
        assert!(iopin.contains("--max-connections"), "{iopin}");
    }

    #[test]
    fn a_clock_port_names_the_node_it_drives() {
        let registry = registry();
        let mut mesh = Mesh::parse(include_str!("../../mesh.toml"), "mesh.toml").unwrap();
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
        let mut mesh = Mesh::parse(include_str!("../../mesh.toml"), "mesh.toml").unwrap();
        node_args(&["buzzer", "--port", "9001", "--seed", "7"])
            .apply(&mut mesh, registry.get("buzzer").unwrap())
            .unwrap();
        let buzzer = mesh.node("buzzer").unwrap();
        assert_eq!((buzzer.port, buzzer.seed), (Some(9001), Some(7)));
        // The iopin now streams to the buzzer's new port.
        let iopin = mesh.node("iopin").unwrap();
        assert_eq!(
            mesh.peers(iopin).unwrap()[0].url.as_deref(),
            Some("ws://127.0.0.1:9001")
        );
    }

    #[test]
    fn a_node_of_another_sketch_is_refused() {
        let registry = registry();
        let mut mesh = Mesh::parse(include_str!("../../mesh.toml"), "mesh.toml").unwrap();
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
        let mut mesh = Mesh::parse(include_str!("../../mesh.toml"), "mesh.toml").unwrap();
        node_args(&["buzzer", "--port", "0"])
            .apply(&mut mesh, registry.get("buzzer").unwrap())
            .unwrap();
        assert_eq!(mesh.node("buzzer").unwrap().port, Some(0));
    }

    #[test]
    fn a_port_clash_from_flags_is_refused() {
        let registry = registry();
        let mut mesh = Mesh::parse(include_str!("../../mesh.toml"), "mesh.toml").unwrap();
        let error = node_args(&["buzzer", "--port", "8765"])
            .apply(&mut mesh, registry.get("buzzer").unwrap())
            .unwrap_err();
        assert!(error.to_string().contains("also the address"), "{error}");
    }
}
