//! `arduino up`: every node of the mesh in one process. All are set up and bound before any
//! starts; the mesh stops when its clocks are done, or on SIGINT/SIGTERM.

use std::{collections::HashMap, sync::Arc};

use anyhow::bail;
use clap::Args;
use tokio::{
    task::{self, JoinSet},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    MeshArg, STOP_GRACE, Verbosity, bind, env_secret, plural, shutdown_signal, summarize, view,
};
use crate::{Directory, Events, Limits, Mesh, Registry, Report, observe::feed::Feed};

#[derive(Debug, Args)]
pub(super) struct UpArgs {
    #[command(flatten)]
    pub(super) mesh: MeshArg,
    /// Also serve a live picture of the mesh to a browser, on ADDR [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::view::DEFAULT_ADDR)]
    pub(super) view: Option<String>,
    /// How many threads run the nodes [default: one per core]. Each node runs on one thread
    /// at a time.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(super) threads: Option<u16>,
    #[command(flatten)]
    pub(super) verbosity: Verbosity,
}

impl UpArgs {
    /// The threads to run on: as asked, else one per core.
    pub(super) fn threads(&self) -> usize {
        match self.threads {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

pub(super) async fn run(registry: &Registry, args: &UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (path, _) = args.mesh.path();
    let mut mesh = Mesh::load(&path)?;
    let nats = crate::nats::apply_url(&mut mesh, std::env::var(crate::nats::URL_VAR).ok())?;
    if nats.is_none()
        && let Some(def) = mesh.nodes.iter().find(|def| def.replicas() > 1)
    {
        bail!(
            "{}: node {:?} has replicas = {}, which needs a NATS server: give the mesh a [nats] \
             table, or set {}",
            mesh.path,
            def.name,
            def.replicas(),
            crate::nats::URL_VAR
        );
    }
    if mesh.nodes.is_empty() {
        bail!("{}: the mesh has no nodes", mesh.path);
    }
    // Setting up every node checks the whole mesh; only then are ports bound.
    let secret = mesh.secret(env_secret()?);
    let many = mesh.nodes.len() > SHOWN;
    // A node with replicas runs as that many copies, `NAME#1` and on in logs and summaries,
    // each answering in the node's queue group.
    let copies = |def: &crate::NodeDef| {
        let count = def.replicas();
        (1..=count).map(move |copy| match count {
            1 => None,
            _ => Some(copy),
        })
    };
    // With the view, a node without a port is followed through a feed in this process.
    let mut feeds = Vec::new();
    let mut built = Vec::with_capacity(mesh.nodes.len());
    for def in &mesh.nodes {
        for copy in copies(def) {
            let label = match copy {
                Some(copy) => format!("{}#{copy}", def.name),
                None => def.name.clone(),
            };
            let mut events = match many {
                true => Events::new(&label).quiet(),
                false => Events::new(&label),
            };
            if args.view.is_some() && def.port.is_none() && copy.is_none() {
                let feed = Feed::new(&def.name, crate::observe::feed::CAPACITY);
                events = events.observe(Arc::new(feed.clone()));
                feeds.push(feed);
            }
            let node = registry.build(&mesh, def, secret.clone(), events)?;
            built.push((def, copy, label, node));
        }
    }
    // Every node that takes messages can be reached by the others without a socket; one with
    // a port can also be reached from outside. (Every sketch was found when it was built.)
    let takes = |def: &crate::NodeDef| registry.get(def.sketch()).is_ok_and(|entry| entry.listens);
    // A node with replicas is left out: its peers in the process reach it through NATS too,
    // so that its load spreads over its copies.
    let mut directory = Directory::new(
        mesh.nodes
            .iter()
            .filter(|def| takes(def) && def.replicas() == 1)
            .map(|def| {
                let limits = Limits {
                    max_connections: def.max_connections(),
                    max_message: def.max_message(),
                };
                (def.name.as_str(), limits)
            }),
        built.len(),
    );
    if let Some(url) = nats {
        let serving = mesh.nodes.iter().filter(|def| takes(def));
        directory = directory.over_nats(
            url,
            mesh.tls.clone(),
            serving.map(|def| def.name.clone()),
            mesh.nats.as_ref().is_none_or(|nats| nats.events),
        );
    }
    let mut nodes = Vec::new();
    for (def, copy, label, node) in built {
        // Only the first copy listens on the node's port: a port takes one listener.
        let listener = match def.port {
            Some(_) if takes(def) && copy.unwrap_or(1) == 1 => Some(bind(def).await?),
            _ => None,
        };
        nodes.push((def, label, node.in_process(directory.clone()), listener));
    }
    let portless = nodes.iter().filter(|(def, ..)| def.port.is_none()).count();
    // The view's port is bound with the nodes', before anything starts.
    let view = match &args.view {
        Some(addr) => Some(view::bind(Some(addr)).await?),
        None => None,
    };
    let stop = CancellationToken::new();
    let viewing = match view {
        Some(listener) => Some(view::serve(listener, mesh.clone(), feeds, stop.clone())?),
        None => None,
    };
    let shards = Shards::start(args.threads(), &mesh)?;
    info!(
        "{} on {}, {portless} without a port",
        plural(nodes.len() as u64, "node"),
        plural(shards.handles.len() as u64, "thread")
    );
    let mut running = Running::default();
    for (def, label, node, listener) in nodes {
        let clock = node.ticks().is_some_and(|t| t.count.is_some()) && !takes(def);
        running.spawn(
            &label,
            clock,
            arduino::run_until(node, listener, stop.clone()),
            shards.of(&def.name),
        );
    }
    let count = running.names.len();
    let all_serving = async {
        directory.all_serving().await;
        info!(
            "all {} serving, {:.2}s after start",
            plural(count as u64, "node"),
            started.elapsed().as_secs_f64()
        );
        std::future::pending::<()>().await;
    };
    let mut outcome = Outcome::of(count);
    let has_clocks = running.clocks > 0;
    tokio::select! {
        _ = shutdown_signal() => {}
        () = all_serving => {}
        _ = async {
            while running.clocks > 0 {
                let Some(ended) = running.next().await else { break };
                outcome.add(ended);
            }
        }, if has_clocks => {
            if viewing.is_some() {
                // Someone may be looking: the page stays until they are done with it.
                info!("the clocks are done; the view stays up until Ctrl-C");
                shutdown_signal().await;
            } else {
                info!("the clocks are done; stopping the mesh");
            }
        }
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
                let names = running.abandon();
                let shown = names.iter().take(3).map(|name| format!("{name:?}"));
                let shown = shown.collect::<Vec<_>>().join(", ");
                match names.len() {
                    0 => {}
                    1 => warn!("node {shown} did not stop within {STOP_GRACE:?}; leaving it"),
                    n if n <= 3 => {
                        warn!("nodes {shown} did not stop within {STOP_GRACE:?}; leaving them");
                    }
                    n => warn!(
                        "{n} nodes ({shown}, ...) did not stop within {STOP_GRACE:?}; leaving them"
                    ),
                }
                break;
            }
        }
    }
    if let Some(viewing) = viewing {
        match tokio::time::timeout_at(deadline, viewing).await {
            Ok(Ok(Err(error))) => warn!("{error:#}"),
            Ok(Err(error)) => warn!("the view server stopped abnormally: {error}"),
            Ok(Ok(Ok(()))) => {}
            Err(_) => warn!("the view server did not stop within {STOP_GRACE:?}; leaving it"),
        }
    }
    outcome.finish()
}

/// The threads `arduino up` runs its nodes on: this one, and one more runtime per extra
/// thread. The nodes linked to each other (a connected part of the mesh: a clock, its iopin
/// and its buzzer) share a thread, so that a message between them never crosses to another
/// core (a wake-up there costs more than the hop); the parts are dealt out to the threads,
/// the largest first, each to the thread with the fewest nodes so far. Each node runs on one
/// thread, as one task: its sketch never sees two messages at once.
struct Shards {
    /// This thread's runtime first, then one per extra thread.
    handles: Vec<tokio::runtime::Handle>,
    /// The thread of each node, by name.
    of: HashMap<String, usize>,
    /// Ends the extra threads' runtimes when dropped.
    _done: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Shards {
    /// Up to `threads` threads: no more than the mesh has parts to share out.
    fn start(threads: usize, mesh: &Mesh) -> anyhow::Result<Self> {
        let (of, parts) = deal(mesh, threads);
        let threads = threads.min(parts).max(1);
        let mut handles = vec![tokio::runtime::Handle::current()];
        let mut done = Vec::new();
        for n in 1..threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| anyhow::anyhow!("cannot start thread {n}'s runtime: {error}"))?;
            handles.push(runtime.handle().clone());
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            done.push(done_tx);
            std::thread::Builder::new()
                .name(format!("arduino-{n}"))
                .spawn(move || {
                    let _ = runtime.block_on(done_rx);
                    // The process is ending: its memory goes with it, at once.
                    std::mem::forget(runtime);
                })
                .map_err(|error| anyhow::anyhow!("cannot start thread {n}: {error}"))?;
        }
        Ok(Self {
            handles,
            of,
            _done: done,
        })
    }

    /// The runtime of the node called `name`.
    fn of(&self, name: &str) -> &tokio::runtime::Handle {
        let shard = self.of.get(name).copied().unwrap_or(0);
        &self.handles[shard.min(self.handles.len() - 1)]
    }
}

/// Deal the connected parts of `mesh` (nodes joined by `to`, either way) out to `shards`
/// threads, the largest part first, each to the thread with the fewest nodes so far; and how
/// many parts there are.
fn deal(mesh: &Mesh, shards: usize) -> (HashMap<String, usize>, usize) {
    let index: HashMap<&str, usize> = mesh
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (node.name.as_str(), i))
        .collect();
    let mut parent: Vec<usize> = (0..mesh.nodes.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (i, node) in mesh.nodes.iter().enumerate() {
        for peer in &node.to {
            if let Some(&j) = index.get(peer.as_str()) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a] = b;
            }
        }
    }
    let mut parts: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..mesh.nodes.len() {
        let r = root(&mut parent, i);
        parts.entry(r).or_default().push(i);
    }
    let mut parts: Vec<Vec<usize>> = parts.into_values().collect();
    let count = parts.len();
    parts.sort_by_key(|part| std::cmp::Reverse((part.len(), part[0])));
    let mut load = vec![0usize; shards.max(1)];
    let mut of = HashMap::with_capacity(mesh.nodes.len());
    for part in parts {
        let weight: usize = part.iter().map(|&i| mesh.nodes[i].replicas()).sum();
        let shard = (0..load.len()).min_by_key(|&s| (load[s], s)).unwrap_or(0);
        load[shard] += weight;
        for i in part {
            of.insert(mesh.nodes[i].name.clone(), shard);
        }
    }
    (of, count)
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
        on: &tokio::runtime::Handle,
    ) {
        let id = self.tasks.spawn_on(run, on).id();
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
                let why = crate::runtime::panic_message(error.into_panic().as_ref());
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

/// Up to this many nodes, `arduino up` says how each did; past it, it says how they did
/// together, and names only the nodes that failed something.
const SHOWN: usize = 64;

/// What the nodes of `arduino up` came to, gathered as each ends.
#[derive(Default)]
struct Outcome {
    undelivered: Option<arduino::Error>,
    abnormal: Vec<String>,
    /// Too many nodes to say how each did: their sum.
    together: Option<Report>,
    /// Nodes summed in `together`.
    nodes: u64,
}

impl Outcome {
    /// An outcome for `nodes` nodes: said together when there are too many to say one by one.
    fn of(nodes: usize) -> Self {
        Self {
            together: (nodes > SHOWN).then(Report::default),
            ..Self::default()
        }
    }

    fn add(&mut self, ended: Result<Report, String>) {
        match ended {
            Ok(report) => {
                let failed = report.ticks_failed > 0 || report.sent.failed > 0;
                let failure = match &mut self.together {
                    Some(sum) if !failed => {
                        add_up(sum, &report);
                        self.nodes += 1;
                        None
                    }
                    _ => summarize(&report),
                };
                self.undelivered = self.undelivered.take().or(failure);
            }
            Err(line) => self.abnormal.push(line),
        }
    }

    /// Say how the nodes summed together did, in one line.
    fn say_together(&self) {
        let Some(sum) = &self.together else { return };
        let sent = sum.sent;
        info!(
            "{} that failed nothing: handled {}, ran {}; sent {} to peers, {} acknowledged",
            plural(self.nodes, "node"),
            plural(sum.handled, "message"),
            plural(sum.ticks, "tick"),
            sent.sent,
            sent.acked
        );
    }

    /// Fail when a node ended abnormally, or a clock's tick was not delivered.
    fn finish(self) -> anyhow::Result<()> {
        self.say_together();
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

/// Add what `report` says to `sum`.
fn add_up(sum: &mut Report, report: &Report) {
    sum.handled += report.handled;
    sum.ticks += report.ticks;
    sum.ticks_failed += report.ticks_failed;
    sum.sent.sent += report.sent.sent;
    sum.sent.acked += report.sent.acked;
    sum.sent.failed += report.sent.failed;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linked nodes share a thread; parts are dealt out so that the threads carry about as many
    /// nodes each.
    #[test]
    fn linked_nodes_share_a_thread_and_threads_share_the_nodes() {
        let mut text = String::new();
        for i in 0..10 {
            text.push_str(&format!(
                "[[node]]\nname = \"c{i}\"\nsketch = \"clock\"\nto = [\"p{i}\"]\n\
                 [[node]]\nname = \"p{i}\"\nsketch = \"iopin\"\nto = [\"b{i}\"]\n\
                 [[node]]\nname = \"b{i}\"\nsketch = \"buzzer\"\n"
            ));
        }
        // A hub and its ten senders: one part.
        text.push_str("[[node]]\nname = \"hub\"\nsketch = \"buzzer\"\n");
        for i in 0..10 {
            text.push_str(&format!(
                "[[node]]\nname = \"s{i}\"\nsketch = \"iopin\"\nto = [\"hub\"]\n"
            ));
        }
        let mesh = Mesh::parse(&text, "mesh.toml").unwrap();
        let (of, parts) = deal(&mesh, 2);
        assert_eq!(parts, 11);
        for i in 0..10 {
            assert_eq!(of[&format!("c{i}")], of[&format!("p{i}")]);
            assert_eq!(of[&format!("p{i}")], of[&format!("b{i}")]);
            assert_eq!(of[&format!("s{i}")], of["hub"]);
        }
        let on_first = of.values().filter(|&&shard| shard == 0).count();
        assert!(
            (20..=21).contains(&on_first),
            "{on_first} of 41 on the first thread"
        );
        assert!(deal(&mesh, 1).0.values().all(|&shard| shard == 0));
    }

    /// A node task of `up` that panics is reported by name, and fails the run; the others'
    /// reports still come in.
    #[tokio::test]
    async fn a_node_task_that_panics_is_named_and_fails_up() {
        let mut running = Running::default();
        let here = tokio::runtime::Handle::current();
        running.spawn(
            "steady",
            false,
            async {
                Report {
                    node: "steady".into(),
                    ..Report::default()
                }
            },
            &here,
        );
        running.spawn(
            "fragile",
            true,
            async { panic!("a bug in the runtime") },
            &here,
        );
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
}
