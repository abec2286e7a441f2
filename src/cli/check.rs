//! `arduino check`: the mesh file checked as startup checks it (every node set up through the
//! registry), then its nodes, addresses and links printed as a tree: the copies of an entry
//! with `expand` on one line, unless `--all` asks for every node.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
};

use anyhow::bail;
use clap::Args;

use super::{MeshArg, Verbosity, env_secret, plural, print};
use crate::{Mesh, NodeDef, Registry};

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    #[command(flatten)]
    pub(super) mesh: MeshArg,
    /// Print every node, rather than one line for all the copies of an entry with `expand`.
    #[arg(short, long)]
    pub(super) all: bool,
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
    let listens = |node: &NodeDef| registry.get(node.sketch()).is_ok_and(|entry| entry.listens);
    for line in Tree::new(&mesh, args.all).lines(&listens) {
        print(&mut out, line)?;
    }
    Ok(())
}

/// What one line of the tree shows: one node, or every copy of an entry with `expand`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Item {
    /// The node at this index.
    Node(usize),
    /// The copies at these indices: `first..end`.
    Copies(usize, usize),
}

/// The mesh as a tree: each item under the first item that streams to it, indented.
struct Tree<'a> {
    mesh: &'a Mesh,
    /// Nodes by name.
    index: HashMap<&'a str, usize>,
    /// One per node: the item it is shown in.
    items: Vec<Item>,
}

impl<'a> Tree<'a> {
    /// The tree of `mesh`; with `all`, one item per node.
    fn new(mesh: &'a Mesh, all: bool) -> Self {
        let index = mesh
            .nodes
            .iter()
            .enumerate()
            .map(|(at, node)| (node.name.as_str(), at))
            .collect();
        let mut items = Vec::with_capacity(mesh.nodes.len());
        let mut at = 0;
        while at < mesh.nodes.len() {
            let end = if all { at + 1 } else { copies_from(mesh, at) };
            let item = if end - at > 1 || mesh.nodes[at].copy_of.is_some() && !all {
                Item::Copies(at, end)
            } else {
                Item::Node(at)
            };
            items.extend(std::iter::repeat_n(item, end - at));
            at = end;
        }
        Self { mesh, index, items }
    }

    /// One line per item, each under the first item that streams to it, then a line naming
    /// the nodes that take messages but have no port, if any.
    fn lines(&self, listens: &dyn Fn(&NodeDef) -> bool) -> Vec<String> {
        let mut streamed_to = HashSet::new();
        for (at, item) in self.items.iter().enumerate() {
            for peer in self.peers(at) {
                if self.items[peer] != *item {
                    streamed_to.insert(self.items[peer]);
                }
            }
        }
        let mut order: Vec<Item> = self.items.clone();
        order.dedup();
        let mut shown = HashSet::new();
        let mut lines = Vec::new();
        let roots = order.iter().filter(|item| !streamed_to.contains(*item));
        // A mesh is free of cycles once checked; the second pass is for any item the first
        // missed.
        for &item in roots.chain(&order) {
            self.branch(item, 0, &mut shown, &mut lines);
        }
        let portless: Vec<String> = order
            .iter()
            .filter(|&&item| {
                self.members(item)
                    .all(|at| self.mesh.nodes[at].port.is_none() && listens(&self.mesh.nodes[at]))
            })
            .map(|&item| self.name(item))
            .collect();
        if !portless.is_empty() {
            const SHOWN: usize = 8;
            let mut names = portless[..portless.len().min(SHOWN)].join(", ");
            if portless.len() > SHOWN {
                let _ = write!(names, " and {} more", portless.len() - SHOWN);
            }
            lines.push(format!(
                "no port, so reached only by the nodes of their own `arduino up`: {names}"
            ));
        }
        lines
    }

    fn branch(&self, item: Item, depth: usize, shown: &mut HashSet<Item>, lines: &mut Vec<String>) {
        if !shown.insert(item) {
            return;
        }
        lines.push(format!(
            "{:indent$}{}",
            "",
            self.line(item),
            indent = depth * 2
        ));
        let mut children = Vec::new();
        let mut seen = HashSet::new();
        for at in self.members(item) {
            for peer in self.peers(at) {
                let child = self.items[peer];
                if child != item && seen.insert(child) {
                    children.push(child);
                }
            }
        }
        for child in children {
            self.branch(child, depth + 1, shown, lines);
        }
    }

    /// `name (sketch) ws://host:port -> peer, peer`, or for copies
    /// `name-1 ... name-N (N sketch nodes, from "name") ws://... ... ws://... -> peer-{i}`.
    fn line(&self, item: Item) -> String {
        let nodes = &self.mesh.nodes;
        match item {
            Item::Node(at) => {
                let node = &nodes[at];
                let mut line = format!("{} ({})", node.name, node.sketch());
                if let Some(url) = self.mesh.url(node) {
                    let _ = write!(line, " {url}");
                }
                let peers = self.peer_words(at, false);
                if !peers.is_empty() {
                    let _ = write!(line, " -> {}", peers.join(", "));
                }
                line
            }
            Item::Copies(first, end) => {
                let node = &nodes[first];
                let entry = node.copy_of.as_ref().map_or("", |of| &of.entry);
                let what = format!("{} node", node.sketch());
                let mut line = format!(
                    "{} ({}, from {entry:?})",
                    self.name(item),
                    plural((end - first) as u64, &what)
                );
                let with_port = (first..end).filter(|&at| nodes[at].port.is_some()).count();
                match (self.mesh.url(&nodes[first]), self.mesh.url(&nodes[end - 1])) {
                    (Some(one), _) if end - first == 1 => {
                        let _ = write!(line, " {one}");
                    }
                    (Some(first_url), Some(last_url)) if with_port == end - first => {
                        let _ = write!(line, " {first_url} ... {last_url}");
                    }
                    _ if with_port > 0 => {
                        let _ = write!(line, " ({with_port} with a port)");
                    }
                    _ => {}
                }
                let peers = self.peer_words(first, true);
                let same = (first + 1..end).all(|at| self.peer_words(at, true) == peers);
                if !same {
                    line.push_str(" -> peers differ from copy to copy (--all shows them)");
                } else if !peers.is_empty() {
                    let _ = write!(line, " -> {}", peers.join(", "));
                }
                line
            }
        }
    }

    /// The peers of node `at` in words: all the copies of an entry, in order, as
    /// `name-1 ... name-N`; and, with `numbered` (for a copy), a copy with the same number as
    /// node `at` as `name-{i}`.
    fn peer_words(&self, at: usize, numbered: bool) -> Vec<String> {
        let node = &self.mesh.nodes[at];
        let number = node
            .copy_of
            .as_ref()
            .filter(|_| numbered)
            .map(|of| of.index);
        let mut words = Vec::with_capacity(node.to.len());
        let mut next = 0;
        while let Some(peer) = node.to.get(next) {
            let target = self.index.get(peer.as_str()).copied();
            let copies = target.map(|target| self.items[target]);
            if let Some(Item::Copies(first, end)) = copies
                && target == Some(first)
                && end - first > 1
                && node.to.len() >= next + end - first
                && (first..end)
                    .zip(&node.to[next..])
                    .all(|(at, name)| self.mesh.nodes[at].name == *name)
            {
                words.push(self.name(Item::Copies(first, end)));
                next += end - first;
                continue;
            }
            let of = target.and_then(|target| self.mesh.nodes[target].copy_of.as_ref());
            match (of, number) {
                (Some(of), Some(number)) if of.index == number => {
                    words.push(format!("{}-{{i}}", of.entry));
                }
                _ => words.push(peer.clone()),
            }
            next += 1;
        }
        words
    }

    /// The item's name: the node's, or `name-1 ... name-N`.
    fn name(&self, item: Item) -> String {
        let nodes = &self.mesh.nodes;
        match item {
            Item::Node(at) => nodes[at].name.clone(),
            Item::Copies(first, end) if end - first == 1 => nodes[first].name.clone(),
            Item::Copies(first, end) => {
                format!("{} ... {}", nodes[first].name, nodes[end - 1].name)
            }
        }
    }

    /// The nodes an item shows.
    fn members(&self, item: Item) -> std::ops::Range<usize> {
        match item {
            Item::Node(at) => at..at + 1,
            Item::Copies(first, end) => first..end,
        }
    }

    /// The indices of the nodes of the mesh that node `at` streams to.
    fn peers(&self, at: usize) -> impl Iterator<Item = usize> + '_ {
        self.mesh.nodes[at]
            .to
            .iter()
            .filter_map(|peer| self.index.get(peer.as_str()).copied())
    }
}

/// The end of the run of copies of one entry that starts at node `at`, in order from copy 1
/// (`at + 1` when node `at` starts no such run).
fn copies_from(mesh: &Mesh, at: usize) -> usize {
    let Some(of) = mesh.nodes[at].copy_of.as_ref().filter(|of| of.index == 1) else {
        return at + 1;
    };
    let mut end = at + 1;
    while let Some(next) = mesh.nodes.get(end).and_then(|node| node.copy_of.as_ref())
        && next.entry == of.entry
        && next.index as usize == end - at + 1
    {
        end += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(mesh: &Mesh) -> Vec<String> {
        Tree::new(mesh, true).lines(&|_| false)
    }

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
        let listens = |node: &NodeDef| node.sketch() != "clock";
        assert_eq!(Tree::new(&mesh, false).lines(&listens), tree(&mesh));
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

    const MANY: &str = r#"
        [[node]]
        name = "sensor"
        sketch = "iopin"
        expand = 1000
        to = ["hub"]
        [[node]]
        name = "hub"
        sketch = "buzzer"
        port = 9000
        [[node]]
        name = "tick"
        sketch = "clock"
        expand = 3
        to = ["pin-{i}"]
        [[node]]
        name = "pin"
        sketch = "iopin"
        expand = 3
        to = ["bell-{i}", "hub"]
        [[node]]
        name = "bell"
        sketch = "buzzer"
        expand = 3
        port = 20000
        [[node]]
        name = "watcher"
        sketch = "iopin"
        to = ["bell", "hub"]
        [[node]]
        name = "one"
        sketch = "buzzer"
        expand = 1
    "#;

    /// The copies of an entry take one line, their addresses and peers summed up; the nodes
    /// without a port that take messages are named.
    #[test]
    fn the_copies_of_an_entry_take_one_line() {
        let mesh = Mesh::parse(MANY, "mesh.toml").unwrap();
        let listens = |node: &NodeDef| node.sketch() != "clock";
        assert_eq!(
            Tree::new(&mesh, false).lines(&listens),
            [
                "sensor-1 ... sensor-1000 (1000 iopin nodes, from \"sensor\") -> hub",
                "  hub (buzzer) ws://127.0.0.1:9000",
                "tick-1 ... tick-3 (3 clock nodes, from \"tick\") -> pin-{i}",
                "  pin-1 ... pin-3 (3 iopin nodes, from \"pin\") -> bell-{i}, hub",
                "    bell-1 ... bell-3 (3 buzzer nodes, from \"bell\") ws://127.0.0.1:20000 ... \
                 ws://127.0.0.1:20002",
                "watcher (iopin) -> bell-1 ... bell-3, hub",
                "one-1 (1 buzzer node, from \"one\")",
                "no port, so reached only by the nodes of their own `arduino up`: sensor-1 ... \
                 sensor-1000, pin-1 ... pin-3, watcher, one-1",
            ]
        );
        let all = Tree::new(&mesh, true).lines(&listens);
        assert_eq!(all.len(), 1000 + 1 + 3 * 3 + 1 + 1 + 1);
        assert_eq!(all[0], "sensor-1 (iopin) -> hub");
        assert_eq!(all[1], "  hub (buzzer) ws://127.0.0.1:9000");
        assert!(all.contains(&"  pin-2 (iopin) -> bell-2, hub".to_owned()));
        assert!(all.contains(&"watcher (iopin) -> bell-1, bell-2, bell-3, hub".to_owned()));
        let last = all.last().unwrap();
        assert!(last.ends_with("sensor-7, sensor-8 and 997 more"), "{last}");
    }

    /// Copies whose peers cannot be said as one pattern are not summed up wrongly.
    #[test]
    fn copies_with_peers_of_no_pattern_say_so() {
        let mut mesh = Mesh::parse(
            "[[node]]\nname = \"b\"\nport = 1\n[[node]]\nname = \"c\"\nport = 2\n\
             [[node]]\nname = \"a\"\nexpand = 2\nto = [\"b\"]\n",
            "mesh.toml",
        )
        .unwrap();
        mesh.nodes[3].to = vec!["c".to_owned()];
        assert_eq!(
            Tree::new(&mesh, false).lines(&|_| true)[0],
            "a-1 ... a-2 (2 a nodes, from \"a\") -> peers differ from copy to copy (--all shows \
             them)"
        );
    }
}
