#!/usr/bin/env python3
"""A node in the style of the Python asyncio program this project grew from: a websocket
server that answers every message with one acknowledgement, and a clock that sends ticks and
waits for each ack. The interop tests run it beside the Rust nodes, in both directions.

    node.py buzzer --port 0            # prints "serving on HOST:PORT"
    node.py clock --port 8765 -t 3     # prints "< ACK" for every tick
"""

import argparse
import asyncio
import sys

import websockets


def buzz(signal):
    return "buzz buzz buzz" if signal == "1" else "..."


async def serve(host, port):
    async def on_connection(websocket):
        path = websocket.request.path
        async for message in websocket:
            ack = buzz(message)
            print(f"[ buzzer ] {path} {message} -> {ack}", flush=True)
            await websocket.send(ack or "n/a")

    async with websockets.serve(on_connection, host, port) as server:
        bound = server.sockets[0].getsockname()
        print(f"[ buzzer ] serving on {bound[0]}:{bound[1]}", flush=True)
        await asyncio.get_running_loop().create_future()


async def clock(host, port, tacks, delay):
    async with websockets.connect(f"ws://{host}:{port}/datafeed") as websocket:
        for tick in range(tacks):
            print(f"[ clock ] > {tick}", flush=True)
            await websocket.send(str(tick))
            print(f"[ clock ] < {await websocket.recv()}", flush=True)
            await asyncio.sleep(delay)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sketch", choices=["clock", "buzzer"])
    parser.add_argument("-s", "--socket", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=8765)
    parser.add_argument("-t", "--tacks", type=int, default=5)
    parser.add_argument("-d", "--delay", type=float, default=0.0)
    args = parser.parse_args()
    if args.sketch == "clock":
        asyncio.run(clock(args.socket, args.port, args.tacks, args.delay))
    else:
        asyncio.run(serve(args.socket, args.port))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
