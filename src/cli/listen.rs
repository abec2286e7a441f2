//! `arduino listen`: follow the event feeds of nodes, live, until Ctrl-C or a closed pipe.

use anyhow::bail;
use clap::Args;
use tokio_tungstenite::tungstenite::http::Uri;

use super::{MeshArg, Verbosity, env_secret, is_node_address, is_url, mesh_node, shutdown_signal};
use crate::{
    Mesh, NodeDef, nats,
    observe::{Format, NatsSource, Source, listen_with},
};

#[derive(Debug, Args)]
pub(super) struct ListenArgs {
    /// Nodes of the mesh file, or addresses such as ws://127.0.0.1:8765 [default: every node
    /// of the mesh file that has a port; through NATS, every node of the mesh].
    #[arg(value_name = "NODE|URL")]
    pub(super) targets: Vec<String>,
    /// One JSON object a line, as the nodes send them.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) mesh: MeshArg,
    #[command(flatten)]
    pub(super) verbosity: Verbosity,
}

/// A URL to follow must name a host and a port: anything else would be waited for in vain.
fn check_url(target: &str) -> anyhow::Result<()> {
    let uri: Uri = target
        .parse()
        .map_err(|_| anyhow::anyhow!("{target:?} is not a URL: give ws://HOST:PORT"))?;
    if !matches!(uri.scheme_str(), Some("ws" | "http" | "wss" | "https")) {
        bail!(
            "{target:?}: only ws://, wss://, http:// and https:// URLs name a node: give \
             ws://HOST:PORT"
        );
    }
    if uri.host().is_none_or(str::is_empty) || uri.port_u16().is_none() {
        bail!("{target:?} names no host and port: give ws://HOST:PORT");
    }
    Ok(())
}

/// `host:port` of a node of the mesh, when it has a port others can reach.
fn addr(node: &NodeDef) -> Option<String> {
    let port = node.port.filter(|&port| port != 0)?;
    Some(if node.host.contains(':') && !node.host.starts_with('[') {
        format!("[{}]:{port}", node.host)
    } else {
        format!("{}:{port}", node.host)
    })
}

/// What to follow: the nodes named (or at the addresses given), or every node of the mesh with
/// a port. The mesh's secret goes to nodes of the mesh only, as `send` gives it.
fn sources(mesh: &Mesh, targets: &[String], secret: Option<&str>) -> anyhow::Result<Vec<Source>> {
    let of_mesh = |node: &NodeDef| -> anyhow::Result<Source> {
        let Some(addr) = addr(node) else {
            bail!(
                "{}: node {:?} has no port to reach it at (a node without one is reached only \
                 by the nodes of its own `arduino up`, or through NATS with a [nats] table)",
                mesh.path,
                node.name
            );
        };
        Ok(Source {
            name: node.name.clone(),
            addr,
            secret: secret.map(str::to_owned),
            tls: mesh.tls.clone(),
        })
    };
    if targets.is_empty() {
        let sources: Vec<Source> = mesh
            .nodes
            .iter()
            .filter(|node| addr(node).is_some())
            .map(of_mesh)
            .collect::<anyhow::Result<_>>()?;
        if sources.is_empty() {
            bail!(
                "{}: no node has a port to listen to; name nodes, or give their URLs",
                mesh.path
            );
        }
        return Ok(sources);
    }
    targets
        .iter()
        .map(|target| {
            if is_url(target) {
                check_url(target)?;
                let mut source = Source::from_url(target);
                if target.starts_with("wss://") || target.starts_with("https://") {
                    let Some(tls) = &mesh.tls else {
                        bail!(
                            "{target:?}: a wss:// or https:// URL needs the mesh's [tls] table: \
                             its `ca` says which certificates to trust"
                        );
                    };
                    source.tls = Some(tls.clone());
                }
                if is_node_address(mesh, target) {
                    source.secret = secret.map(str::to_owned);
                }
                Ok(source)
            } else {
                of_mesh(mesh_node(mesh, target)?)
            }
        })
        .collect()
}

/// `arduino listen`: the events of the nodes on stdout, one line each.
pub(super) async fn run(args: &ListenArgs) -> anyhow::Result<()> {
    let mut mesh = args.mesh.load_or_empty()?;
    let nats_url = nats::apply_url(&mut mesh, std::env::var(nats::URL_VAR).ok())?;
    let secret = mesh.secret(env_secret()?);
    let (sources, nats) = match nats_url {
        None => (sources(&mesh, &args.targets, secret.as_deref())?, None),
        // Nodes by name are followed through NATS, all of them when none is named; URLs
        // still by their own feed.
        Some(url) => {
            let (urls, nodes): (Vec<String>, Vec<String>) = args
                .targets
                .iter()
                .cloned()
                .partition(|target| is_url(target));
            let subjects = match (urls.is_empty(), nodes.is_empty()) {
                (true, true) => vec![format!("{}.{}.>", nats::ROOT, nats::EVENTS)],
                _ => nodes
                    .iter()
                    .map(|node| nats::events_subject(node))
                    .collect::<Result<_, _>>()
                    .map_err(|why| anyhow::anyhow!("cannot listen through NATS: {why}"))?,
            };
            let sources = match urls.is_empty() {
                true => Vec::new(),
                false => sources(&mesh, &urls, secret.as_deref())?,
            };
            let nats = match subjects.is_empty() {
                true => None,
                false => Some(NatsSource {
                    client: nats::connect(&url, "listen", mesh.tls.clone())?,
                    name: nats::without_credentials(&url),
                    subjects,
                }),
            };
            (sources, nats)
        }
    };
    let format = if args.json {
        Format::Json
    } else {
        Format::Readable
    };
    tokio::select! {
        listened = listen_with(sources, nats, format, std::io::stdout()) => Ok(listened?),
        () = shutdown_signal() => Ok(()),
        () = stdout_closed() => Ok(()),
    }
}

/// Resolves when whoever reads stdout has gone (`| head -1` got its line), so that `listen`
/// ends then, not at the next event, which may never come; pending when that cannot be known
/// (a terminal, a file).
async fn stdout_closed() {
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    // A plain thread, not `spawn_blocking`: it may wait forever, and must not hold up the
    // runtime's shutdown.
    let watching = std::thread::Builder::new()
        .name("stdout-watch".to_owned())
        .spawn(move || {
            if reader_gone(libc::STDOUT_FILENO) {
                let _ = closed_tx.send(());
            }
        });
    if watching.is_err() || closed_rx.await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Wait until `fd` reports an error or hang-up, which a pipe's write end does once its reader
/// has closed it; `false` when polling fails.
#[cfg(unix)]
fn reader_gone(fd: libc::c_int) -> bool {
    let mut watched = libc::pollfd {
        fd,
        events: 0, // POLLERR and POLLHUP are reported whatever is asked
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, and its count; poll(2) only writes its `revents`.
        let ready = unsafe { libc::poll(&raw mut watched, 1, -1) };
        if ready > 0 {
            return watched.revents & (libc::POLLERR | libc::POLLHUP) != 0;
        }
        if ready < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

#[cfg(not(unix))]
fn reader_gone(_fd: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> Mesh {
        Mesh::parse(
            "secret = \"s3cret-s3cret-s3cret\"\n\
             [[node]]\nname = \"clock\"\nto = [\"iopin\"]\n\
             [[node]]\nname = \"iopin\"\nport = 8765\nto = [\"buzzer\"]\n\
             [[node]]\nname = \"buzzer\"\nhost = \"::1\"\nport = 8766\n",
            "mesh.toml",
        )
        .unwrap()
    }

    /// By default every node with a port; the secret only to the mesh's own addresses.
    #[test]
    fn the_sources_are_the_mesh_nodes_with_a_port() {
        let mesh = mesh();
        let all = sources(&mesh, &[], Some("s")).unwrap();
        let shown: Vec<(&str, &str, Option<&str>)> = all
            .iter()
            .map(|s| (s.name.as_str(), s.addr.as_str(), s.secret.as_deref()))
            .collect();
        assert_eq!(
            shown,
            [
                ("iopin", "127.0.0.1:8765", Some("s")),
                ("buzzer", "[::1]:8766", Some("s"))
            ]
        );
        let some = sources(
            &mesh,
            &[
                "buzzer".into(),
                "ws://127.0.0.1:8765".into(),
                "http://127.0.0.1:9999/events".into(),
            ],
            Some("s"),
        )
        .unwrap();
        let secrets: Vec<Option<&str>> = some.iter().map(|s| s.secret.as_deref()).collect();
        assert_eq!(secrets, [Some("s"), Some("s"), None]);
        assert_eq!(some[2].addr, "127.0.0.1:9999");
        let error = sources(&mesh, &["clock".into()], None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "mesh.toml: node \"clock\" has no port to reach it at (a node without one is reached \
             only by the nodes of its own `arduino up`, or through NATS with a [nats] table)"
        );
        let error = sources(&mesh, &["attic".into()], None).unwrap_err();
        assert!(error.to_string().contains("no node \"attic\""), "{error}");
        let empty = Mesh::empty("mesh.toml");
        let error = sources(&empty, &[], None).unwrap_err();
        assert!(error.to_string().contains("no node has a port"), "{error}");
    }
}
