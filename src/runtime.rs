//! Hosting a sketch: the accept loop, websocket handshakes, and the node task that owns the
//! sketch, its inbound connections and its peer links. The public surface is [`run`].
//!
//! One task per node does all the per-message work: it reads a message from whichever
//! connection is ready, runs the sketch's loop, and writes the acknowledgement back on the
//! same connection, with no lock, no channel hop and no allocation in between, and without
//! ever waiting on one client's socket (see the `inbound` module). Only handshakes, which may
//! be slow or hostile, and answers to refused clients run in tasks of their own.

use std::{
    future::Future,
    net::SocketAddr,
    panic::AssertUnwindSafe,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Poll, Wake, Waker},
    time::Duration,
};

use futures_util::FutureExt;
use futures_util::task::AtomicWaker;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{Semaphore, mpsc},
    time::{Instant, MissedTickBehavior, interval, interval_at, timeout, timeout_at},
};
use tokio_tungstenite::{
    accept_hdr_async_with_config,
    tungstenite::{
        handshake::server::{ErrorResponse, Request, Response},
        http::{StatusCode, header::AUTHORIZATION},
        protocol::Role,
    },
};
use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::TaskTracker,
};
use tracing::{Instrument, info, warn};

use crate::{
    client::{self, Ws, ws_config},
    error::Result,
    events::{Client, Event, Events},
    inbound::{Inbound, Work},
    link::{LinkOptions, Links, Peer, SendStats},
    message::{Ack, Input},
    observe::{HttpOptions, Route, Watch, route},
    shape::{Shape, node::Shaper},
    sketch::{Context, Sketch, Ticks},
    tls::{Stream, Tls, describe_accept},
    wire::{Accepted, Directory, Door, Origin},
};

/// How long a client has to complete its websocket handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// The answer to an HTTP request that is not a websocket handshake.
const NOT_WEBSOCKET: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
    Content-Length: 57\r\nConnection: close\r\n\r\n\
    this is an arduino node: connect with a websocket client\n";
/// How long the message in hand may take to finish once the node is asked to stop.
pub(crate) const STOP_GRACE: Duration = Duration::from_millis(300);
/// The answer to a client over the node's connection limit.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
    Content-Length: 21\r\nRetry-After: 1\r\nConnection: close\r\n\r\n\
    too many connections\n";
/// How many refused clients are told why at once; more are just closed. Each is told within
/// `REFUSAL_DEADLINE`.
const REFUSALS: usize = 64;
const REFUSAL_DEADLINE: Duration = Duration::from_secs(1);
/// Longer than any node runs: durations are cut to this, so that deadline arithmetic stays
/// in range whatever a [`NodeSpec`] holds.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Everything a node needs besides its sketch: who it is, who its peers are, and its limits.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The node's name in the mesh.
    pub name: String,
    /// The peers its sketch streams to, in order.
    pub peers: Vec<Peer>,
    /// How long a peer has to acknowledge a message (and, for half of it, to come back up once
    /// it has been up: a peer never up is waited for).
    pub timeout: Duration,
    /// How long a client may leave an acknowledgement unread before it is dropped.
    pub write_timeout: Duration,
    /// The largest message accepted, in bytes; larger ones close the connection with 1009.
    pub max_message: usize,
    /// How many clients may be connected at once; more are refused.
    pub max_connections: usize,
    /// The mesh's shared secret, if any.
    pub secret: Option<String>,
    /// The mesh's TLS, if any: the node serves `wss://`, and its links trust the mesh's CA.
    pub tls: Option<Tls>,
    /// Seed for the sketch's randomness (and the link backoff jitter).
    pub seed: u64,
    /// Where the node's events go.
    pub events: Events,
    /// The nodes of this process that are reached without a socket, this one among them when
    /// it is in it (as every node of `arduino up` is); empty for a node on its own.
    pub directory: Directory,
}

/// What a node did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The node's name.
    pub node: String,
    /// Messages received and acknowledged.
    pub handled: u64,
    /// Timer ticks run.
    pub ticks: u64,
    /// Timer ticks whose acknowledgement was an error.
    pub ticks_failed: u64,
    /// What the node sent to its peers.
    pub sent: SendStats,
}

/// A sketch, set up and ready to run as a node. Made by [`crate::sketches::Registry::build`].
pub struct Node {
    pub(crate) spec: NodeSpec,
    pub(crate) launch: Box<dyn Launch>,
}

impl Node {
    /// Set up `sketch` as a node described by `spec`.
    pub fn new<S: Sketch>(sketch: S, ticks: Option<Ticks>, spec: NodeSpec) -> Self {
        Self {
            spec,
            launch: Box::new(Ready {
                sketch,
                ticks,
                shape: None,
            }),
        }
    }

    /// Put the node's input through `shape` (its `[node.input]`) before its sketch.
    ///
    /// # Errors
    ///
    /// A sentence to follow `input.every` when the shape has `every` and the sketch has a
    /// timer of its own: the two would run its loop on two paces.
    pub fn shaped(mut self, shape: Shape) -> std::result::Result<Self, String> {
        if shape.every.is_some() && self.launch.ticks().is_some() {
            return Err(
                "`input.every` cannot be given: the sketch runs on a timer of its own".to_owned(),
            );
        }
        self.launch.shape(shape);
        Ok(self)
    }

    /// Make the node one of the nodes of `directory`'s process: it reaches its peers there
    /// without a socket, and they reach it the same way when it is among them.
    pub fn in_process(mut self, directory: Directory) -> Self {
        self.spec.directory = directory;
        self
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Whether the node has a timer that ends (a clock): the node is done after its last tick.
    pub fn ticks(&self) -> Option<Ticks> {
        self.launch.ticks()
    }
}

/// A set-up sketch with its type erased, so that a registry can hold any sketch. Calling it
/// costs one allocation per node, not per message: inside, the node is monomorphic.
pub(crate) trait Launch: Send {
    fn ticks(&self) -> Option<Ticks>;
    fn shape(&mut self, shape: Shape);
    fn launch(
        self: Box<Self>,
        spec: NodeSpec,
        listener: Option<TcpListener>,
        stop: CancellationToken,
    ) -> std::pin::Pin<Box<dyn Future<Output = Report> + Send>>;
}

struct Ready<S> {
    sketch: S,
    ticks: Option<Ticks>,
    shape: Option<Shape>,
}

impl<S: Sketch> Launch for Ready<S> {
    fn ticks(&self) -> Option<Ticks> {
        self.ticks
    }

    fn shape(&mut self, shape: Shape) {
        self.shape = Some(shape);
    }

    fn launch(
        self: Box<Self>,
        spec: NodeSpec,
        listener: Option<TcpListener>,
        stop: CancellationToken,
    ) -> std::pin::Pin<Box<dyn Future<Output = Report> + Send>> {
        Box::pin(serve(
            self.sketch,
            self.ticks,
            self.shape,
            spec,
            listener,
            stop,
        ))
    }
}

/// Run `node` until its work is done (a clock after its last tick) or `shutdown` completes,
/// serving connections on `listener` if it has one. Returns what the node did.
///
/// # Errors
///
/// None so far: failures of single connections and messages are logged, counted in the
/// [`Report`], and never stop the node.
pub async fn run(
    node: Node,
    listener: Option<TcpListener>,
    shutdown: impl Future,
) -> Result<Report> {
    let stop = CancellationToken::new();
    let mut served = pin!(run_until(node, listener, stop.clone()));
    tokio::select! {
        report = &mut served => Ok(report),
        _ = shutdown => {
            stop.cancel();
            Ok(served.await)
        }
    }
}

/// Run a node that stops when `stop` is cancelled: for hosting many nodes under one signal.
pub async fn run_until(
    node: Node,
    listener: Option<TcpListener>,
    stop: CancellationToken,
) -> Report {
    // Named as its events are: a copy of a node with replicas is `NAME#N`.
    let span = node_span(node.spec.events.node());
    node.launch
        .launch(node.spec, listener, stop)
        .instrument(span)
        .await
}

/// The span every line a node logs is in. At error level so that it exists whatever the log
/// filter: a filter that keeps only warnings must not lose the node's name from them.
pub fn node_span(name: &str) -> tracing::Span {
    tracing::error_span!("node", node = %name)
}

/// The node task.
async fn serve<S: Sketch>(
    mut sketch: S,
    ticks: Option<Ticks>,
    shape: Option<Shape>,
    spec: NodeSpec,
    listener: Option<TcpListener>,
    stop: CancellationToken,
) -> Report {
    // A node with a listener answers `GET /events` and `GET /metrics` on it: it is watched
    // from before its first event, and everything that emits events below reports to it.
    let watch = listener.is_some().then(|| {
        Watch::new(
            &spec.name,
            spec.peers.iter().map(|peer| peer.name.as_str()),
            spec.secret.as_deref(),
        )
        .with_options(HttpOptions {
            head_deadline: HANDSHAKE_DEADLINE,
            ..HttpOptions::default()
        })
    });
    let events = match &watch {
        Some(watch) => spec.events.clone().observe(Arc::new(watch.clone())),
        None => spec.events.clone(),
    };
    let mut report = Report {
        node: spec.events.node().to_owned(),
        ..Report::default()
    };
    // Whatever the spec says, deadlines must stay representable.
    let peer_timeout = spec.timeout.min(FOREVER);
    let write_timeout = spec.write_timeout.min(FOREVER);
    // Through NATS, each node has a client of its own, named after it.
    let (nats, serves_nats) = crate::nats::node_client(&spec.directory, &spec.name, &spec.peers);
    let events = match spec.directory.nats() {
        Some(mesh) if mesh.events => {
            crate::nats::events::publish(events, nats.as_ref(), &spec.name)
        }
        _ => events,
    };
    let options = LinkOptions {
        timeout: peer_timeout,
        secret: spec.secret.as_deref().map(Arc::from),
        tls: spec.tls.clone(),
        max_message: spec.max_message,
        seed: spec.seed,
        nats: nats.clone(),
    };
    let mut ctx = Context {
        links: Links::new(events.clone(), spec.peers.clone(), options, &spec.directory),
    };
    let tasks = TaskTracker::new();
    // The node's own tasks stop with it, and also when it is done on its own (a clock after
    // its last tick), which must not stop the other nodes sharing `stop`.
    let done = stop.child_token();
    // Connections come through the node's door: from its accept loop, and straight from the
    // nodes of its process when it is in a directory.
    let in_directory = spec
        .directory
        .door(&spec.name)
        .and_then(|door| Some((door.take()?, door)));
    let in_process = in_directory.is_some();
    let (mut accepted_rx, door) = in_directory.unwrap_or_else(|| {
        let door = Arc::new(Door::new(spec.max_connections, spec.max_message));
        (door.take().unwrap_or_else(|| mpsc::channel(1).1), door)
    });
    let listening = listener.is_some() || in_process || serves_nats;
    if let Some(client) = nats.filter(|_| serves_nats) {
        let serving =
            crate::nats::serve::serve(client, spec.name.clone(), door.clone(), done.clone());
        tasks.spawn(serving.in_current_span());
    }
    if let (Some(listener), Some(watch)) = (listener, watch) {
        if let Ok(addr) = listener.local_addr() {
            events.emit(Event::Listening { addr });
        }
        let handshake = Arc::new(Handshake {
            secret: spec.secret.clone(),
            tls: spec.tls.clone(),
            max_message: spec.max_message,
            events: events.clone(),
            watch,
        });
        tasks.spawn(
            accept_loop(
                listener,
                door.tx.clone(),
                handshake,
                door.limit.clone(),
                tasks.clone(),
                done.clone(),
            )
            .in_current_span(),
        );
    }
    drop(door);

    let mut inbound = Inbound::new(write_timeout, events.clone());
    if let Some(policy) = shape.as_ref().and_then(|shape| shape.policy.as_ref()) {
        inbound.shape(Shaper::new::<S>(policy));
    }
    // `every`: the loop also runs on a timer (the sketch has none of its own: see
    // `Node::shaped`).
    let ticks = ticks.or_else(|| {
        let period = shape.as_ref()?.every?;
        Some(Ticks {
            period,
            count: None,
        })
    });
    let mut ticker = ticks.map(|t| {
        let mut ticker = interval(t.period.clamp(Duration::from_micros(1), FOREVER));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker
    });
    let tick_limit = ticks.and_then(|t| t.count);
    if tick_limit == Some(0) && !listening {
        ticker = None;
    }
    if ticker.is_none() && !listening {
        info!("nothing to do: no listener and no timer");
    }
    let every = peer_timeout.max(Duration::from_millis(1));
    let mut keepalive = interval_at(Instant::now() + every, every);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Only websocket links need pings: a node whose peers are all in its process has none.
    let has_peers = ctx.links.needs_keepalive();
    // Checked once per message, and waited on while the sketch waits: the token's own check
    // and wait take locks that every node sharing it (all of `arduino up`) would contend for.
    let halt = Halt::new(&stop).await;
    let mut stopped = pin!(halt.wait());
    spec.directory.serving();

    while !halt.is_set() && (listening || ticker.is_some()) {
        // Biased towards work: the stop branch is polled only when nothing is ready, which
        // keeps it off the per-message path; `is_cancelled` above catches a stop under load.
        tokio::select! {
            biased;
            Some(work) = inbound.next() => match work {
                Work::Ready(slot) => {
                    inbound
                        .serve(slot, &mut sketch, &mut ctx, &mut report, &halt, stopped.as_mut())
                        .await;
                }
                Work::Sweep => inbound.sweep(),
                // Boxed, as the rare paths below: a node's future is its memory while idle.
                Work::Released(released) => {
                    Box::pin(inbound.release(
                        released,
                        &mut sketch,
                        &mut ctx,
                        &mut report,
                        stopped.as_mut(),
                    ))
                    .await;
                }
            },
            Some(accepted) = accepted_rx.recv() => inbound.add(*accepted),
            // A tick due as the node is asked to stop is not started.
            _ = tick(&mut ticker), if !halt.is_set() => {
                let n = report.ticks;
                report.ticks += 1;
                // Debounced or sampled with the messages: the operator runs it when its turn comes.
                if inbound.offer_tick(n) {
                    if tick_limit.is_some_and(|limit| report.ticks >= limit) {
                        ticker = None;
                    }
                    continue;
                }
                let ack = run_loop(&mut sketch, &mut ctx, Input::Tick(n), stopped.as_mut()).await;
                match ack.error_reason() {
                    // Asked to stop mid-tick: the tick is abandoned, not failed (a node asked
                    // to stop exits 0), and it is not counted as run.
                    Some(reason) if halt.is_set() => {
                        report.ticks -= 1;
                        info!(tick = n, "tick {n} abandoned: {reason}");
                    }
                    Some(reason) => {
                        report.ticks_failed += 1;
                        warn!(tick = n, "tick {n} failed: {reason}");
                    }
                    None => {}
                }
                if tick_limit.is_some_and(|limit| report.ticks >= limit) {
                    ticker = None;
                }
            }
            _ = keepalive.tick(), if has_peers => ctx.links.keepalive(),
            _ = &mut stopped => {}
        }
    }

    if halt.is_set() {
        events.emit(Event::Stopping);
    }
    // Stop accepting, then say goodbye to everyone.
    tasks.close();
    done.cancel();
    Box::pin(inbound.close_all(&mut report)).await;
    Box::pin(ctx.links.close_all()).await;
    if timeout(Duration::from_millis(500), tasks.wait())
        .await
        .is_err()
    {
        warn!("some handshakes did not finish in time");
    }
    report.sent = ctx.links.stats;
    report
}

/// Whether the node was asked to stop, as a flag read without a lock: set by a wake-up from the
/// stop token's own future, registered once when the node starts.
pub(crate) struct Halt {
    wake: Arc<HaltWake>,
    /// Registered with the token; woken (into `wake`) when it is cancelled.
    _waiting: Pin<Box<WaitForCancellationFutureOwned>>,
}

struct HaltWake {
    set: AtomicBool,
    /// The node task, to wake when the flag is set.
    task: AtomicWaker,
}

impl Wake for HaltWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.set.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Halt {
    /// The flag of `stop`, for the task that awaits this.
    async fn new(stop: &CancellationToken) -> Self {
        let wake = Arc::new(HaltWake {
            set: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        std::future::poll_fn(|cx| {
            wake.task.register(cx.waker());
            Poll::Ready(())
        })
        .await;
        let mut waiting = Box::pin(stop.clone().cancelled_owned());
        let waker = Waker::from(wake.clone());
        if waiting
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
            .is_ready()
        {
            wake.set.store(true, Ordering::Release);
        }
        Self {
            wake,
            _waiting: waiting,
        }
    }

    /// Whether the node was asked to stop.
    pub(crate) fn is_set(&self) -> bool {
        self.wake.set.load(Ordering::Acquire)
    }

    /// Completes once the node is asked to stop.
    pub(crate) fn wait(&self) -> HaltWait<'_> {
        HaltWait(self)
    }
}

/// The next tick of the sketch's timer, or never.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Run the sketch's loop on one input: a panic becomes an `error: ` ack (logged once), and a
/// stop request gives the message in hand a short grace before it is failed.
pub(crate) async fn run_loop<S: Sketch>(
    sketch: &mut S,
    ctx: &mut Context,
    input: Input<'_>,
    stopped: Stopped<'_, '_>,
) -> Ack {
    guarded(sketch.loop_once(ctx, input), stopped)
        .await
        .unwrap_or_else(|panic| {
            // The panic hook has logged it already (with where it happened): only answer.
            tracing::debug!("the sketch panicked on {input:?}");
            Ack::error(format_args!(
                "the sketch panicked: {}",
                panic_message(panic.as_ref())
            ))
        })
}

/// The node's stop, as the sketch's hooks are run under it.
pub(crate) type Stopped<'a, 'b> = Pin<&'a mut HaltWait<'b>>;

/// Completes once the node is asked to stop: a read of the node's flag, so that waiting on it
/// per message touches nothing another node shares.
pub(crate) struct HaltWait<'a>(&'a Halt);

impl Future for HaltWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.0.is_set() {
            return Poll::Ready(());
        }
        // The flag's wake-up wakes whoever waits last; the same task, nearly always, so this
        // is a comparison, not a clone.
        self.0.wake.task.register(cx.waker());
        match self.0.is_set() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }
}

/// Run one of the sketch's hooks: to its ack, or to its panic; once the node is asked to
/// stop, for a short grace at most, after which it is answered `error: the node is stopping`.
pub(crate) async fn guarded(
    hook: impl Future<Output = Ack>,
    mut stopped: Stopped<'_, '_>,
) -> Result<Ack, Box<dyn std::any::Any + Send>> {
    let mut handled = pin!(AssertUnwindSafe(hook).catch_unwind());
    tokio::select! {
        biased;
        outcome = &mut handled => outcome,
        _ = &mut stopped => match timeout(STOP_GRACE, &mut handled).await {
            Ok(outcome) => outcome,
            Err(_) => Ok(Ack::error("the node is stopping")),
        },
    }
}

/// What a panic said, when it said it with a string.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

struct Handshake {
    secret: Option<String>,
    /// With TLS, every connection starts with a TLS handshake, within the handshake deadline.
    tls: Option<Tls>,
    max_message: usize,
    events: Events,
    watch: Watch,
}

async fn accept_loop(
    listener: TcpListener,
    accepted: mpsc::Sender<Box<Accepted>>,
    handshake: Arc<Handshake>,
    limit: Arc<Semaphore>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    if handshake.tls.is_some()
        && let Ok(addr) = listener.local_addr()
    {
        info!("TLS on: clients reach this node at wss://{addr} (and https://{addr}/metrics)");
    }
    let refusals = Arc::new(Semaphore::new(REFUSALS));
    loop {
        let (stream, client) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            handshake.events.emit(Event::ClientRefused {
                client: Client::Addr(client),
                reason: "too many connections",
            });
            // Told why in a task of its own, so that the accept loop never waits; when too
            // many are being told already, this one is just closed.
            if let Ok(refusing) = refusals.clone().try_acquire_owned() {
                let stop = stop.clone();
                let tls = handshake.tls.clone();
                tasks.spawn(
                    async move {
                        let refused = async {
                            let mut stream = match &tls {
                                None => Stream::Plain(stream),
                                Some(tls) => tls.accept(stream).await?,
                            };
                            refuse(&mut stream).await
                        };
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = timeout(REFUSAL_DEADLINE, refused) => {}
                        }
                        drop(refusing);
                    }
                    .in_current_span(),
                );
            }
            continue;
        };
        let handshake = handshake.clone();
        let accepted_tx = accepted.clone();
        let stop = stop.clone();
        // A client reading `/events` keeps its permit for as long as it listens: listeners
        // count against the connection limit like any other client.
        tasks.spawn(
            async move {
                let deadline = Instant::now() + HANDSHAKE_DEADLINE;
                let stream = match &handshake.tls {
                    None => Stream::Plain(stream),
                    Some(tls) => {
                        let secured = tokio::select! {
                            _ = stop.cancelled() => return,
                            secured = timeout_at(deadline, tls.accept(stream)) => secured,
                        };
                        let reason = match secured {
                            Ok(Ok(stream)) => Ok(stream),
                            Ok(Err(error)) => Err(describe_accept(&error)),
                            Err(_) => Err(format!(
                                "no TLS handshake within {}s",
                                HANDSHAKE_DEADLINE.as_secs()
                            )),
                        };
                        match reason {
                            Ok(stream) => stream,
                            Err(reason) => {
                                handshake.events.emit(Event::ClientRefused {
                                    client: Client::Addr(client),
                                    reason: &reason,
                                });
                                return;
                            }
                        }
                    }
                };
                let stream = match route(stream, &handshake.watch, &stop).await {
                    Route::Websocket(stream) => stream,
                    Route::Done => return,
                    Route::Refused(reason) => {
                        handshake.events.emit(Event::ClientRefused {
                            client: Client::Addr(client),
                            reason: &reason,
                        });
                        return;
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    done = accept(stream, client, &handshake, deadline) => {
                        if let Some((ws, channel)) = done {
                            let accepted = Accepted {
                                wire: ws.into(),
                                origin: Origin::Addr(client),
                                channel,
                                permit,
                            };
                            let _ = accepted_tx.send(Box::new(accepted)).await;
                        }
                    }
                }
            }
            .in_current_span(),
        );
    }
}

/// Tell a client over the connection limit so with HTTP 503. Its request is read first: a
/// socket closed with unread bytes is reset, and the client might lose the answer.
async fn refuse(stream: &mut Stream) -> std::io::Result<()> {
    let mut request = [0u8; 2048];
    let mut seen = 0;
    while seen < request.len() && !request[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut request[seen..]).await? {
            0 => return Ok(()),
            n => seen += n,
        }
    }
    stream.write_all(TOO_MANY).await?;
    stream.shutdown().await?;
    // Until the client closes (or the deadline), so that the answer is not reset away.
    while stream.read(&mut request).await? > 0 {}
    Ok(())
}

/// The websocket handshake of one client, done by `deadline`: its path becomes its channel,
/// and with a secret set, it must present it.
#[allow(clippy::result_large_err)] // the error type is tungstenite's, built once per refused handshake
async fn accept(
    mut stream: Stream,
    client: SocketAddr,
    handshake: &Handshake,
    deadline: Instant,
) -> Option<(Ws, String)> {
    let _ = stream.set_nodelay(true);
    let mut channel = String::new();
    let mut refused = None;
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        channel = request.uri().path().to_owned();
        if let Some(secret) = &handshake.secret {
            let given = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
            if !given
                .is_some_and(|given| crate::observe::http::same_secret(given, secret.as_bytes()))
            {
                refused = Some(if given.is_some() {
                    "wrong secret"
                } else {
                    "no secret"
                });
                let mut response = ErrorResponse::new(Some(
                    "401 Unauthorized: this mesh needs its secret\n".into(),
                ));
                *response.status_mut() = StatusCode::UNAUTHORIZED;
                return Err(response);
            }
        }
        Ok(response)
    };
    let config = ws_config(handshake.max_message);
    // The handshake borrows the socket, so that a client that is not a websocket client can
    // still be told so. tungstenite refuses bytes after the request, so once the handshake is
    // done nothing is buffered and the socket can carry on as a websocket.
    let reason = match timeout_at(
        deadline,
        accept_hdr_async_with_config(&mut stream, callback, Some(config)),
    )
    .await
    {
        Ok(Ok(_handshaken)) => {
            let ws = Ws::from_raw_socket(stream, Role::Server, Some(config)).await;
            return Some((ws, channel));
        }
        Ok(Err(_)) if refused.is_some() => format!("HTTP 401 ({})", refused.unwrap_or_default()),
        Ok(Err(error)) => {
            // Best effort, and bounded: a browser or curl learns what it reached.
            let _ = timeout(Duration::from_millis(100), stream.write_all(NOT_WEBSOCKET)).await;
            format!("not a websocket handshake: {}", client::describe(&error))
        }
        Err(_) => format!(
            "no websocket handshake within {}s",
            HANDSHAKE_DEADLINE.as_secs()
        ),
    };
    handshake.events.emit(Event::ClientRefused {
        client: Client::Addr(client),
        reason: &reason,
    });
    None
}
