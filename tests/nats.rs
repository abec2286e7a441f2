//! NATS: a real `nats-server` started per test on a free port, and a node's client to it.
//! Without `nats-server` on the PATH the tests say so and fail (CI installs it: Debian's
//! `nats-server`).

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{PATIENCE, free_port};

/// A `nats-server` on 127.0.0.1, with its monitoring port; killed when dropped.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    monitor: u16,
}

impl NatsServer {
    /// Start a server on a free port and wait until it accepts connections.
    fn start() -> Self {
        Self::on(free_port(), free_port())
    }

    /// Start a server on `port` (clients) and `monitor` (HTTP monitoring).
    fn on(port: u16, monitor: u16) -> Self {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string()])
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
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Poll until a client gets the server's `INFO` line: then it serves.
    fn wait_until_it_accepts(&mut self) {
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
    fn stop(&mut self) {
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
    fn restart(&mut self) {
        self.stop();
        *self = Self::on(self.port, self.monitor);
    }

    /// What the monitoring endpoint `path` (`/connz`, ...) answers: its body.
    fn monitoring(&self, path: &str) -> String {
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

/// The helper's server starts, stops (its port then refuses), and starts again on the same
/// port: what a test of a server restart needs.
#[test]
fn a_server_starts_stops_and_restarts_on_its_port() {
    let mut server = NatsServer::start();
    let port = server.port;
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    server.stop();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    server.restart();
    assert_eq!(server.port, port);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
}

/// A node's client is named after its node on the server, and after the server restarts it
/// reconnects by itself, subscribes again, and requests on the node's subject are answered
/// again; a request nobody answers fails at once as "no responders".
#[tokio::test]
async fn a_nodes_client_is_named_and_rides_out_a_server_restart() {
    let mut server = NatsServer::start();
    let node = arduino::nats::connect(&server.url(), "iopin", None).unwrap();
    let subject = arduino::nats::subject("iopin", "/datafeed").unwrap();
    assert_eq!(subject, "arduino.iopin.datafeed");
    let (requests_tx, mut requests) = tokio::sync::mpsc::channel(16);
    node.subscribe(&subject, Some("iopin"), requests_tx, None);
    let answering = node.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            if let Some(reply) = request.reply {
                answering.publish(reply, None, "acknowledged".into());
            }
        }
    });
    let sender = arduino::nats::connect(&server.url(), "clock", None).unwrap();
    // Both connect in the background: ask until answered.
    let ask_until_answered = |payload: &'static str| {
        let sender = sender.clone();
        let subject = subject.clone();
        async move {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let answered = tokio::time::timeout(
                    Duration::from_millis(500),
                    sender.request(subject.clone().into(), payload.into()),
                )
                .await;
                if let Ok(Ok(reply)) = answered {
                    return reply;
                }
                assert!(Instant::now() < deadline, "no answer: {answered:?}");
                tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
            }
        }
    };
    assert_eq!(&ask_until_answered("1").await[..], b"acknowledged");
    let connections = server.monitoring("/connz");
    assert!(
        connections.contains("\"name\": \"iopin\"") && connections.contains("\"name\": \"clock\""),
        "{connections}"
    );
    let nobody = tokio::time::timeout(
        PATIENCE,
        sender.request("arduino.nobody".into(), "1".into()),
    )
    .await
    .unwrap();
    assert_eq!(nobody, Err(arduino::nats::RequestError::NoResponders));

    server.restart();
    assert_eq!(&ask_until_answered("2").await[..], b"acknowledged");
}

/// A URL that is no NATS URL is refused in one line that shows no credentials.
#[tokio::test]
async fn a_bad_url_is_refused_in_words() {
    let Err(error) = arduino::nats::connect("http://user:s3cret@127.0.0.1:1", "iopin", None) else {
        panic!("an http:// URL was taken");
    };
    let error = error.to_string();
    assert_eq!(
        error,
        "http://127.0.0.1:1: the NATS URL must start with nats:// or tls://, not \"http://\""
    );
}
