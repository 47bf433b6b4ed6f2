"""Conformance scenario for tikfleet-sim, driven by librouteros (an independent, widely used client).

The Rust test `tests/e2e/tests/conformance.rs` runs the same scenario with mikrotik-rs against a
second, identical simulated router, and requires both clients to see the same results (and the
results RouterOS gives). This script prints one JSON object: step name -> outcome, where an
outcome is {"rows": [...]} (every value as the string the router sent), {"id": "*1"} for an add,
{"ok": true} for a command with no rows, or {"trap": ["message", ...]} for an error.

Usage: conformance.py --host H --port P --tls-port P --cafile PEM --user U --password W
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys

import librouteros
from librouteros.exceptions import LibRouterosError, MultiTrapError, TrapError
from librouteros.protocol import parse_word
from librouteros.query import Key, Or


def text(value) -> str:
    """librouteros turns values into Python types; turn them back into the router's strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def rows(response) -> dict:
    return {"rows": [{k: text(v) for k, v in row.items()} for row in response]}


def trap(err: LibRouterosError) -> dict:
    if isinstance(err, MultiTrapError):
        return {"trap": [t.message for t in err.traps]}
    if isinstance(err, TrapError):
        return {"trap": [err.message]}
    return {"trap": [str(err)]}


def run(step: str, out: dict, fn) -> None:
    try:
        out[step] = fn()
    except LibRouterosError as err:
        out[step] = trap(err)


def scenario(api, out: dict) -> None:
    secrets = api.path("ppp", "secret")
    profiles = api.path("ppp", "profile")

    run("add_profile", out, lambda: {"id": profiles.add(name="plan-10m", **{"rate-limit": "10M/10M"})})
    run("add_alice", out, lambda: {"id": secrets.add(name="alice", password="a1", profile="plan-10m", service="pppoe")})
    run("add_bob", out, lambda: {"id": secrets.add(name="bob", password="b1", service="pppoe")})
    run("add_carol", out, lambda: {"id": secrets.add(name="carol", password="c1", disabled="yes")})
    run("add_duplicate", out, lambda: {"id": secrets.add(name="alice", password="x")})
    run("add_bad_profile", out, lambda: {"id": secrets.add(name="dave", password="d", profile="nope")})

    proplist = "name,profile,disabled,service"
    run("print_proplist", out, lambda: rows(api("/ppp/secret/print", **{".proplist": proplist})))
    run("print_empty", out, lambda: rows(api.rawCmd("/ppp/secret/print", "=.proplist=name", "?name=nobody")))
    run("print_all_names", out, lambda: rows(secrets.select(Key("name"))))
    run("query_equal", out, lambda: rows(api.rawCmd("/ppp/secret/print", f"=.proplist={proplist}", "?profile=plan-10m")))
    run("query_disabled", out, lambda: rows(api.rawCmd("/ppp/secret/print", "=.proplist=name", "?disabled=true")))
    run(
        "query_or",
        out,
        lambda: rows(secrets.select(Key("name")).where(Or(Key("name") == "alice", Key("name") == "carol"))),
    )
    run("query_not", out, lambda: rows(api.rawCmd("/ppp/secret/print", "=.proplist=name", "?name=alice", "?#!")))
    run(
        "query_and_or_stack",
        out,
        lambda: rows(
            api.rawCmd(
                "/ppp/secret/print", "=.proplist=name", "?service=pppoe", "?name=bob", "?name=carol", "?#|", "?#&"
            )
        ),
    )

    # set by .id and by numbers=NAME, then the fields read back
    def set_bob():
        bob = [r for r in api.rawCmd("/ppp/secret/print", "=.proplist=.id", "?name=bob")][0][".id"]
        tuple(api.rawCmd("/ppp/secret/set", f"=.id={bob}", "=profile=plan-10m", "=limit-bytes-in=1000"))
        return {"ok": True}

    run("set_by_id", out, set_bob)
    run("set_by_numbers", out, lambda: (tuple(api.rawCmd("/ppp/secret/set", "=numbers=carol", "=disabled=no")), {"ok": True})[1])
    run("set_remote_address", out, lambda: (tuple(api.rawCmd("/ppp/secret/set", "=numbers=alice", "=remote-address=10.9.0.2")), {"ok": True})[1])
    run("query_gt", out, lambda: rows(api.rawCmd("/ppp/secret/print", "=.proplist=name", "?>limit-bytes-in=500")))
    run("query_lt", out, lambda: rows(api.rawCmd("/ppp/secret/print", "=.proplist=name", "?<limit-bytes-in=500")))
    run("query_has", out, lambda: rows(api.rawCmd("/ppp/secret/print", "=.proplist=name", "?remote-address")))
    run("query_lacks", out, lambda: rows(api.rawCmd("/ppp/secret/print", "=.proplist=name", "?-remote-address")))
    run(
        "print_after_set",
        out,
        lambda: rows(api("/ppp/secret/print", **{".proplist": "name,profile,disabled,limit-bytes-in,remote-address"})),
    )
    run("set_bad_value", out, lambda: (tuple(api.rawCmd("/ppp/secret/set", "=numbers=bob", "=profile=missing")), {"ok": True})[1])

    def remove_alice():
        alice = [r for r in api.rawCmd("/ppp/secret/print", "=.proplist=.id", "?name=alice")][0][".id"]
        secrets.remove(alice)
        return {"ok": True}

    run("remove_by_id", out, remove_alice)
    run("remove_missing", out, lambda: (secrets.remove("*FFFF"), {"ok": True})[1])
    run("print_after_remove", out, lambda: rows(api("/ppp/secret/print", **{".proplist": ".id,name"})))
    run("unknown_verb", out, lambda: rows(api("/ppp/secret/frobnicate")))
    run("unknown_path", out, lambda: rows(api("/ip/adress/print")))
    run("builtin_profiles", out, lambda: rows(api("/ppp/profile/print", **{".proplist": ".id,name,default"})))

    # Two tagged commands in flight on one connection; replies are matched by tag.
    def tagged():
        proto = api.protocol
        proto.writeSentence("/ppp/secret/print", "=.proplist=name", ".tag=a")
        proto.writeSentence("/ppp/profile/print", "=.proplist=name", ".tag=b")
        got: dict[str, list] = {"a": [], "b": []}
        done: set[str] = set()
        while len(done) < 2:
            # librouteros's own word parser takes `=name=value` words only, so the `.tag=`
            # API word is split off here and the rest goes through the library's parser.
            reply, raw = proto.readSentence()
            tags = [w.split("=", 1)[1] for w in raw if w.startswith(".tag=")]
            words = dict(parse_word(w) for w in raw if w.startswith("="))
            tag = tags[0]
            if reply == "!re":
                got[tag].append({k: text(v) for k, v in words.items()})
            elif reply == "!done":
                done.add(tag)
        return {"a": got["a"], "b": got["b"]}

    run("tagged_concurrent", out, tagged)

    # Hotspot users and firewall address lists: their own duplicate messages and fields.
    hs = api.path("ip", "hotspot", "user")
    run("hs_add", out, lambda: {"id": hs.add(name="guest1", password="g1")})
    run("hs_duplicate", out, lambda: {"id": hs.add(name="guest1", password="g2")})
    run("hs_print", out, lambda: rows(api.rawCmd("/ip/hotspot/user/print", "=.proplist=name,profile,disabled", "?name=guest1")))
    al = api.path("ip", "firewall", "address-list")
    run("al_add", out, lambda: {"id": al.add(list="suspended", address="10.64.0.9", comment="tikfleet")})
    run("al_duplicate", out, lambda: {"id": al.add(list="suspended", address="10.64.0.9")})
    run("al_print", out, lambda: rows(api.rawCmd("/ip/firewall/address-list/print", "=.proplist=list,address,comment,dynamic,disabled")))
    run("count_only", out, lambda: {"rows": [{"count": text(r.get("ret"))} for r in api.rawCmd("/ppp/secret/print", "=count-only=")]})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-port", type=int, required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    args = ap.parse_args()

    out: dict = {}
    try:
        librouteros.connect(args.host, args.user, args.password + "-wrong", port=args.port, timeout=10)
        out["login_bad"] = {"ok": True}
    except LibRouterosError as err:
        out["login_bad"] = trap(err)

    api = librouteros.connect(args.host, args.user, args.password, port=args.port, timeout=10)
    out["login_good"] = {"ok": True}
    scenario(api, out)
    api.close()

    # API-SSL, verifying the simulator's certificate against the PEM it published.
    ctx = ssl.create_default_context(cafile=args.cafile)
    ctx.check_hostname = True
    tls = librouteros.connect(
        args.host,
        args.user,
        args.password,
        port=args.tls_port,
        timeout=10,
        ssl_wrapper=lambda sock: ctx.wrap_socket(sock, server_hostname="localhost"),
    )
    out["tls_identity"] = rows(tls("/system/identity/print"))
    out["tls_secret_names"] = rows(tls("/ppp/secret/print", **{".proplist": "name"}))
    tls.close()

    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
