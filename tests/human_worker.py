"""An external worker as a separate process, for the tests: it speaks the worker protocol
(spec §7) over loopback the way a solving desk would, leasing ImageToText tasks and
answering each with a fixed text (or, given a JSON file of answers by the SHA-256 of the
task's ``body``, with the one listed). Runs until killed; one line per answer on stdout.

Its first lease call returns at once and prints ``polling: ok``: from then on the server
counts it as serving ImageToText. With ``--go FILE`` it then waits for FILE to exist
before it leases anything (a test decides when the person starts taking work).

    python tests/human_worker.py URL TOKEN [--text T] [--answers A.json] [--go FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import httpx

LEASE_WAIT_S = 5
IDLE_S = 0.05


def body_digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("token")
    p.add_argument("--text", default="answer")
    p.add_argument("--answers", help="JSON: SHA-256 of a task's body -> its answer")
    p.add_argument("--go", help="lease nothing until this file exists")
    args = p.parse_args()
    answers: dict[str, str] = {}
    if args.answers:
        answers = json.loads(Path(args.answers).read_text(encoding="utf-8"))
    with httpx.Client(base_url=args.url, timeout=LEASE_WAIT_S + 10) as client:
        def lease(wait_s: float, limit: int) -> dict[str, object]:
            while True:
                try:
                    got: dict[str, object] = client.post("/worker/v1/lease", json={
                        "workerToken": args.token, "types": ["ImageToTextTask"],
                        "max": limit, "waitSeconds": wait_s}).json()
                    return got
                except httpx.TransportError:
                    time.sleep(IDLE_S)  # the server is not up yet

        # max 1, waitSeconds 0: seen at once; what it leases now is answered below
        first = lease(0, 1)
        print(f"polling: {first.get('errorCode') or 'ok'}", flush=True)
        if args.go:
            while not Path(args.go).exists():
                time.sleep(IDLE_S)
        got = first
        while True:
            leases = got.get("leases")
            for item in leases if isinstance(leases, list) else []:
                answer = answers.get(body_digest(item["task"].get("body", "")), args.text)
                done = client.post("/worker/v1/complete", json={
                    "workerToken": args.token, "leaseId": item["leaseId"],
                    "solution": {"text": answer}}).json()
                print(f"task {item['taskId']}: answered {answer!r}: {done}", flush=True)
            got = lease(LEASE_WAIT_S, 1)


if __name__ == "__main__":
    main()
