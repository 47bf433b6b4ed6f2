"""What a billing panel does to create PPP secrets: one command, wait for the reply, the next.

The Rust benchmark `agent/benches/router_jobs.rs` runs this with the Python of the venv that
`scripts/test` prepares (librouteros, an independent and widely used client) and compares it
with the agent's executor doing the same work. For each secret it sends exactly what the
agent's upsert (`ops::execute`, `JobOp::UpsertPppSecret`, RouterOS >= 7.15) sends for a secret
that does not exist yet:

    /ppp/secret/print =.proplist=.id,comment,name,password,service,profile,disabled,remote-address ?name=NAME
    /ppp/secret/add =name=NAME =password=PW =service=pppoe =profile=default =disabled=no =comment=tikfleet:

and adds only when the print found nothing. Prints one JSON object:

    {"jobs": N, "created": C, "seconds": S, "loop_seconds": L, "cpu_seconds": U,
     "blocks": [B1, B2, ...]}

S runs from just before connecting (TCP connect and login included, as the agent's figure
includes its connections) to the last reply; L is the loop alone (after login); U is this
process's CPU time (user + system) over S; Bi is the wall time of each block of 1,000 jobs,
to show whether the loop speeds up or slows down as it goes. The interpreter's start and the
import of librouteros are not timed.

Usage: sequential_upsert.py --host H --port P --user U --password W --count N --prefix P
"""

from __future__ import annotations

import argparse
import json
import time

import librouteros

PROPLIST = "=.proplist=.id,comment,name,password,service,profile,disabled,remote-address"
BLOCK = 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", default="sub-")
    args = parser.parse_args()

    cpu_started = time.process_time()
    started = time.perf_counter()
    api = librouteros.connect(host=args.host, port=args.port, username=args.user, password=args.password)
    created = 0
    loop_started = time.perf_counter()
    blocks = []
    block_started = loop_started
    for i in range(args.count):
        name = f"{args.prefix}{i}"
        found = tuple(api.rawCmd("/ppp/secret/print", PROPLIST, f"?name={name}"))
        if not found:
            tuple(
                api.rawCmd(
                    "/ppp/secret/add",
                    f"=name={name}",
                    f"=password=pw-{i}",
                    "=service=pppoe",
                    "=profile=default",
                    "=disabled=no",
                    "=comment=tikfleet:",
                )
            )
            created += 1
        if (i + 1) % BLOCK == 0:
            now = time.perf_counter()
            blocks.append(now - block_started)
            block_started = now
    ended = time.perf_counter()
    cpu = time.process_time() - cpu_started
    api.close()
    print(
        json.dumps(
            {
                "jobs": args.count,
                "created": created,
                "seconds": ended - started,
                "loop_seconds": ended - loop_started,
                "cpu_seconds": cpu,
                "blocks": blocks,
            }
        )
    )


if __name__ == "__main__":
    main()
