//! `arduino check`: the mesh file checked as startup checks it (every node set up through the
//! registry), then its nodes, addresses and links printed as a tree.

use std::{collections::HashSet, io::Write};

use anyhow::bail;
use clap::Args;

use super::{MeshArg, Verbosity, env_secret, plural, print};
use crate::{Mesh, NodeDef, Registry};

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    #[command(flatten)]
    pub(super) mesh: MeshArg,
    #[command(flatten)]
    pub(super) verbosity: Verbosity,
}

/// `arduino check`: fail with startup's one line, or print the mesh.
pub(super) fn run(registry: &Registry, args: &CheckArgs) -> anyhow::Result<()> {
    let (path, _) = args.mesh.path();
    let mesh = Mesh::load(&path)?;
    if mesh.nodes.is_empty() {
        bail!("{}: the mesh has no nodes", mesh.path);
    }
    env_secret()?;
    registry.check(&mesh)?;
    let mut out = std::io::stdout().lock();
    let links: usize = mesh.nodes.iter().map(|node| node.to.len()).sum();
    print(
        &mut out,
        format_args!(
            "{}: {}, {}",
            mesh.path,
            plural(mesh.nodes.len() as u64, "node"),
            plural(links as u64, "link")
        ),
    )?;
    for line in tree(&mesh) {
        print(&mut out, line)?;
    }
    Ok(())
}

/// One line per node, `name (sketch) ws://host:port -> peer, peer`, each node under the first
/// node that streams to it, indented. A node reached from more than one is shown once.
fn tree(mesh: &Mesh) -> Vec<String> {
    let streamed_to: HashSet<&str> = mesh
        .nodes
        .iter()
        .flat_map(|node| node.to.iter().map(String::as_str))
        .collect();
    let mut shown = HashSet::new();
    let mut lines = Vec::new();
    let roots = mesh
        .nodes
        .iter()
        .filter(|node| !streamed_to.contains(node.name.as_str()));
    // A mesh is free of cycles once checked; the second pass is for any node the first missed.
    for node in roots.chain(&mesh.nodes) {
        branch(mesh, node, 0, &mut shown, &mut lines);
    }
    lines
}

fn branch<'a>(
    mesh: &'a Mesh,
    node: &'a NodeDef,
    depth: usize,
    shown: &mut HashSet<&'a str>,
    lines: &mut Vec<String>,
) {
    if !shown.insert(node.name.as_str()) {
        return;
    }
    let mut line = Vec::new();
    let _ = write!(
        line,
        "{:indent$}{} ({})",
        "",
        node.name,
        node.sketch(),
        indent = depth * 2
    );
    if let Some(url) = mesh.url(node) {
        let _ = write!(line, " {url}");
    }
    if !node.to.is_empty() {
        let _ = write!(line, " -> {}", node.to.join(", "));
    }
    lines.push(String::from_utf8_lossy(&line).into_owned());
    for peer in &node.to {
        if let Some(peer) = mesh.node(peer) {
            branch(mesh, peer, depth + 1, shown, lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_mesh_reads_as_a_tree() {
        let mesh = Mesh::parse(include_str!("../../mesh.toml"), "mesh.toml").unwrap();
        assert_eq!(
            tree(&mesh),
            [
                "clock (clock) -> iopin",
                "  iopin (iopin) ws://127.0.0.1:8765 -> buzzer",
                "    buzzer (buzzer) ws://127.0.0.1:8766",
            ]
        );
    }

    #[test]
    fn a_node_reached_twice_is_shown_once() {
        let mesh = Mesh::parse(
            "[[node]]\nname = \"a\"\nto = [\"b\", \"c\", \"ws://10.0.0.1:1\"]\n\
             [[node]]\nname = \"b\"\nport = 1\nto = [\"c\"]\n\
             [[node]]\nname = \"c\"\nsketch = \"buzzer\"\nport = 2\n",
            "mesh.toml",
        )
        .unwrap();
        assert_eq!(
            tree(&mesh),
            [
                "a (a) -> b, c, ws://10.0.0.1:1",
                "  b (b) ws://127.0.0.1:1 -> c",
                "    c (buzzer) ws://127.0.0.1:2",
            ]
        );
    }
}
