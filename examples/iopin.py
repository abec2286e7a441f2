#!/usr/bin/env python3
"""The I/O pin as an `exec` sketch, in Python with the standard library only.

For each message, draws `sequence` random bits (each 0 with probability `chance`), streams
them one message at a time to every peer in order, waits for each acknowledgement, then
acknowledges `acknowledged`, or `error: ...` naming the peer that failed: the same acks as
the built-in iopin. Its settings come in the init line; see docs/exec.md for the protocol.

Run it in a mesh with `sketch = "exec"` and `command = ["python3", "-u", "examples/iopin.py"]`.
"""

import json
import random
import sys


def say(answer):
    # One JSON object per line, flushed at once: the node is waiting for it.
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


def log(text):
    # stdout carries answers only; anything for people goes to stderr (the node's log).
    print(text, file=sys.stderr, flush=True)


def requests():
    for line in sys.stdin:
        yield json.loads(line)


def main():
    lines = requests()
    init = next(lines)
    settings = init.get("settings", {})
    chance = float(settings.get("chance", 0.5))
    sequence = int(settings.get("sequence", 3))
    peers = init["peers"]
    rng = random.Random(init["seed"])

    for request in lines:
        rid = request["id"]
        if request["type"] != "message":
            say({"id": rid, "ack": "n/a"})
            continue
        bits = ["0" if rng.random() < chance else "1" for _ in range(sequence)]
        log(f"tick {request['text']} on {request['channel']} -> {' '.join(bits)}")
        failed = None
        for peer in peers:
            for bit in bits:
                say({"id": rid, "send": {"peer": peer, "text": bit}})
                reply = next(lines)
                if "error" in reply:
                    failed = reply["error"]
                    break
            if failed:
                break
        if failed:
            say({"id": rid, "error": failed})
        else:
            say({"id": rid, "ack": "acknowledged"})


if __name__ == "__main__":
    main()
