//! The NATS floor, for comparing the NATS hop with: one responder process answering requests
//! on a subject, one requester sending N of them stop-and-wait, both over the same small NATS
//! client the nodes use (`arduino::nats::Client`), on a current-thread runtime, nothing else:
//! no sketch, no node task, no in-process connection, no events.
//!
//! What it measures: N round trips requester -> nats-server -> responder -> nats-server ->
//! requester, one at a time (each waits for the previous reply), each a `PUB` with a reply
//! subject, the responder's `MSG` and `PUB` of `acknowledged`, and the requester's `MSG`.
//! It prints round trips a second, the time of one, and the CPU time per message of each
//! side, read from /proc (the server's own CPU is not counted).
//!
//! `nats_floor [URL] [-n N]` (URL defaults to `$ARDUINO_NATS`, then nats://127.0.0.1:4222)
//! starts the responder as a child process of its own.
//!
//! `nats_floor [URL] [-n N] [-c C] --node SUBJECT --pid PID` measures a node instead: the
//! same requester sends `1` on SUBJECT (such as `arduino.buzzer.datafeed`), answered by
//! whatever node subscribes to it, and the responder CPU is that of process PID (0: not
//! measured). With `-c C`, C requesters share the connection, each stop-and-wait, N in all:
//! fan-in on the node.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use arduino::nats::Client;

const SUBJECT: &str = "arduino.floor.datafeed";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut url = std::env::var("ARDUINO_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let mut count: u64 = 20_000;
    let mut respond = false;
    let mut target = Target {
        subject: SUBJECT.to_owned(),
        pid: None,
        clients: 1,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-n" => count = args.next().ok_or("-n needs a number")?.parse()?,
            "-c" => target.clients = args.next().ok_or("-c needs a number")?.parse()?,
            "--node" => target.subject = args.next().ok_or("--node needs a subject")?,
            "--pid" => target.pid = Some(args.next().ok_or("--pid needs a number")?.parse()?),
            "--respond" => respond = true,
            _ => url = arg,
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if respond {
        runtime.block_on(responder(&url))
    } else {
        runtime.block_on(requester(&url, count, target))
    }
}

/// Where the requests go: the floor's own responder, or a node.
struct Target {
    subject: String,
    /// The responder's process, when it is not the floor's own child (0: none measured).
    pid: Option<u32>,
    clients: u64,
}

/// A client of `url` named `name`, once it is connected.
async fn connected(url: &str, name: &str) -> Result<Client, Box<dyn std::error::Error>> {
    let client = arduino::nats::connect(url, name, None)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !client.is_connected() {
        if Instant::now() > deadline {
            return Err(format!("no nats-server at {url}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(client)
}

/// Answer every request on [`SUBJECT`] with `acknowledged`; say `ready` once subscribed.
async fn responder(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = connected(url, "floor-responder").await?;
    let (requests_tx, mut requests) = tokio::sync::mpsc::channel(64);
    client.subscribe(SUBJECT, None, requests_tx, None);
    if !client.flush().await {
        return Err("the subscription was not made".into());
    }
    println!("ready");
    while let Some(request) = requests.recv().await {
        if let Some(reply) = request.reply {
            client.publish(reply, None, "acknowledged".into());
        }
    }
    Ok(())
}

async fn requester(
    url: &str,
    count: u64,
    target: Target,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut child = None;
    let pid = match target.pid {
        Some(pid) => pid,
        None => {
            let mut responder = Command::new(std::env::current_exe()?)
                .args([url, "--respond"])
                .stdout(Stdio::piped())
                .spawn()?;
            let mut ready = String::new();
            BufReader::new(responder.stdout.take().ok_or("no stdout")?).read_line(&mut ready)?;
            if ready.trim() != "ready" {
                responder.kill()?;
                return Err(
                    format!("the responder did not start (is a nats-server at {url}?)").into(),
                );
            }
            let pid = responder.id();
            child = Some(responder);
            pid
        }
    };
    let client = connected(url, "floor-requester").await?;
    let subject = bytes::Bytes::from(target.subject);
    // Warm up: connections, buffers and the reply subscription; a node that has just
    // started may not have subscribed yet.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut warm = 0;
    while warm < 200 {
        match client.request(subject.clone(), "1".into()).await {
            Ok(_) => warm += 1,
            Err(error) if Instant::now() > deadline => return Err(error.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let (responder_before, own_before) = (cpu_seconds(pid)?, cpu_seconds(std::process::id())?);
    let started = Instant::now();
    let mut requesters = tokio::task::JoinSet::new();
    let clients = target.clients.max(1);
    for at in 0..clients {
        let (client, subject) = (client.clone(), subject.clone());
        let share = count / clients + u64::from(at < count % clients);
        requesters.spawn(async move {
            for _ in 0..share {
                match client.request(subject.clone(), "1".into()).await {
                    Ok(reply) if !reply.starts_with(b"error: ") => {}
                    Ok(reply) => return Err(String::from_utf8_lossy(&reply).into_owned()),
                    Err(error) => return Err(error.to_string()),
                }
            }
            Ok(())
        });
    }
    while let Some(done) = requesters.join_next().await {
        done??;
    }
    let took = started.elapsed().as_secs_f64();
    let responder = cpu_seconds(pid)? - responder_before;
    let own = cpu_seconds(std::process::id())? - own_before;
    if let Some(mut child) = child {
        child.kill()?;
        child.wait()?;
    }
    let per = |seconds: f64| seconds / count as f64 * 1e6;
    println!(
        "{count} round trips in {took:.2}s ({clients} at a time): {:.0} msgs/s, {:.1} us each; \
         CPU per message: responder {:.1} us, requester {:.1} us",
        count as f64 / took,
        per(took) * clients as f64,
        per(responder),
        per(own)
    );
    Ok(())
}

/// The user and system CPU time process `pid` has used, in seconds, from /proc.
fn cpu_seconds(pid: u32) -> Result<f64, Box<dyn std::error::Error>> {
    if pid == 0 {
        return Ok(0.0);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command's closing parenthesis; utime and stime are 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or("no ) in /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / per_second.max(1) as f64)
}
