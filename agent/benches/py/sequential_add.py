"""A sequential librouteros loop that creates PPP secrets: one `add`, wait for its reply, the next.

Run by the Rust benchmark `agent/benches/reconcile.rs` with the Python of the bench venv
(`scripts/bench/venv`, target/bench-venv). It is what a billing panel or a hand-written script
does to load secrets into an empty router; it sends, per secret and nothing else:

    /ppp/secret/add =name=NAME =password=PW =profile=PROFILE =service=SERVICE

The secrets come from a JSON file, a list of `{"name", "password", "profile", "service"}`
(the harness writes it, the same file the Ansible run reads). Prints one JSON object:

    {"count": N, "added": A, "seconds": S, "loop_seconds": L, "cpu_seconds": U}

S runs from just before connecting (TCP connect and login included) to the last reply; L is
the loop alone (after login); U is this process's CPU time (user + system) over S. The
interpreter's start, the import of librouteros and reading the file are not timed. A trap
(e.g. a duplicate name) ends the run with an error and a non-zero exit.

Usage: sequential_add.py --host H --port P --user U --password W --secrets FILE
"""

from __future__ import annotations

import argparse
import json
import time

import librouteros


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--secrets", required=True, help="JSON file: a list of secrets")
    args = parser.parse_args()

    with open(args.secrets, encoding="utf-8") as f:
        secrets = json.load(f)
    # The words are prepared before the clock starts: only the exchange is timed.
    sentences = [
        (
            f"=name={s['name']}",
            f"=password={s['password']}",
            f"=profile={s['profile']}",
            f"=service={s['service']}",
        )
        for s in secrets
    ]

    cpu_started = time.process_time()
    started = time.perf_counter()
    api = librouteros.connect(host=args.host, port=args.port, username=args.user, password=args.password)
    loop_started = time.perf_counter()
    added = 0
    for words in sentences:
        tuple(api.rawCmd("/ppp/secret/add", *words))
        added += 1
    ended = time.perf_counter()
    cpu = time.process_time() - cpu_started
    api.close()
    print(
        json.dumps(
            {
                "count": len(secrets),
                "added": added,
                "seconds": ended - started,
                "loop_seconds": ended - loop_started,
                "cpu_seconds": cpu,
            }
        )
    )


if __name__ == "__main__":
    main()
