//! A real `nats-server` for the tests that need one: on free ports, waited for, killed when
//! dropped. Without `nats-server` on the PATH the tests that start one fail, saying so (CI
//! installs Debian's).

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{PATIENCE, free_port};

/// A `nats-server` on 127.0.0.1, with its monitoring port; killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    pub monitor: u16,
}

impl NatsServer {
    /// Start a server on a free port and wait until it accepts connections.
    pub fn start() -> Self {
        Self::on(free_port(), free_port())
    }

    /// Start a server on `port` (clients) and `monitor` (HTTP monitoring).
    pub fn on(port: u16, monitor: u16) -> Self {
        Self::with(port, monitor, &[])
    }

    /// Start a server on `port` and `monitor`, with more of its flags.
    pub fn with(port: u16, monitor: u16, flags: &[&str]) -> Self {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string()])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("nats-server: {e}: install it (Debian: apt-get install -y nats-server)")
            });
        let mut server = Self {
            child: Some(child),
            port,
            monitor,
        };
        server.wait_until_it_accepts();
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Poll until a client gets the server's `INFO` line: then it serves.
    pub fn wait_until_it_accepts(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait().unwrap()
            {
                panic!("nats-server on port {} exited: {status}", self.port);
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(1)))
                    .unwrap();
                let mut info = [0u8; 4];
                if stream.read_exact(&mut info).is_ok() && &info == b"INFO" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server never accepted on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10)); // poll interval
        }
    }

    /// Kill the server and wait until it is gone and its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "port {} stays open", self.port);
            std::thread::sleep(Duration::from_millis(10)); // poll interval
        }
    }

    /// Stop the server and start another on the same ports, as a server restart would.
    pub fn restart(&mut self) {
        self.stop();
        *self = Self::on(self.port, self.monitor);
    }

    /// What the monitoring endpoint `path` (`/connz`, ...) answers: its body.
    pub fn monitoring(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.monitor)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or(response)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
