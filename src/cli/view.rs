//! `arduino view`: a live picture of the mesh in a browser, served until Ctrl-C; and the view
//! server that `arduino up --view` runs beside its nodes.

use anyhow::{Context as _, bail};
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{MeshArg, Verbosity, env_secret, shutdown_signal};
use crate::{Mesh, observe::feed::Feed, view};

#[derive(Debug, Args)]
pub(super) struct ViewArgs {
    /// Where to serve the page [default: 127.0.0.1:8080].
    #[arg(value_name = "ADDR")]
    pub(super) addr: Option<String>,
    #[command(flatten)]
    pub(super) mesh: MeshArg,
    #[command(flatten)]
    pub(super) verbosity: Verbosity,
}

/// `arduino view`: serve the page for the mesh file's nodes until SIGINT/SIGTERM.
pub(super) async fn run(args: &ViewArgs) -> anyhow::Result<()> {
    let (path, _) = args.mesh.path();
    let mesh = Mesh::load(&path)?;
    if mesh.nodes.is_empty() {
        bail!("{}: the mesh has no nodes", mesh.path);
    }
    let listener = bind(args.addr.as_deref()).await?;
    let stop = CancellationToken::new();
    let served = serve(listener, mesh, Vec::new(), stop.clone())?;
    tokio::select! {
        _ = shutdown_signal() => stop.cancel(),
        _ = stop.cancelled() => {}
    }
    served.await.context("the view server stopped abnormally")?
}

/// The view's listener on `addr` (default 127.0.0.1:8080), bound before anything starts so
/// that a busy port fails up front.
pub(super) async fn bind(addr: Option<&str>) -> anyhow::Result<TcpListener> {
    let addr = addr.unwrap_or(view::DEFAULT_ADDR);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("the view cannot listen on {addr} (give another ADDR)"))
}

/// Serve the view of `mesh` on `listener` until `stop`, in a task of its own, following the
/// nodes without a port through their `feeds` (those of `arduino up`'s own process).
pub(super) fn serve(
    listener: TcpListener,
    mesh: Mesh,
    feeds: Vec<Feed>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let mut mesh = mesh;
    crate::nats::apply_url(&mut mesh, std::env::var(crate::nats::URL_VAR).ok())?;
    let secret = mesh.secret(env_secret()?);
    let options = view::ViewOptions {
        feeds,
        ..view::ViewOptions::default()
    };
    Ok(tokio::spawn(async move {
        view::serve_with(listener, &mesh, secret.as_deref(), options, stop)
            .await
            .context("the view server failed")
    }))
}
