//! The machine's floor, for `bench/run.sh`: 1-byte ping-pong over loopback TCP with Nagle off,
//! blocking sockets, a server and a client process.
//!
//! `tcp_floor server` prints `listening on ADDR`; `tcp_floor client ADDR N` prints the round
//! trip's p50, p99 and max in microseconds.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::Instant,
};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            eprintln!("listening on {}", listener.local_addr()?);
            for stream in listener.incoming() {
                let mut stream = stream?;
                stream.set_nodelay(true)?;
                std::thread::spawn(move || {
                    let mut byte = [0u8; 1];
                    while stream.read_exact(&mut byte).is_ok() {
                        if stream.write_all(&byte).is_err() {
                            break;
                        }
                    }
                });
            }
            Ok(())
        }
        Some("client") => {
            let addr = args.get(2).expect("tcp_floor client ADDR N");
            let count: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(20_000);
            let mut stream = TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            let mut latencies = Vec::with_capacity(count);
            let mut byte = [1u8; 1];
            for i in 0..count + 100 {
                let sent = Instant::now();
                stream.write_all(&byte)?;
                stream.read_exact(&mut byte)?;
                if i >= 100 {
                    latencies.push(sent.elapsed());
                }
            }
            latencies.sort_unstable();
            let micros = |q: f64| {
                latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6
            };
            println!(
                "round trip: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
                micros(0.5),
                micros(0.99),
                micros(1.0)
            );
            Ok(())
        }
        _ => {
            eprintln!("usage: tcp_floor server | tcp_floor client ADDR N");
            std::process::exit(2);
        }
    }
}
