#!/usr/bin/env python3
"""What hostile clients cost an arduino node: three figures, one line each.

    python3 bench/hostile.py          # builds target/release/arduino first

a. A well-behaved client's worst and p99 ack latency, stop and wait for 2 s on a buzzer, while
   another client floods it with messages and never reads its acks (beside the same client
   alone, measured first).
b. The time from SIGTERM to exit of an iopin whose buzzer is down (nothing listens on its
   port), while a client has 1,000 messages pipelined into it.
c. How many connections a buzzer holds from an iopin once clients have sent one message each
   on 1,000 different channels through the iopin.

Every wait is capped; a figure that hits its cap is printed as "> N s", so the script ends
within about two minutes however the node behaves. Ports come from the OS; only loopback
traffic; everything started here is stopped on exit. Needs Python 3.11 and `websockets`.
"""

import asyncio
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "arduino"
# The lifecycle lines the script reads, not a line per message.
LOG_FILTER = "arduino=warn,arduino::events=info"

START_CAP = 5.0  # a node must be listening within this
ACK_CAP = 10.0  # figure a: longest wait for one ack
GOOD_CLIENT_SECONDS = 2.0  # figure a: how long the well-behaved client keeps sending
EXIT_CAP = 30.0  # figure b: longest wait for the node to exit after SIGTERM
CHANNELS = 1000  # figure c
CHANNELS_CAP = 45.0  # figure c: longest time for all of the channels' messages
PIPELINED = 1000  # figure b

PR_SET_PDEATHSIG = 1


def die_with_parent():
    """In a child, before exec: be sent SIGTERM when this script dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Processes:
    """Everything started here, stopped on exit."""

    def __init__(self, work):
        self.work = work
        self.started = []

    def spawn(self, args, log_name, env=None, stdout=subprocess.DEVNULL):
        with open(self.work / log_name, "wb") as log:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=log,
                env=env,
                preexec_fn=die_with_parent,
            )
        self.started.append(process)
        return process

    def node(self, name, args, log_filter=LOG_FILTER):
        """Start a node, wait for its "listening on ws://ADDR" line; return it and its port."""
        env = dict(os.environ, RUST_LOG=log_filter)
        process = self.spawn([str(BIN), *args], f"{name}.log", env)
        log = self.work / f"{name}.log"
        deadline = time.monotonic() + START_CAP
        while time.monotonic() < deadline:
            found = re.search(r"listening on ws://[^ ]*:(\d+)", log.read_text(errors="replace"))
            if found:
                return process, int(found.group(1))
            if process.poll() is not None:
                break
            time.sleep(0.01)  # polling for readiness
        sys.exit(f"{name} did not start: {log.read_text(errors='replace').strip()}")

    def stop(self, process, grace=2.0):
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self):
        for process in self.started:
            self.stop(process)


def free_port():
    """A port the OS had free a moment ago, with nothing listening on it now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mesh(path, port_of_peer):
    path.write_text(
        '[[node]]\nname = "iopin"\nport = 0\n'
        f'to = ["ws://127.0.0.1:{port_of_peer}"]\n'
        "[node.config]\nsequence = 3\n"
    )
    return path


# A raw websocket client, for what a library client would not do: flood without reading,
# pipeline without waiting, and open a thousand short connections quickly.


def raw_connect(port, path="/datafeed", timeout=5.0, rcvbuf=None):
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(response.split(b"\r\n", 1)[0].decode(errors="replace"))
    # tungstenite sends nothing after the 101 until a message comes, so nothing is lost here.
    return sock


def frame(text):
    """A masked client text frame; the mask key is zero, so the payload goes as it is."""
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def read_text(sock):
    """One unmasked server frame's payload, as text (acks are short)."""
    header = recv_exactly(sock, 2)
    length = header[1] & 0x7F
    if length == 126:
        length = int.from_bytes(recv_exactly(sock, 2), "big")
    elif length == 127:
        length = int.from_bytes(recv_exactly(sock, 8), "big")
    return recv_exactly(sock, length).decode(errors="replace")


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def flood(port):
    """Figure a's hostile client: send as fast as the node takes it, never read, and come back
    when dropped. Runs in a process of its own (`hostile.py flood PORT`)."""
    die_with_parent()
    blob = frame("1") * 10_000
    announced = False
    while True:
        try:
            # A small receive buffer: the node's acks back up sooner.
            sock = raw_connect(port, rcvbuf=4096, timeout=None)
        except OSError:
            time.sleep(0.05)
            continue
        if not announced:
            print("connected", flush=True)
            announced = True
        try:
            while True:
                sock.sendall(blob)
        except OSError:
            sock.close()


async def stop_and_wait(ws, seconds):
    """Send, wait for the ack, again, for `seconds`. Returns the round trips in seconds,
    whether an ack took longer than ACK_CAP (the last round trip is then the cap), and the
    time it all took (longer than `seconds` when the last ack was late)."""
    latencies = []
    began = time.perf_counter()
    while time.perf_counter() < began + seconds:
        sent = time.perf_counter()
        await ws.send("1")
        try:
            await asyncio.wait_for(ws.recv(), ACK_CAP)
        except TimeoutError:
            latencies.append(ACK_CAP)
            return latencies, True, time.perf_counter() - began
        latencies.append(time.perf_counter() - sent)
    return latencies, False, time.perf_counter() - began


def summary(latencies, capped, elapsed):
    latencies = sorted(latencies)

    def shown(latency):
        return f"> {ACK_CAP:g} s" if capped and latency >= ACK_CAP else f"{latency * 1e3:.2f} ms"

    p99 = latencies[round((len(latencies) - 1) * 0.99)]
    return (
        f"worst {shown(latencies[-1])}, p99 {shown(p99)}, "
        f"{len(latencies)} acks in {elapsed:.1f} s"
    )


async def good_client_beside_flooder(processes):
    buzzer, port = processes.node("buzzer-a", ["buzzer", "--port", "0"])
    url = f"ws://127.0.0.1:{port}/datafeed"
    async with connect(url, open_timeout=START_CAP, close_timeout=1, ping_interval=None) as ws:
        alone = await stop_and_wait(ws, GOOD_CLIENT_SECONDS)
        flooder = processes.spawn(
            [sys.executable, __file__, "flood", str(port)], "flood.log", stdout=subprocess.PIPE
        )
        ready = await asyncio.wait_for(
            asyncio.to_thread(flooder.stdout.readline), START_CAP
        )
        if ready.strip() != b"connected":
            sys.exit("the flooding client did not connect")
        flooded = await stop_and_wait(ws, GOOD_CLIENT_SECONDS)
    processes.stop(flooder)
    processes.stop(buzzer)
    print(
        "a. well-behaved client on a buzzer beside a client that floods and never reads: "
        f"{summary(*flooded)} (alone: {summary(*alone)})",
        flush=True,
    )


def stop_with_dead_peer(processes):
    config = mesh(processes.work / "dead.toml", free_port())
    # Links log at info when they wait for a peer (or retry one): the sign the node is at work.
    iopin, port = processes.node(
        "iopin-b", ["iopin", "--mesh", str(config)], f"{LOG_FILTER},arduino::link=info"
    )
    client = raw_connect(port)
    client.sendall(b"".join(frame(str(i)) for i in range(PIPELINED)))
    log = processes.work / "iopin-b.log"
    deadline = time.monotonic() + START_CAP
    while not any(
        sign in log.read_text(errors="replace") for sign in ("not up yet", "not reachable")
    ):
        if time.monotonic() > deadline:
            sys.exit(f"the iopin never tried its peer: {log.read_text(errors='replace')}")
        time.sleep(0.01)  # polling for the first attempt
    asked = time.monotonic()
    iopin.send_signal(signal.SIGTERM)
    try:
        iopin.wait(EXIT_CAP)
        took = f"{time.monotonic() - asked:.2f} s (exit status {iopin.returncode})"
    except subprocess.TimeoutExpired:
        took = f"> {EXIT_CAP:g} s"
    client.close()
    processes.stop(iopin)
    print(
        "b. iopin whose buzzer is down, "
        f"{PIPELINED:,} messages pipelined by a client: SIGTERM to exit {took}",
        flush=True,
    )


def established_to(port):
    """Established TCP connections whose local port is `port` (the server's side of each)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def links_for_channels(processes):
    buzzer, buzzer_port = processes.node("buzzer-c", ["buzzer", "--port", "0"])
    config = mesh(processes.work / "channels.toml", buzzer_port)
    iopin, port = processes.node("iopin-c", ["iopin", "--mesh", str(config)])
    deadline = time.monotonic() + CHANNELS_CAP
    done = errors = 0
    capped = False
    for channel in range(CHANNELS):
        left = deadline - time.monotonic()
        if left <= 0:
            capped = True
            break
        try:
            with raw_connect(port, f"/channel/{channel}", timeout=min(left, 10.0)) as client:
                client.sendall(frame("1"))
                if read_text(client).startswith("error: "):
                    errors += 1
        except (OSError, ConnectionError):
            errors += 1
        done += 1
    held = established_to(buzzer_port)
    took = f"> {CHANNELS_CAP:g} s, stopped after {done}" if capped else f"{done}"
    print(
        f"c. connections a buzzer holds from an iopin after one message on each of {CHANNELS:,} "
        f"channels: {held} (messages sent: {took}; error acks or failures: {errors})",
        flush=True,
    )
    processes.stop(iopin)
    processes.stop(buzzer)


def main():
    if sys.argv[1:2] == ["flood"]:
        flood(int(sys.argv[2]))
        return
    # Stopped by a signal: still run the `finally` below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--bin", "arduino"], cwd=ROOT, check=True
    )
    with tempfile.TemporaryDirectory() as work:
        processes = Processes(Path(work))
        try:
            asyncio.run(good_client_beside_flooder(processes))
            stop_with_dead_peer(processes)
            links_for_channels(processes)
        finally:
            processes.stop_all()


if __name__ == "__main__":
    main()
