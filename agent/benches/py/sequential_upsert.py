"""What a billing panel does to create PPP secrets: one command, wait for the reply, the next.

The Rust benchmark `agent/benches/router_jobs.rs` runs this with the Python of the venv that
`scripts/test` prepares (librouteros, an independent and widely used client) and compares it
with the agent's executor doing the same work. For each secret it sends exactly what the
agent's upsert (`ops::execute`, `JobOp::UpsertPppSecret`, RouterOS >= 7.15) sends for a secret
that does not exist yet:

    /ppp/secret/print =.proplist=.id,comment,name,password,service,profile,disabled,remote-address ?name=NAME
    /ppp/secret/add =name=NAME =password=PW =service=pppoe =profile=default =disabled=no =comment=tikfleet:

and adds only when the print found nothing. Prints one JSON object:
{"jobs": N, "created": C, "seconds": S} where S covers the loop only (after login).

Usage: sequential_upsert.py --host H --port P --user U --password W --count N --prefix P
"""

from __future__ import annotations

import argparse
import json
import time

import librouteros

PROPLIST = "=.proplist=.id,comment,name,password,service,profile,disabled,remote-address"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", default="sub-")
    args = parser.parse_args()

    api = librouteros.connect(host=args.host, port=args.port, username=args.user, password=args.password)
    created = 0
    started = time.perf_counter()
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
    seconds = time.perf_counter() - started
    api.close()
    print(json.dumps({"jobs": args.count, "created": created, "seconds": seconds}))


if __name__ == "__main__":
    main()
