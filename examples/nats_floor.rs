//! The NATS client's floor, for comparing the NATS hop with: one responder process answering
//! requests on a subject, one requester sending N of them stop-and-wait, both bare
//! async-nats on a current-thread runtime, nothing else.
//!
//! `nats_floor [URL] [-n N]` (URL defaults to `$ARDUINO_NATS`, then nats://127.0.0.1:4222)
//! starts the responder as a child process and prints round trips a second and the CPU time
//! per message of each side, read from /proc.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use futures_util::StreamExt;

const SUBJECT: &str = "arduino.floor.datafeed";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut url = std::env::var("ARDUINO_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let mut count: u64 = 20_000;
    let mut respond = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-n" => count = args.next().ok_or("-n needs a number")?.parse()?,
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
        runtime.block_on(requester(&url, count))
    }
}

/// Answer every request on [`SUBJECT`] with `acknowledged`; say `ready` once subscribed.
async fn responder(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = async_nats::connect(url).await?;
    let mut requests = client.subscribe(SUBJECT).await?;
    client.flush().await?;
    println!("ready");
    while let Some(request) = requests.next().await {
        if let Some(reply) = request.reply {
            client.publish(reply, "acknowledged".into()).await?;
        }
    }
    Ok(())
}

async fn requester(url: &str, count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([url, "--respond"])
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut ready)?;
    if ready.trim() != "ready" {
        child.kill()?;
        return Err(format!("the responder did not start (is a nats-server at {url}?)").into());
    }
    let client = async_nats::connect(url).await?;
    // Warm up: connections, buffers and the reply subscription.
    for _ in 0..200 {
        client.request(SUBJECT, "1".into()).await?;
    }
    let (responder_before, own_before) = (cpu_seconds(pid)?, cpu_seconds(std::process::id())?);
    let started = Instant::now();
    for _ in 0..count {
        let reply = client.request(SUBJECT, "1".into()).await?;
        if reply.payload.as_ref() != b"acknowledged" {
            return Err("the responder answered something else".into());
        }
    }
    let took = started.elapsed().as_secs_f64();
    let responder = cpu_seconds(pid)? - responder_before;
    let own = cpu_seconds(std::process::id())? - own_before;
    child.kill()?;
    child.wait()?;
    let per = |seconds: f64| seconds / count as f64 * 1e6;
    println!(
        "{count} round trips in {took:.2}s: {:.0} msgs/s, {:.1} us each; CPU per message: \
         responder {:.1} us, requester {:.1} us",
        count as f64 / took,
        per(took),
        per(responder),
        per(own)
    );
    Ok(())
}

/// The user and system CPU time process `pid` has used, in seconds, from /proc.
fn cpu_seconds(pid: u32) -> Result<f64, Box<dyn std::error::Error>> {
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
