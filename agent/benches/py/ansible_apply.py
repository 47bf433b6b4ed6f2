"""Applies PPP secrets to one router with Ansible's `community.routeros.api_modify` and times it.

Run by the Rust benchmark `agent/benches/reconcile.rs` with the Python of the bench venv
(`scripts/bench/venv`: the `ansible` package, which ships the community.routeros collection,
and librouteros, through which the module talks to the router). Ansible is GPL-3.0: it is only
run here as an external program, never linked into or shipped with tikfleet.

It writes into a temporary directory (or `--keep DIR`):

- `vars.json`: the connection settings and the secrets (a list of
  `{"name", "password", "profile", "service"}` read from `--secrets FILE`);
- `playbook.yml` (JSON, which is YAML): one play on `localhost`, `connection: local`,
  `gather_facts: false`, one task:

      community.routeros.api_modify:
        hostname/port/username/password, tls: false
        path: ppp secret
        data: "{{ secrets }}"
        handle_absent_entries: ignore

and runs `ansible-playbook -i localhost, playbook.yml -e @vars.json` with settings for speed
and quiet (no retry files, no cows, no warnings, its own config, home and temp directories,
the `ansible.posix.json` stdout callback, which records each task's start and end).

Prints one JSON object:

    {"count": N, "seconds": S, "task_seconds": T, "play_seconds": P, "changed": C,
     "old_entries": O, "new_entries": E, "ansible": "...", "ansible_core": "...",
     "community_routeros": "..."}

S is the wall time of the whole `ansible-playbook` process, from spawning it to its exit:
interpreter start, imports, reading the playbook and the vars file, templating the task's
arguments, building and running the module, and printing its result are all included, as an
operator running the playbook waits for all of them. T is the task's own duration as the
json callback records it (from the task's start to its result: templating the arguments,
packaging the module, the module's process — connect, login, print, one add per entry, print
again — and returning the result); P the play's. O and E are the sizes of the module's
`old_data` and `new_data`. Writing the files is not timed.

Any failure (non-zero exit, a failed or unreachable host, output that is not the callback's
JSON) prints what Ansible said on stderr and exits non-zero.

Usage: ansible_apply.py --host H --port P --user U --password W --secrets FILE [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time


def collection_version() -> str:
    try:
        import ansible_collections.community.routeros as c  # type: ignore[import-not-found]

        manifest = pathlib.Path(list(c.__path__)[0]) / "MANIFEST.json"
        return json.loads(manifest.read_text())["collection_info"]["version"]
    except Exception:  # noqa: BLE001 - a version string is informative only
        return "unknown"


def seconds(duration: dict) -> float | None:
    """The json callback's {"start": ISO, "end": ISO} (UTC, a trailing Z) in seconds."""
    try:
        start = datetime.datetime.fromisoformat(duration["start"].rstrip("Z"))
        end = datetime.datetime.fromisoformat(duration["end"].rstrip("Z"))
    except (KeyError, ValueError, AttributeError):
        return None
    return (end - start).total_seconds()


def fail(message: str, proc: subprocess.CompletedProcess | None = None) -> None:
    print(f"ansible_apply: {message}", file=sys.stderr)
    if proc is not None:
        if proc.stderr:
            print(f"--- ansible-playbook stderr ---\n{proc.stderr[-20000:]}", file=sys.stderr)
        if proc.stdout:
            print(f"--- ansible-playbook stdout (tail) ---\n{proc.stdout[-20000:]}", file=sys.stderr)
    sys.exit(1)


def run(args: argparse.Namespace, work: pathlib.Path) -> None:
    with open(args.secrets, encoding="utf-8") as f:
        secrets = json.load(f)
    for sub in ("home", "tmp", "remote"):
        (work / sub).mkdir(exist_ok=True)
    (work / "ansible.cfg").write_text("[defaults]\n")
    (work / "vars.json").write_text(
        json.dumps(
            {
                # The module runs with this Python: the venv's, which has librouteros.
                "ansible_python_interpreter": sys.executable,
                "ros_host": args.host,
                "ros_port": args.port,
                "ros_user": args.user,
                "ros_password": args.password,
                "secrets": secrets,
            }
        )
    )
    playbook = [
        {
            "name": "PPP secrets",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "apply PPP secrets",
                    "community.routeros.api_modify": {
                        "hostname": "{{ ros_host }}",
                        "port": "{{ ros_port }}",
                        "username": "{{ ros_user }}",
                        "password": "{{ ros_password }}",
                        "tls": False,
                        "path": "ppp secret",
                        "data": "{{ secrets }}",
                        "handle_absent_entries": "ignore",
                    },
                }
            ],
        }
    ]
    (work / "playbook.yml").write_text(json.dumps(playbook, indent=2))

    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": str(work / "ansible.cfg"),
            "ANSIBLE_HOME": str(work / "home"),
            "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
            "ANSIBLE_REMOTE_TEMP": str(work / "remote"),
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            "ANSIBLE_JSON_INDENT": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOWS": "1",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_GATHERING": "explicit",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_SYSTEM_WARNINGS": "False",
            "ANSIBLE_COMMAND_WARNINGS": "False",
            "ANSIBLE_ACTION_WARNINGS": "False",
        }
    )
    # Only the stdout callback: no other callback adds its own output.
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    playbook_bin = pathlib.Path(sys.executable).parent / "ansible-playbook"
    command = [str(playbook_bin), "-i", "localhost,", "playbook.yml", "-e", "@vars.json"]

    started = time.perf_counter()
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started

    try:
        out = json.loads(proc.stdout)
    except json.JSONDecodeError:
        fail(f"ansible-playbook exited {proc.returncode} without the json callback's output", proc)
        return
    stats = out.get("stats", {}).get("localhost", {})
    tasks = [t for play in out.get("plays", []) for t in play.get("tasks", [])]
    result = tasks[-1]["hosts"].get("localhost", {}) if tasks else {}
    if proc.returncode != 0 or stats.get("failures", 0) or stats.get("unreachable", 0) or not tasks:
        msg = result.get("msg", "(no message)")
        fail(f"ansible-playbook exited {proc.returncode}, stats {stats}: {msg}", proc)
        return
    play_seconds = seconds(out["plays"][0]["play"]["duration"]) if out.get("plays") else None
    print(
        json.dumps(
            {
                "count": len(secrets),
                "seconds": wall,
                "task_seconds": seconds(tasks[-1]["task"]["duration"]),
                "play_seconds": play_seconds,
                "changed": result.get("changed"),
                "old_entries": len(result.get("old_data", [])),
                "new_entries": len(result.get("new_data", [])),
                "ansible": importlib.metadata.version("ansible"),
                "ansible_core": importlib.metadata.version("ansible-core"),
                "community_routeros": collection_version(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--secrets", required=True, help="JSON file: a list of secrets")
    parser.add_argument("--keep", help="write the playbook, vars and Ansible's files here and keep them")
    args = parser.parse_args()
    if args.keep:
        work = pathlib.Path(args.keep).resolve()
        work.mkdir(parents=True, exist_ok=True)
        run(args, work)
    else:
        with tempfile.TemporaryDirectory(prefix="tikfleet-ansible-") as d:
            run(args, pathlib.Path(d))


if __name__ == "__main__":
    main()
