"""A reference for the reconcile benchmark: the same adds as `sequential_add.py`, pipelined.

Not a contender: it shows what ONE connection to the simulated router allows when a client
does not wait for each reply, so the benchmark can print the real floor of each condition
next to the nominal one (with `service_ms: 1` the simulator's per-command time is its timer's,
which may be more than 1 ms). Per secret it sends

    /ppp/secret/add =name=NAME =password=PW =profile=PROFILE =service=SERVICE .tag=K

keeping up to --window commands outstanding (written before their replies are read; the
simulator runs tagged commands concurrently), and counts the `!done` replies; a `!trap` or
`!fatal` fails the run. Uses librouteros for connecting and logging in and for the word
encoding (its sentence reader does not parse `.tag=` words, so replies are read raw).
Prints one JSON object:

    {"count": N, "added": A, "seconds": S, "loop_seconds": L, "window": W}

S runs from just before connecting (login included) to the last reply; L after login.

Usage: pipelined_add.py --host H --port P --user U --password W --secrets FILE [--window W]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import librouteros


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--secrets", required=True, help="JSON file: a list of secrets")
    parser.add_argument("--window", type=int, default=512, help="most commands outstanding")
    args = parser.parse_args()

    with open(args.secrets, encoding="utf-8") as f:
        secrets = json.load(f)
    sentences = [
        (
            f"=name={s['name']}",
            f"=password={s['password']}",
            f"=profile={s['profile']}",
            f"=service={s['service']}",
            f".tag={k}",
        )
        for k, s in enumerate(secrets)
    ]

    started = time.perf_counter()
    api = librouteros.connect(host=args.host, port=args.port, username=args.user, password=args.password)
    loop_started = time.perf_counter()
    proto = api.protocol
    sent = done = 0
    errors: list[str] = []

    def read_one() -> None:
        # Every command ends with `!done` (after its `!trap`, if any); `!fatal` ends the link.
        nonlocal done
        reply, words = proto.readSentence()
        if reply == "!done":
            done += 1
        elif reply in ("!trap", "!fatal"):
            errors.append(f"{reply} {' '.join(words)}")
            if reply == "!fatal":
                raise SystemExit(f"pipelined_add: {errors[-1]}")

    while sent < len(sentences):
        while sent - done >= args.window:
            read_one()
        proto.writeSentence("/ppp/secret/add", *sentences[sent])
        sent += 1
    while done < sent:
        read_one()
    ended = time.perf_counter()
    api.close()
    if errors:
        print(f"pipelined_add: {len(errors)} error(s), first: {errors[0]}", file=sys.stderr)
        sys.exit(1)
    added = done
    print(
        json.dumps(
            {
                "count": len(secrets),
                "added": added,
                "seconds": ended - started,
                "loop_seconds": ended - loop_started,
                "window": args.window,
            }
        )
    )


if __name__ == "__main__":
    main()
