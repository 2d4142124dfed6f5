#!/usr/bin/env python3
"""etcd v3 API conformance corpus: gRPC (through etcdctl) and the JSON gateway (python3 stdlib).

Record the answers of a server (a FRESH single member: the run assumes an empty store):
    v3corpus.py run --endpoints 127.0.0.1:42379 --out X.jsonl [--etcdctl etcdctl] [--only RE]

Compare two recordings (real etcd against detcd, or two etcd runs), after normalisation:
    v3corpus.py diff A.jsonl B.jsonl        # exits 1 when any case differs
    v3corpus.py normalize A.jsonl           # print the normalised records

Each case goes either to the gateway (HTTP/1.1 to http://ENDPOINT, urllib-free http.client)
or to Debian's etcdctl 3.4.23 (ETCDCTL_API=3, `-w json`, gRPC). Requests may name revisions
relative to the server: `{B+N}` is the base revision (the header revision of the first case)
plus N, and `{CUR+N}` the server's current revision (read just before the case) plus N.
Every request has a timeout; no loop is unbounded. More templates: `{VAR:X}` (a number the
runner captured: SELF is the member's own ID, read from the member list at start; a case's
`capture` stores a field of its answer, e.g. a granted lease's ID), `{HEX:X}` (the same in hex,
for etcdctl), `{PEER}` (the member's peer URL) and `{TMP}` (a temporary directory).

Streams (watch, lease keepalive) are gateway cases with `lines`: the runner reads at most that
many lines of the chunked answer for at most `deadline` seconds, then closes the connection,
and records the lines and whether the deadline ended the read. etcdctl cases with `timeout`
(etcdctl watch) are killed at the deadline: their output so far is recorded.

NORMALISATION (diff, normalize):
  * cluster_id, member_id -> "<id>", raft_term -> "<term>" (ints and strings alike);
  * revision, create_revision, mod_revision, compact_revision -> "r+N" relative to the base
    revision B (the first case's header revision); a string value becomes "'r+N'" so the
    gateway's string-encoding stays compared;
  * "token" (auth) -> "<token>"; RFC 3339 timestamps -> "<ts>";
  * gateway: status, body (JSON normalised as above, else text) and every header except Date,
    Content-Length and Transfer-Encoding;
  * etcdctl: exit code, stdout (JSON normalised, else text with revision numbers in the
    recorded range made relative), stderr without clientv3's JSON retry-log lines;
  * compare mode per case: full (default), status (status code or exit code only), none;
  * the member's client URL -> "<client-url>", its peer URL -> "<peer-url>", the endpoint
    (host:port) -> "<endpoint>", the runner's temporary directory -> "<tmp>", in every string
    (JSON or text); "raftTerm" (endpoint status) -> "<term>";
  * per case: `mask` names fields whose values become "<masked>" (server-chosen lease and
    member IDs, the leader, db sizes and raft indexes of endpoint status, health's "took");
    `sort` names lists compared as sets (etcd iterates Go maps: lease lists, a lease's keys,
    a member list holding a random-ID learner);
  * stream cases: each line as JSON normalised as above, and whether the deadline ended it;
  * etcdctl with `timeout`: stdout only when killed (a sequence of JSON values is parsed as
    such), exit code and stderr too when it ended by itself.
"""
import argparse
import base64
import difflib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


# ----------------------------------------------------------------------------- case builders
def G(id, path, body=None, desc="", method="POST", raw=None, headers=None, compare="full",
      mask=(), sort=(), capture=None, lines=None, deadline=None):
    """A gateway request: `body` is JSON-encoded; `raw` (str) is sent as it is. `lines` makes
    it a stream case: at most that many response lines are read, for at most `deadline`
    seconds, then the connection is closed (watch, keepalive)."""
    return dict(kind="gw", id=id, path=path, body=body, raw=raw, method=method, desc=desc,
                headers=headers or {}, compare=compare, mask=list(mask), sort=list(sort),
                capture=capture or {}, lines=lines, deadline=deadline)


def GS(id, path, body=None, lines=1, deadline=1.5, **kw):
    """A gateway stream case (see G)."""
    return G(id, path, body, lines=lines, deadline=deadline, **kw)


def E(id, args, desc="", stdin=None, compare="full", json_out=True, mask=(), sort=(),
      capture=None, timeout=None):
    """An etcdctl command (`-w json` unless json_out is False). With `timeout` (seconds) the
    command is expected to run until killed (etcdctl watch): its output so far is recorded,
    and a killed command is compared by its stdout only."""
    return dict(kind="ctl", id=id, args=args, stdin=stdin, desc=desc, compare=compare,
                json_out=json_out, mask=list(mask), sort=list(sort), capture=capture or {},
                timeout=timeout)


def put(k, v, **kw):
    return {"key": b64(k), "value": b64(v), **kw}


def rng(k, end=None, **kw):
    d = {"key": b64(k)}
    if end is not None:
        d["range_end"] = b64(end)
    d.update(kw)
    return d


def cmp(key, target, result, value, range_end=None):
    field = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision",
             "VALUE": "value", "LEASE": "lease"}[target]
    c = {"key": b64(key), "target": target, "result": result,
         field: b64(value) if target == "VALUE" else value}
    if range_end is not None:
        c["range_end"] = b64(range_end)
    return c


def op_put(k, v, **kw):
    return {"request_put": put(k, v, **kw)}


def op_get(k, end=None, **kw):
    return {"request_range": rng(k, end, **kw)}


def op_del(k, end=None, **kw):
    return {"request_delete_range": rng(k, end, **kw)}


LEASE = 1000          # granted through the gateway with a fixed ID (TTL 600 s)
LEASE_HEX = "3e8"
UNKNOWN_LEASE_HEX = "1234abcd"

CASES = [
    # --- base and misc
    G("base.range", "/v3/kv/range", rng("base"), "header revision of a fresh store = B"),
    E("base.ctl-get", ["get", "base"], "the same through gRPC"),
    G("misc.version", "/version", None, "server and cluster version", method="GET"),
    # --- put through etcdctl
    E("put.ctl.new", ["put", "c/a", "1"], "create"),
    E("put.ctl.prev-kv", ["put", "c/a", "2", "--prev-kv"], "overwrite, previous kv returned"),
    E("put.ctl.ignore-value", ["put", "c/a", "--ignore-value"], "new revision, value kept"),
    E("put.ctl.ignore-value-missing", ["put", "c/missing", "--ignore-value"],
      "etcdserver: key not found"),
    E("put.ctl.ignore-value-with-value", ["put", "c/a", "x", "--ignore-value"],
      "etcdctl refuses before sending"),
    E("put.ctl.ignore-lease", ["put", "c/a", "3", "--ignore-lease"], "key without a lease: ok"),
    E("put.ctl.ignore-lease-missing", ["put", "c/missing", "3", "--ignore-lease"],
      "etcdserver: key not found"),
    E("put.ctl.lease-unknown", ["put", "c/a", "4", "--lease=" + UNKNOWN_LEASE_HEX],
      "etcdserver: requested lease not found"),
    E("put.ctl.get-a", ["get", "c/a"], "version counts every put"),
    # --- put through the gateway
    G("put.gw.new", "/v3/kv/put", put("c/b", "bee"), "create"),
    G("put.gw.prev-kv", "/v3/kv/put", put("c/b", "bee2", prev_kv=True), "prev_kv"),
    G("put.gw.prev-kv-new-key", "/v3/kv/put", put("c/b-new", "x", prev_kv=True),
      "prev_kv of a new key: none"),
    G("put.gw.empty-value", "/v3/kv/put", {"key": b64("c/empty")}, "no value: empty value"),
    G("put.gw.empty-key", "/v3/kv/put", {"value": b64("x")}, "key is not provided"),
    G("put.gw.ignore-value", "/v3/kv/put", {"key": b64("c/b"), "ignore_value": True}, "ok"),
    G("put.gw.ignore-value-with-value", "/v3/kv/put", put("c/b", "x", ignore_value=True),
      "value is provided"),
    G("put.gw.ignore-value-missing", "/v3/kv/put", {"key": b64("c/nope"), "ignore_value": True},
      "key not found"),
    G("put.gw.lease-unknown", "/v3/kv/put", put("c/b", "x", lease=305441741),
      "requested lease not found (404)"),
    G("lease.gw.grant", "/v3/lease/grant", {"ID": LEASE, "TTL": 600}, "fixed lease ID"),
    G("lease.gw.grant-again", "/v3/lease/grant", {"ID": LEASE, "TTL": 600},
      "lease already exists (412)"),
    G("put.gw.with-lease", "/v3/kv/put", put("c/leased", "l", lease=LEASE), "attach lease"),
    G("put.gw.ignore-lease", "/v3/kv/put", put("c/leased", "l2", ignore_lease=True),
      "keeps the lease"),
    G("put.gw.ignore-lease-with-lease", "/v3/kv/put", put("c/leased", "l3", ignore_lease=True,
                                                        lease=LEASE), "lease is provided"),
    G("put.gw.ignore-lease-missing", "/v3/kv/put", put("c/nol", "x", ignore_lease=True),
      "key not found"),
    G("put.gw.get-leased", "/v3/kv/range", rng("c/leased"), "lease shown, as a string"),
    E("put.ctl.get-leased", ["get", "c/leased"], "lease shown, as a number"),
    E("put.ctl.lease-known", ["put", "c/leased2", "v", "--lease=" + LEASE_HEX], "hex lease id"),
    # --- data for gets: c/k0..c/k4 (values unique, versions differ)
    G("get.setup.k0", "/v3/kv/put", put("c/k0", "v0")),
    G("get.setup.k1", "/v3/kv/put", put("c/k1", "v4")),
    G("get.setup.k2", "/v3/kv/put", put("c/k2", "v2")),
    G("get.setup.k3", "/v3/kv/put", put("c/k3", "v1")),
    G("get.setup.k4", "/v3/kv/put", put("c/k4", "v3")),
    G("get.setup.k1b", "/v3/kv/put", put("c/k1", "v5")),
    G("get.setup.k1c", "/v3/kv/put", put("c/k1", "v6")),
    G("get.setup.k3b", "/v3/kv/put", put("c/k3", "v7")),
    E("get.ctl.single", ["get", "c/k1"]),
    E("get.ctl.missing", ["get", "c/zzz"], "no kvs, count 0"),
    E("get.ctl.prefix", ["get", "c/k", "--prefix"]),
    E("get.ctl.range", ["get", "c/k1", "c/k3"], "[k1, k3)"),
    E("get.ctl.from-key", ["get", "c/k3", "--from-key"]),
    E("get.ctl.rev", ["get", "c/k1", "--rev={B+18}"], "an older version of c/k1"),
    E("get.ctl.rev-before-create", ["get", "c/k4", "--rev={B+15}"], "not there yet"),
    E("get.ctl.rev-future", ["get", "c/k1", "--rev={CUR+1}"], "future revision"),
    E("get.ctl.limit", ["get", "c/k", "--prefix", "--limit=2"], "more=true, count=5"),
    E("get.ctl.sort-mod-desc", ["get", "c/k", "--prefix", "--sort-by=MODIFY",
                                "--order=DESCEND"]),
    E("get.ctl.sort-value", ["get", "c/k", "--prefix", "--sort-by=VALUE"], "order NONE+VALUE"),
    E("get.ctl.sort-create-asc", ["get", "c/k", "--prefix", "--sort-by=CREATE",
                                  "--order=ASCEND"]),
    E("get.ctl.sort-key-desc-limit", ["get", "c/k", "--prefix", "--order=DESCEND",
                                      "--limit=2"], "limit after sort"),
    E("get.ctl.keys-only", ["get", "c/k", "--prefix", "--keys-only"]),
    E("get.ctl.serializable", ["get", "c/k1", "--consistency=s"]),
    E("get.ctl.all", ["get", "", "--prefix"], "empty prefix: every key"),
    G("get.gw.single", "/v3/kv/range", rng("c/k1")),
    G("get.gw.prefix", "/v3/kv/range", rng("c/k", "c/l")),
    G("get.gw.from-key", "/v3/kv/range", {"key": b64("c/k3"), "range_end": "AA=="}),
    G("get.gw.all", "/v3/kv/range", {"key": "AA==", "range_end": "AA==", "keys_only": True}),
    G("get.gw.limit-more", "/v3/kv/range", rng("c/k", "c/l", limit=2)),
    G("get.gw.limit-negative", "/v3/kv/range", rng("c/k", "c/l", limit=-1)),
    G("get.gw.rev", "/v3/kv/range", rng("c/k1", revision="{B+18}")),
    G("get.gw.rev-future", "/v3/kv/range", rng("c/k1", revision="{CUR+1}"), "OutOfRange 400"),
    G("get.gw.rev-negative", "/v3/kv/range", rng("c/k1", revision=-5), "= current"),
    G("get.gw.sort-version", "/v3/kv/range", rng("c/k0", "c/k2", sort_target="VERSION"),
      "target without order: ascending"),
    G("get.gw.sort-value-desc", "/v3/kv/range", rng("c/k", "c/l", sort_target="VALUE",
                                                    sort_order="DESCEND")),
    G("get.gw.sort-numbers", "/v3/kv/range", rng("c/k", "c/l", sort_target=3, sort_order=2),
      "enums as numbers: MOD, DESCEND"),
    G("get.gw.min-mod", "/v3/kv/range", rng("c/k", "c/l", min_mod_revision="{B+17}")),
    G("get.gw.max-mod", "/v3/kv/range", rng("c/k", "c/l", max_mod_revision="{B+17}")),
    G("get.gw.min-create", "/v3/kv/range", rng("c/k", "c/l", min_create_revision="{B+15}")),
    G("get.gw.max-create", "/v3/kv/range", rng("c/k", "c/l", max_create_revision="{B+14}")),
    G("get.gw.filter-limit", "/v3/kv/range", rng("c/k", "c/l", min_mod_revision="{B+17}",
                                                 limit=1), "count before filters, more"),
    G("get.gw.keys-only", "/v3/kv/range", rng("c/k", "c/l", keys_only=True)),
    G("get.gw.count-only", "/v3/kv/range", rng("c/k", "c/l", count_only=True)),
    G("get.gw.serializable", "/v3/kv/range", rng("c/k1", serializable=True)),
    G("get.gw.empty-key", "/v3/kv/range", {"range_end": b64("c/l")}, "key is not provided"),
    # --- delete
    G("del.setup.d0", "/v3/kv/put", put("d/0", "x")),
    G("del.setup.d1", "/v3/kv/put", put("d/1", "y")),
    G("del.setup.d2", "/v3/kv/put", put("d/2", "z")),
    G("del.setup.d3", "/v3/kv/put", put("d/3", "w")),
    G("del.setup.d4", "/v3/kv/put", put("d/4", "v")),
    E("del.ctl.single", ["del", "d/0"], "deleted 1"),
    E("del.ctl.prev-kv", ["del", "d/1", "--prev-kv"]),
    E("del.ctl.nothing", ["del", "d/nothing"], "deleted 0, revision not bumped"),
    E("del.ctl.range", ["del", "d/2", "d/4"], "[d/2, d/4)"),
    E("del.ctl.prefix", ["del", "d/", "--prefix", "--prev-kv"]),
    E("del.ctl.get-after", ["get", "d/", "--prefix"], "nothing left; revision unchanged"),
    G("del.setup.e0", "/v3/kv/put", put("e/0", "x")),
    G("del.setup.e1", "/v3/kv/put", put("e/1", "y")),
    G("del.gw.prev-kv", "/v3/kv/deleterange", rng("e/", "e0", prev_kv=True)),
    G("del.gw.nothing", "/v3/kv/deleterange", rng("e/")),
    G("del.gw.empty-key", "/v3/kv/deleterange", {}, "key is not provided"),
    G("del.gw.recreate", "/v3/kv/put", put("e/0", "again"), "version 1 again, new create_revision"),
    G("del.gw.get-recreated", "/v3/kv/range", rng("e/0")),
    # --- txn through etcdctl
    G("txn.setup.t0", "/v3/kv/put", put("t/0", "a")),
    G("txn.setup.t1", "/v3/kv/put", put("t/1", "b")),
    G("txn.setup.t1b", "/v3/kv/put", put("t/1", "c")),
    E("txn.ctl.val-eq", ["txn"], "value = : success branch",
      stdin='val("t/0") = "a"\n\nput t/x "1"\nget t/0\n\nget t/1\n\n'),
    E("txn.ctl.val-neq-fail", ["txn"], "value != : failure branch",
      stdin='val("t/0") != "a"\n\nput t/x "2"\n\nget t/1\ndel t/nothing\n\n'),
    E("txn.ctl.ver-gt", ["txn"], stdin='ver("t/1") > "1"\n\nget t/1\n\n\n'),
    E("txn.ctl.create-lt", ["txn"], stdin='create("t/1") < "{CUR}"\n\nget t/0\n\n\n'),
    E("txn.ctl.mod-eq-missing", ["txn"], "a missing key compares as zero",
      stdin='mod("t/missing") = "0"\n\nput t/y "m"\n\n\n'),
    E("txn.ctl.val-missing", ["txn"], "VALUE of a missing key is never true",
      stdin='val("t/missing") = ""\n\n\nget t/0\n\n'),
    E("txn.ctl.multi", ["txn"], "several compares, all must hold",
      stdin='ver("t/0") = "1"\nver("t/1") = "2"\n\nput t/z "z" --prev-kv\ndel t/x --prev-kv\n'
            'get t --prefix\n\n\n'),
    E("txn.ctl.no-change", ["txn"], "failed compare, empty failure: revision not bumped",
      stdin='ver("t/0") = "9"\n\nput t/q "q"\n\n\n'),
    # --- txn through the gateway: every target x result
    G("txn.setup.lease-key", "/v3/kv/put", put("t/l", "leased", lease=LEASE)),
]

# every compare target and result, on t/1 (version 2, value "c") and t/l (lease 1000)
_VALS = {"VERSION": ("t/1", 2), "CREATE": ("t/1", "{B+35}"), "MOD": ("t/1", "{B+36}"),
         "VALUE": ("t/1", "c"), "LEASE": ("t/l", LEASE)}
# and against a smaller and a larger value, so that GREATER and LESS hold too
_LOWER = {"VERSION": 1, "CREATE": "{B+34}", "MOD": "{B+35}", "VALUE": "b", "LEASE": LEASE - 1}
_HIGHER = {"VERSION": 3, "CREATE": "{B+36}", "MOD": "{B+37}", "VALUE": "d", "LEASE": LEASE + 1}
for _t, (_k, _v) in _VALS.items():
    for _r in ("EQUAL", "GREATER", "LESS", "NOT_EQUAL"):
        for _name, _x in (("", _v), ("-vs-lower", _LOWER[_t]), ("-vs-higher", _HIGHER[_t])):
            CASES.append(G("txn.gw.%s-%s%s" % (_t.lower(), _r.lower(), _name), "/v3/kv/txn",
                           {"compare": [cmp(_k, _t, _r, _x)], "success": [op_get(_k)],
                            "failure": [op_get("t/0")]}))

CASES += [
    G("txn.gw.numbers", "/v3/kv/txn",
      {"compare": [{"key": b64("t/1"), "target": 0, "result": 0, "version": "2"}],
       "success": [op_get("t/1", keys_only=True)]}, "enums and int64 as numbers/strings"),
    G("txn.gw.missing-key-version", "/v3/kv/txn",
      {"compare": [cmp("t/none", "VERSION", "EQUAL", 0)], "success": [op_get("t/0")]},
      "missing key: version 0"),
    G("txn.gw.missing-key-value", "/v3/kv/txn",
      {"compare": [cmp("t/none", "VALUE", "EQUAL", "")], "failure": [op_get("t/0")]},
      "missing key: VALUE compare false"),
    G("txn.gw.range-compare-true", "/v3/kv/txn",
      {"compare": [cmp("t/0", "VERSION", "GREATER", 0, range_end="t/2")],
       "success": [op_get("t/0", "t/2", count_only=True)]}, "holds for every key in range"),
    G("txn.gw.range-compare-false", "/v3/kv/txn",
      {"compare": [cmp("t/0", "VERSION", "EQUAL", 1, range_end="t/2")],
       "failure": [op_get("t/0", "t/2", keys_only=True)]}, "t/1 has version 2"),
    G("txn.gw.range-compare-empty", "/v3/kv/txn",
      {"compare": [cmp("t/n0", "VALUE", "EQUAL", "x", range_end="t/n9")],
       "success": [op_get("t/0")]}, "empty range"),
    G("txn.gw.nested", "/v3/kv/txn",
      {"compare": [cmp("t/0", "VALUE", "EQUAL", "a")],
       "success": [{"request_txn": {"compare": [cmp("t/1", "VALUE", "EQUAL", "nope")],
                                    "success": [op_put("t/n", "s")],
                                    "failure": [op_put("t/n", "f"), op_get("t/n")]}},
                   op_get("t/n")]}, "nested txn, later ops see earlier ones"),
    G("txn.gw.see-own-writes", "/v3/kv/txn",
      {"success": [op_put("t/w", "1"), op_get("t/w"), op_del("t/y", prev_kv=True),
                   op_get("t/y"), op_get("t/w", "t/z")]}, "one revision for all writes"),
    G("txn.gw.put-then-delete-same-key", "/v3/kv/txn",
      {"success": [op_put("t/w", "1"), op_del("t/w")]}, "duplicate key"),
    G("txn.gw.ops-128", "/v3/kv/txn",
      {"success": [op_put("t/m%03d" % i, "x") for i in range(128)]}, "128 ops: one revision"),
    G("txn.gw.ops-129", "/v3/kv/txn",
      {"success": [op_put("t/m%03d" % i, "x") for i in range(129)]},
      "too many operations in txn request"),
    G("txn.gw.ops-129-failure", "/v3/kv/txn",
      {"compare": [cmp("t/0", "VALUE", "EQUAL", "no")],
       "failure": [op_get("t/m%03d" % i) for i in range(129)]},
      "the limit is per branch, reads included"),
    G("txn.gw.dup-put", "/v3/kv/txn", {"success": [op_put("t/d", "1"), op_put("t/d", "2")]},
      "duplicate key given in txn request"),
    G("txn.gw.put-in-delete-range", "/v3/kv/txn",
      {"success": [op_del("t/a", "t/z"), op_put("t/d", "2")]}, "duplicate key"),
    G("txn.gw.delete-then-put-outside", "/v3/kv/txn",
      {"success": [op_del("t/a", "t/c"), op_put("t/d", "2")]}, "no overlap: ok"),
    G("txn.gw.two-deletes-overlap", "/v3/kv/txn",
      {"success": [op_del("t/a", "t/z"), op_del("t/b", "t/c")]}, "overlapping deletes"),
    G("txn.gw.dup-across-branches", "/v3/kv/txn",
      {"success": [op_put("t/e", "1")], "failure": [op_put("t/e", "2")]}, "allowed"),
    G("txn.gw.dup-nested", "/v3/kv/txn",
      {"success": [op_put("t/f", "1"), {"request_txn": {"success": [op_put("t/f", "2")]}}]},
      "duplicate through a nested txn"),
    G("txn.gw.read-only", "/v3/kv/txn", {"success": [op_get("t/0")]}, "no revision bump"),
    G("txn.gw.delete-nothing", "/v3/kv/txn", {"success": [op_del("t/nothing")]},
      "no revision bump"),
    G("txn.gw.empty", "/v3/kv/txn", {}, "no compares, no ops: succeeded, no bump"),
    G("txn.gw.empty-op", "/v3/kv/txn", {"success": [{}]}, "an op with no request"),
    G("txn.gw.put-empty-key", "/v3/kv/txn", {"success": [op_put("", "x")]},
      "key is not provided"),
    G("txn.gw.put-unknown-lease", "/v3/kv/txn",
      {"success": [op_put("t/ul", "x", lease=305441741)]}, "lease not found: txn fails"),
    G("txn.gw.range-future", "/v3/kv/txn",
      {"success": [op_get("t/0", revision="{CUR+5}")]}, "future revision inside a txn"),
    G("txn.gw.get-after", "/v3/kv/range", rng("t/", "t0", keys_only=True), "what txns left"),
    # --- the gateway's own rules
    G("gw.bad-json", "/v3/kv/range", raw="xx", desc="Go scanner error, 400 code 3"),
    G("gw.truncated", "/v3/kv/range", raw='{"key":"YQ=="', desc="unexpected EOF"),
    G("gw.trailing-comma", "/v3/kv/range", raw='{"key":"YQ==",}'),
    G("gw.array-body", "/v3/kv/range", raw="[1]"),
    G("gw.string-body", "/v3/kv/range", raw='"x"'),
    G("gw.null-body", "/v3/kv/range", raw="null", desc="empty request"),
    G("gw.empty-body", "/v3/kv/range", raw="", desc="empty request: key is not provided"),
    G("gw.whitespace-body", "/v3/kv/range", raw=" \n "),
    G("gw.two-values", "/v3/kv/range", raw='{"key":"%s"} {"key":"x"}' % b64("c/k1"),
      desc="only the first value is read"),
    G("gw.duplicate-field", "/v3/kv/range",
      raw='{"key":"%s","key":"%s"}' % (b64("c/zz"), b64("c/k1")), desc="last wins"),
    G("gw.camel-case", "/v3/kv/range",
      raw='{"key":"%s","rangeEnd":"%s","countOnly":true}' % (b64("c/k"), b64("c/l"))),
    G("gw.wrong-case", "/v3/kv/range", raw='{"KEY":"%s"}' % b64("c/k1"), desc="ignored"),
    G("gw.unknown-fields", "/v3/kv/range",
      raw='{"key":"%s","bogus":1,"x":{"y":[1,{}]}}' % b64("c/k1")),
    G("gw.null-fields", "/v3/kv/range",
      raw='{"key":"%s","limit":null,"range_end":null,"sort_order":null}' % b64("c/k1")),
    G("gw.key-number", "/v3/kv/range", raw='{"key":1}'),
    G("gw.key-bytes-array", "/v3/kv/range", raw='{"key":[99,47,107,49]}',
      desc="bytes as an array of numbers"),
    G("gw.key-bad-base64", "/v3/kv/range", raw='{"key":"not base64!"}'),
    G("gw.key-unpadded", "/v3/kv/range", raw='{"key":"YQ"}'),
    G("gw.key-urlsafe", "/v3/kv/range", raw='{"key":"YQ-_"}'),
    G("gw.int-as-string", "/v3/kv/range", raw='{"key":"%s","limit":"1"}' % b64("c/k1")),
    G("gw.int-as-spaced-string", "/v3/kv/range", raw='{"key":"%s","limit":" 1"}' % b64("c/k1")),
    G("gw.int-fraction", "/v3/kv/range", raw='{"key":"YQ==","limit":1.5}'),
    G("gw.int-exponent", "/v3/kv/range", raw='{"key":"YQ==","limit":1e2}'),
    G("gw.int-quoted-fraction", "/v3/kv/range", raw='{"key":"YQ==","limit":"1.5"}'),
    G("gw.int-quoted-word", "/v3/kv/range", raw='{"key":"YQ==","limit":"abc"}'),
    G("gw.int-overflow", "/v3/kv/range",
      raw='{"key":"YQ==","revision":99999999999999999999}'),
    G("gw.bool-as-string", "/v3/kv/range", raw='{"key":"YQ==","keys_only":"true"}'),
    G("gw.bool-as-number", "/v3/kv/range", raw='{"key":"YQ==","serializable":1}'),
    G("gw.enum-name", "/v3/kv/range", rng("c/k", "c/l", sort_order="DESCEND", keys_only=True)),
    G("gw.enum-number", "/v3/kv/range", rng("c/k", "c/l", sort_order=2, keys_only=True)),
    G("gw.enum-quoted-number", "/v3/kv/range", rng("c/k", "c/l", sort_order="2")),
    G("gw.enum-lowercase", "/v3/kv/range", rng("c/k", "c/l", sort_order="descend")),
    G("gw.enum-unknown-number", "/v3/kv/range", rng("c/k", "c/l", sort_order=7,
                                                    keys_only=True)),
    G("gw.enum-html", "/v3/kv/range", raw='{"key":"YQ==","sort_order":"<a&b>é"}',
      desc="Go escapes <, > and & in the error body"),
    G("gw.enum-escaped-name", "/v3/kv/range", raw='{"key":"YQ==","sort_order":"DE\\u0053CEND"}',
      desc="the name is compared before unescaping"),
    G("gw.enum-bool", "/v3/kv/range", raw='{"key":"YQ==","sort_order":true}'),
    G("gw.enum-float", "/v3/kv/range", raw='{"key":"YQ==","sort_order":1.0}'),
    G("gw.enum-bad-target", "/v3/kv/txn",
      {"compare": [{"key": b64("t/0"), "target": "BOGUS"}]}),
    G("gw.depth-10000", "/v3/kv/range",
      raw='{"key":"%s","x":%s%s}' % (b64("c/k1"), "[" * 9999, "]" * 9999),
      desc="Go's scanner allows 10000 levels"),
    G("gw.depth-10001", "/v3/kv/range", raw="[" * 10001 + "]" * 10001,
      desc="exceeded max depth"),
    G("gw.repeated-not-array", "/v3/kv/txn", raw='{"success":{}}'),
    G("gw.message-not-object", "/v3/kv/txn", raw='{"success":[1]}'),
    G("gw.v3beta", "/v3beta/kv/range", rng("c/k1"), "same gateway"),
    G("gw.v3beta-unknown", "/v3beta/kv/rangex", {}),
    G("gw.query-ignored", "/v3/kv/range?key=eA==", rng("c/k1")),
    G("gw.content-type-text", "/v3/kv/range", rng("c/k1"),
      headers={"Content-Type": "text/plain"}),
    G("gw.get", "/v3/kv/range", None, method="GET", desc="405 text/plain"),
    G("gw.put-method", "/v3/kv/range", rng("c/k1"), method="PUT"),
    G("gw.delete-method", "/v3/kv/put", None, method="DELETE"),
    G("gw.options", "/v3/kv/range", None, method="OPTIONS", desc="CORS preflight"),
    G("gw.options-unknown-path", "/v3/kv/rangex", None, method="OPTIONS", desc="any path"),
    G("gw.head", "/v3/kv/range", None, method="HEAD", desc="405, no body"),
    G("gw.unknown-path", "/v3/kv/rangex", {}, desc="404 Not Found"),
    G("gw.trailing-slash", "/v3/kv/range/", {}),
    G("gw.upper-case", "/v3/kv/Range", {}),
    G("gw.v3-root", "/v3/", {}),
    G("gw.v3alpha", "/v3alpha/kv/range", rng("c/k1"), desc="not a gateway prefix in 3.4"),
    G("gw.too-large", "/v3/kv/put", put("c/big", "x" * (1536 * 1024 + 1)),
      "request is too large"),
    # --- compaction (last: older revisions disappear)
    E("compact.ctl.future", ["compaction", "{CUR+1}"], "future revision", json_out=False),
    E("compact.ctl.ok", ["compaction", "{B+19}"], "c/k1 v6 is at B+19", json_out=False),
    E("compact.ctl.again", ["compaction", "{B+19}"], "already compacted", json_out=False),
    E("compact.ctl.below", ["compaction", "{B+10}"], "already compacted", json_out=False),
    E("compact.ctl.get-at", ["get", "c/k1", "--rev={B+19}"], "reading at the compact rev"),
    E("compact.ctl.get-below", ["get", "c/k1", "--rev={B+18}"], "compacted"),
    G("compact.gw.get-at", "/v3/kv/range", rng("c/k", "c/l", revision="{B+19}")),
    G("compact.gw.get-below", "/v3/kv/range", rng("c/k1", revision="{B+18}")),
    G("compact.gw.txn-below", "/v3/kv/txn", {"success": [op_get("c/k1", revision="{B+18}")]}),
    G("compact.gw.zero", "/v3/kv/compaction", {"revision": 0}, "compacted"),
    G("compact.gw.future", "/v3/kv/compaction", {"revision": "{CUR+1}"}),
    G("compact.gw.physical", "/v3/kv/compaction", {"revision": "{B+30}", "physical": True}),
    G("compact.gw.at-current", "/v3/kv/compaction", {"revision": "{CUR}"}),
    G("compact.gw.current-again", "/v3/kv/compaction", {"revision": "{CUR}"}),
    G("compact.gw.get-current", "/v3/kv/range", rng("c/k1", revision="{CUR}")),
    G("compact.gw.get-latest", "/v3/kv/range", rng("c/k", "c/l", keys_only=True)),
    E("compact.ctl.get-latest", ["get", "c/k", "--prefix", "--keys-only"]),
    # --- auth errors (last: enables and then disables auth)
    G("auth.gw.user-add", "/v3/auth/user/add", {"name": "root", "password": "rootpw"}),
    G("auth.gw.grant-root", "/v3/auth/user/grant", {"user": "root", "role": "root"}),
    G("auth.gw.user-add-u", "/v3/auth/user/add", {"name": "u", "password": "upw"}),
    G("auth.gw.enable", "/v3/auth/enable", {}),
    G("auth.gw.no-token", "/v3/kv/range", rng("c/k1"), "user name is empty"),
    G("auth.gw.bad-token", "/v3/kv/range", rng("c/k1"), "invalid auth token (401)",
      headers={"Authorization": "bogus.1"}),
    G("auth.gw.bad-password", "/v3/auth/authenticate", {"name": "u", "password": "no"}),
    G("auth.gw.login-u", "/v3/auth/authenticate", {"name": "u", "password": "upw"}),
    G("auth.gw.denied", "/v3/kv/range", rng("c/k1"), "permission denied (403)",
      headers={"Authorization": "{TOKEN:u}"}),
    G("auth.gw.denied-put", "/v3/kv/put", put("c/k1", "x"), headers={"Authorization": "{TOKEN:u}"}),
    G("auth.gw.login-root", "/v3/auth/authenticate", {"name": "root", "password": "rootpw"}),
    G("auth.gw.root-range", "/v3/kv/range", rng("c/k1"), headers={"Authorization": "{TOKEN:root}"}),
    E("auth.ctl.no-user", ["get", "c/k1"], "user name is empty"),
    E("auth.ctl.denied", ["--user=u:upw", "get", "c/k1"], "permission denied"),
    E("auth.ctl.bad-password", ["--user=u:nope", "get", "c/k1"], "authentication failed"),
    G("auth.gw.disable", "/v3/auth/disable", {}, headers={"Authorization": "{TOKEN:root}"}),
    G("auth.gw.after", "/v3/kv/range", rng("c/k1"), "auth off again"),
]

# ============================================================================ issue #30 item 8
# Leases, watches, cluster, maintenance and v3 auth. These run after the sections above, on
# their own keys; revisions are named relative to the current one ({CUR-N}).
L2 = 3000            # a lease with a fixed ID, TTL 600 s, keys ks/a and ks/b
L2_HEX = "bb8"
MEMBER_MASK = ("ID", "leader")
STATUS_MASK = ("dbSize", "dbSizeInUse", "raftIndex", "raftAppliedIndex", "leader", "ID")

CASES += [
    # --- leases
    G("leases.gw.grant-min-ttl", "/v3/lease/grant", {"ID": 2001, "TTL": 1},
      "below the minimum: TTL raised to 2"),
    G("leases.gw.grant-zero-ttl", "/v3/lease/grant", {"ID": 2002, "TTL": 0}),
    G("leases.gw.grant-negative-ttl", "/v3/lease/grant", {"ID": 2003, "TTL": -5}),
    G("leases.gw.grant-too-large", "/v3/lease/grant", {"ID": 2004, "TTL": 9000000001},
      "too large lease TTL"),
    G("leases.gw.grant-max-ttl", "/v3/lease/grant", {"ID": 2005, "TTL": 9000000000}),
    G("leases.gw.grant-dup", "/v3/lease/grant", {"ID": 2001, "TTL": 60}, "lease already exists"),
    G("leases.gw.revoke-2001", "/v3/lease/revoke", {"ID": 2001}),
    G("leases.gw.revoke-2002", "/v3/kv/lease/revoke", {"ID": 2002}, "the /v3/kv/ alias"),
    G("leases.gw.revoke-2003", "/v3/lease/revoke", {"ID": 2003}),
    G("leases.gw.revoke-2005", "/v3/lease/revoke", {"ID": 2005}),
    G("leases.gw.revoke-again", "/v3/lease/revoke", {"ID": 2001}, "requested lease not found"),
    G("leases.gw.revoke-no-id", "/v3/lease/revoke", {}, "lease 0"),
    E("leases.ctl.grant", ["lease", "grant", "1"], "server-chosen ID", mask=("ID",),
      capture={"CTL_LEASE": "ID"}),
    E("leases.ctl.revoke-granted", ["lease", "revoke", "{HEX:CTL_LEASE}"]),
    E("leases.ctl.grant-bad-ttl", ["lease", "grant", "x"], "etcdctl refuses"),
    G("leases.gw.grant", "/v3/lease/grant", {"ID": L2, "TTL": 600}),
    G("leases.gw.put-a", "/v3/kv/put", put("ks/a", "1", lease=L2)),
    E("leases.ctl.put-b", ["put", "ks/b", "2", "--lease=" + L2_HEX]),
    E("leases.ctl.timetolive", ["lease", "timetolive", L2_HEX], "remaining TTL"),
    E("leases.ctl.timetolive-keys", ["lease", "timetolive", L2_HEX, "--keys"], sort=("keys",)),
    E("leases.ctl.timetolive-text", ["lease", "timetolive", L2_HEX, "--keys"], json_out=False,
      desc="keys in map order: one key only would be stable; compare the exit code",
      compare="status"),
    E("leases.ctl.timetolive-unknown", ["lease", "timetolive", "1234abcd"], "TTL -1"),
    E("leases.ctl.timetolive-unknown-text", ["lease", "timetolive", "1234abcd"],
      json_out=False, desc="already expired"),
    G("leases.gw.timetolive", "/v3/lease/timetolive", {"ID": L2}),
    G("leases.gw.timetolive-keys", "/v3/kv/lease/timetolive", {"ID": L2, "keys": True},
      sort=("keys",)),
    G("leases.gw.timetolive-unknown", "/v3/lease/timetolive", {"ID": 4242, "keys": True}),
    E("leases.ctl.list", ["lease", "list"], "leases 1000 and 3000", sort=("leases",)),
    G("leases.gw.list", "/v3/lease/leases", {}, sort=("leases",)),
    G("leases.gw.list-alias", "/v3/kv/lease/leases", {}, sort=("leases",)),
    E("leases.ctl.keep-alive-once", ["lease", "keep-alive", "--once", L2_HEX]),
    E("leases.ctl.keep-alive-once-text", ["lease", "keep-alive", "--once", L2_HEX],
      json_out=False),
    E("leases.ctl.keep-alive-once-unknown", ["lease", "keep-alive", "--once", "1234abcd"]),
    GS("leases.gw.keepalive", "/v3/lease/keepalive", {"ID": L2}, lines=1),
    GS("leases.gw.keepalive-unknown", "/v3/lease/keepalive", {"ID": 4242}, lines=1,
       desc="TTL 0, no error"),
    GS("leases.gw.keepalive-two", "/v3/lease/keepalive", raw='{"ID":%d} {"ID":4242}' % L2,
       lines=2),
    E("leases.ctl.revoke", ["lease", "revoke", L2_HEX], "both keys deleted in one revision"),
    E("leases.ctl.get-after-revoke", ["get", "ks/", "--prefix"]),
    E("leases.ctl.revoke-again", ["lease", "revoke", L2_HEX], "requested lease not found"),
    E("leases.ctl.revoke-unknown-text", ["lease", "revoke", "1234abcd"], json_out=False),
    E("leases.ctl.put-revoked", ["put", "ks/a", "x", "--lease=" + L2_HEX]),
    G("leases.gw.put-revoked", "/v3/kv/put", put("ks/a", "x", lease=L2)),
    G("leases.gw.timetolive-revoked", "/v3/lease/timetolive", {"ID": L2}),
    E("leases.ctl.list-after", ["lease", "list"], sort=("leases",)),
    # --- watches: history w/a=1, w/b=2, w/a=3, del w/a, w/c=4 (five revisions)
    G("watch.setup.a1", "/v3/kv/put", put("w/a", "1")),
    G("watch.setup.b2", "/v3/kv/put", put("w/b", "2")),
    G("watch.setup.a3", "/v3/kv/put", put("w/a", "3")),
    G("watch.setup.del-a", "/v3/kv/deleterange", rng("w/a")),
    G("watch.setup.c4", "/v3/kv/put", put("w/c", "4")),
    GS("watch.gw.history", "/v3/watch",
       {"create_request": {"key": b64("w/"), "range_end": b64("w0"),
                           "start_revision": "{CUR-4}"}}, lines=2,
       desc="created, then every event since at once"),
    GS("watch.gw.history-prev-kv", "/v3/watch",
       {"create_request": {"key": b64("w/"), "range_end": b64("w0"),
                           "start_revision": "{CUR-4}", "prev_kv": True}}, lines=2),
    GS("watch.gw.noput", "/v3/watch",
       {"create_request": {"key": b64("w/"), "range_end": b64("w0"),
                           "start_revision": "{CUR-4}", "filters": ["NOPUT"]}}, lines=2),
    GS("watch.gw.nodelete", "/v3/watch",
       {"create_request": {"key": b64("w/"), "range_end": b64("w0"),
                           "start_revision": "{CUR-4}", "filters": [1]}}, lines=2),
    GS("watch.gw.one-key", "/v3/watch",
       {"create_request": {"key": b64("w/a"), "start_revision": "{CUR-4}"}}, lines=2),
    GS("watch.gw.from-key", "/v3/watch",
       {"create_request": {"key": b64("w/b"), "range_end": "AA==",
                           "start_revision": "{CUR-2}"}}, lines=2),
    GS("watch.gw.watch-id", "/v3/watch",
       {"create_request": {"key": b64("w/c"), "start_revision": "{CUR}", "watch_id": 7}},
       lines=2, desc="client-chosen watch id"),
    GS("watch.gw.no-history", "/v3/watch",
       {"create_request": {"key": b64("w/a")}}, lines=1, desc="created only"),
    GS("watch.gw.future", "/v3/watch",
       {"create_request": {"key": b64("w/a"), "start_revision": "{CUR+1}"}}, lines=1),
    GS("watch.gw.compacted", "/v3/watch",
       {"create_request": {"key": b64("c/k1"), "start_revision": "{B+5}"}}, lines=2,
       desc="created, then canceled with compact_revision"),
    GS("watch.gw.two-watches", "/v3/watch",
       raw=json.dumps({"create_request": {"key": b64("w/b")}})
       + json.dumps({"create_request": {"key": b64("w/c"), "start_revision": "{CUR}"}}),
       lines=3, desc="ids 0 and 1 on one stream; only the second has history (the order of "
       "two watches' events is timing-dependent in etcd: its unsynced watchers are served "
       "every 100 ms)"),
    GS("watch.gw.cancel", "/v3/watch",
       raw=json.dumps({"create_request": {"key": b64("w/b")}})
       + json.dumps({"cancel_request": {"watch_id": 0}}), lines=2,
       desc="created, then canceled"),
    GS("watch.gw.dup-watch-id", "/v3/watch",
       raw=json.dumps({"create_request": {"key": b64("w/b"), "watch_id": 3}})
       + json.dumps({"create_request": {"key": b64("w/c"), "watch_id": 3}}), lines=2,
       desc="the second create with the same id"),
    GS("watch.gw.progress", "/v3/watch",
       raw=json.dumps({"create_request": {"key": b64("w/b")}})
       + json.dumps({"progress_request": {}}), lines=2, desc="watch_id -1, current revision"),
    GS("watch.gw.bad-json", "/v3/watch", raw="xx", lines=1),
    E("watch.ctl.history", ["watch", "--rev={CUR-4}", "w/", "--prefix"], json_out=False,
      timeout=2, desc="PUT/DELETE lines until killed"),
    E("watch.ctl.prev-kv", ["watch", "--rev={CUR-4}", "w/a", "--prev-kv"], json_out=False,
      timeout=2),
    E("watch.ctl.json", ["watch", "--rev={CUR-2}", "w/", "--prefix"], timeout=2),
    E("watch.ctl.compacted", ["watch", "--rev={B+5}", "c/k1"], json_out=False, timeout=2),
    # --- cluster
    G("cluster.gw.list", "/v3/cluster/member/list", {}, mask=MEMBER_MASK),
    E("cluster.ctl.list", ["member", "list"], mask=MEMBER_MASK),
    E("cluster.ctl.list-text", ["member", "list"], json_out=False, compare="status"),
    E("cluster.ctl.update-same", ["member", "update", "{HEX:SELF}", "--peer-urls={PEER}"],
      mask=MEMBER_MASK),
    G("cluster.gw.update-same", "/v3/cluster/member/update",
      {"ID": "{VAR:SELF}", "peerURLs": ["{PEER}"]}, mask=MEMBER_MASK),
    E("cluster.ctl.update-unknown", ["member", "update", "1234", "--peer-urls=http://x:1"]),
    G("cluster.gw.update-unknown", "/v3/cluster/member/update",
      {"ID": 4660, "peerURLs": ["http://127.0.0.1:9"]}),
    E("cluster.ctl.add-existing-peer", ["member", "add", "x", "--peer-urls={PEER}"],
      "Peer URLs already exists"),
    E("cluster.ctl.add-learner", ["member", "add", "l1", "--learner",
                                  "--peer-urls=http://127.0.0.1:9"],
      mask=MEMBER_MASK, sort=("members",), capture={"LEARNER": "member.ID"}),
    E("cluster.ctl.add-second-learner", ["member", "add", "l2", "--learner",
                                         "--peer-urls=http://127.0.0.1:10"],
      "too many learner members"),
    E("cluster.ctl.list-learner", ["member", "list"], mask=MEMBER_MASK, sort=("members",)),
    G("cluster.gw.list-learner", "/v3/cluster/member/list", {}, mask=MEMBER_MASK,
      sort=("members",)),
    E("cluster.ctl.promote-learner", ["member", "promote", "{HEX:LEARNER}"],
      "not in sync with the leader"),
    G("cluster.gw.promote-learner", "/v3/cluster/member/promote", {"ID": "{VAR:LEARNER}"}),
    E("cluster.ctl.promote-voter", ["member", "promote", "{HEX:SELF}"]),
    E("cluster.ctl.promote-unknown", ["member", "promote", "1234"]),
    E("cluster.ctl.remove-learner", ["member", "remove", "{HEX:LEARNER}"], mask=MEMBER_MASK),
    E("cluster.ctl.remove-again", ["member", "remove", "{HEX:LEARNER}"], "member not found"),
    G("cluster.gw.remove-unknown", "/v3/cluster/member/remove", {"ID": 4660}),
    G("cluster.gw.add-learner-existing-peer", "/v3/cluster/member/add",
      {"peerURLs": ["{PEER}"], "isLearner": True}, "Peer URLs already exists"),
    G("cluster.gw.add-learner", "/v3/cluster/member/add",
      {"peerURLs": ["http://127.0.0.1:12"], "isLearner": True}, mask=MEMBER_MASK,
      sort=("members",), capture={"LEARNER2": "member.ID"}),
    G("cluster.gw.promote-learner2", "/v3/cluster/member/promote", {"ID": "{VAR:LEARNER2}"}),
    G("cluster.gw.remove-learner", "/v3/cluster/member/remove", {"ID": "{VAR:LEARNER2}"},
      mask=MEMBER_MASK),
    G("cluster.gw.add-no-urls", "/v3/cluster/member/add", {}),
    G("cluster.gw.add-bad-url", "/v3/cluster/member/add", {"peerURLs": ["not a url"]}),
    E("cluster.ctl.list-after", ["member", "list"], mask=MEMBER_MASK),
    G("cluster.gw.promote-unknown", "/v3/cluster/member/promote", {"ID": 4660}),
    G("cluster.gw.remove-self-no-id", "/v3/cluster/member/remove", {}, "ID 0: member not found"),
    # --- maintenance
    E("maint.ctl.status", ["endpoint", "status"], mask=STATUS_MASK),
    G("maint.gw.status", "/v3/maintenance/status", {}, mask=STATUS_MASK),
    E("maint.ctl.health", ["endpoint", "health"], mask=("took",)),
    E("maint.ctl.alarm-list", ["alarm", "list"]),
    E("maint.ctl.alarm-list-text", ["alarm", "list"], json_out=False),
    G("maint.gw.alarm-get", "/v3/maintenance/alarm", {"action": "GET"}),
    G("maint.gw.alarm-get-empty", "/v3/maintenance/alarm", {}),
    E("maint.ctl.alarm-disarm", ["alarm", "disarm"]),
    G("maint.gw.alarm-deactivate", "/v3/maintenance/alarm",
      {"action": "DEACTIVATE", "memberID": "{VAR:SELF}", "alarm": "NOSPACE"}),
    E("maint.ctl.hashkv", ["endpoint", "hashkv"]),
    E("maint.ctl.hashkv-rev", ["endpoint", "hashkv", "--rev={CUR-3}"]),
    E("maint.ctl.defrag", ["defrag"], json_out=False),
    G("maint.gw.defrag", "/v3/maintenance/defragment", {}),
    E("maint.ctl.snapshot", ["snapshot", "save", "{TMP}/snap.db"], json_out=False),
    E("maint.ctl.snapshot-bad-dir", ["snapshot", "save", "{TMP}/no/such/dir/snap.db"],
      json_out=False),
    E("maint.ctl.move-leader-self", ["move-leader", "{HEX:SELF}"]),
    E("maint.ctl.move-leader-unknown", ["move-leader", "1234"], "bad leader transferee"),
    G("maint.gw.transfer-leadership-unknown", "/v3/maintenance/transfer-leadership",
      {"targetID": 4660}),
    # --- v3 auth: users, roles, permissions (auth is off here: root and u exist)
    E("authz.ctl.user-list", ["user", "list"]),
    E("authz.ctl.user-add", ["user", "add", "alice:apw"]),
    E("authz.ctl.user-add-again", ["user", "add", "alice:apw"], "user name already exists"),
    G("authz.gw.user-add-empty", "/v3/auth/user/add", {"password": "x"}, "user name is empty"),
    G("authz.gw.user-add-bob", "/v3/auth/user/add", {"name": "bob", "password": "bpw"}),
    E("authz.ctl.user-get", ["user", "get", "alice"]),
    E("authz.ctl.user-get-missing", ["user", "get", "nobody"], "user name not found"),
    G("authz.gw.user-get-missing", "/v3/auth/user/get", {"name": "nobody"}),
    E("authz.ctl.role-add", ["role", "add", "r1"]),
    E("authz.ctl.role-add-again", ["role", "add", "r1"], "role name already exists"),
    G("authz.gw.role-add-r2", "/v3/auth/role/add", {"name": "r2"}),
    G("authz.gw.role-add-empty", "/v3/auth/role/add", {}, "role name is empty"),
    E("authz.ctl.grant-read", ["role", "grant-permission", "r1", "read", "c/k1"]),
    E("authz.ctl.grant-prefix", ["role", "grant-permission", "r1", "readwrite", "k/",
                                 "--prefix"]),
    E("authz.ctl.grant-range", ["role", "grant-permission", "r1", "write", "a", "b"]),
    E("authz.ctl.grant-from-key", ["role", "grant-permission", "r2", "read", "z",
                                   "--from-key"]),
    E("authz.ctl.grant-bad-type", ["role", "grant-permission", "r1", "bogus", "a"]),
    E("authz.ctl.grant-missing-role", ["role", "grant-permission", "nope", "read", "a"],
      "role name not found"),
    G("authz.gw.grant-write", "/v3/auth/role/grant",
      {"name": "r2", "perm": {"permType": "WRITE", "key": b64("w/"), "range_end": b64("w0")}}),
    E("authz.ctl.role-get", ["role", "get", "r1"], "permissions sorted by key"),
    E("authz.ctl.role-get-text", ["role", "get", "r1"], json_out=False),
    G("authz.gw.role-get", "/v3/auth/role/get", {"role": "r2"}),
    E("authz.ctl.role-get-missing", ["role", "get", "nope"], "role name not found"),
    E("authz.ctl.role-list", ["role", "list"]),
    E("authz.ctl.revoke-perm", ["role", "revoke-permission", "r1", "c/k1"]),
    E("authz.ctl.revoke-perm-again", ["role", "revoke-permission", "r1", "c/k1"],
      "permission is not granted to the role"),
    E("authz.ctl.revoke-perm-range", ["role", "revoke-permission", "r1", "a", "b"]),
    E("authz.ctl.revoke-perm-missing-role", ["role", "revoke-permission", "nope", "a"]),
    E("authz.ctl.grant-role", ["user", "grant-role", "alice", "r1"]),
    E("authz.ctl.grant-role-again", ["user", "grant-role", "alice", "r1"]),
    E("authz.ctl.grant-role-r2", ["user", "grant-role", "alice", "r2"]),
    E("authz.ctl.grant-role-missing", ["user", "grant-role", "alice", "nope"]),
    E("authz.ctl.grant-role-missing-user", ["user", "grant-role", "nobody", "r1"]),
    E("authz.ctl.user-get-roles", ["user", "get", "alice"]),
    E("authz.ctl.user-get-detail", ["user", "get", "alice", "--detail"], json_out=False),
    E("authz.ctl.revoke-role-missing", ["user", "revoke-role", "alice", "nope"]),
    E("authz.ctl.revoke-role-r2", ["user", "revoke-role", "alice", "r2"]),
    G("authz.gw.user-grant-bob", "/v3/auth/user/grant", {"user": "bob", "role": "r2"}),
    G("authz.gw.user-revoke-bob", "/v3/auth/user/revoke", {"name": "bob", "role": "r2"}),
    G("authz.gw.user-get-bob", "/v3/auth/user/get", {"name": "bob"}),
    E("authz.ctl.passwd", ["user", "passwd", "alice", "--interactive=false"], stdin="apw2\n"),
    E("authz.ctl.passwd-missing", ["user", "passwd", "nobody", "--interactive=false"],
      stdin="x\n"),
    G("authz.gw.changepw-missing", "/v3/auth/user/changepw", {"name": "nobody",
                                                               "password": "x"}),
    E("authz.ctl.user-list-all", ["user", "list"]),
    G("authz.gw.user-list", "/v3/auth/user/list", {}),
    G("authz.gw.role-list", "/v3/auth/role/list", {}),
    # root rules
    E("authz.ctl.delete-root", ["user", "delete", "root"]),
    E("authz.ctl.enable-no-root", ["auth", "enable"], "root user does not exist"),
    E("authz.ctl.add-root", ["user", "add", "root:rootpw"]),
    G("authz.gw.enable-no-root-role", "/v3/auth/enable", {}),
    E("authz.ctl.root-role-grant", ["user", "grant-role", "root", "root"]),
    E("authz.ctl.role-get-root", ["role", "get", "root"]),
    E("authz.ctl.enable", ["auth", "enable"], json_out=False),
    E("authz.ctl.enable-again", ["auth", "enable"], json_out=False),
    # auth on: alice has readwrite k/ (prefix), r2 revoked; bob has none
    E("authz.ctl.alice-put-k", ["--user=alice:apw2", "put", "k/x", "1"]),
    E("authz.ctl.alice-get-k", ["--user=alice:apw2", "get", "k/", "--prefix"]),
    E("authz.ctl.alice-put-denied", ["--user=alice:apw2", "put", "c/zz", "1"]),
    E("authz.ctl.alice-get-denied", ["--user=alice:apw2", "get", "c/k1"]),
    E("authz.ctl.alice-old-password", ["--user=alice:apw", "get", "k/x"]),
    E("authz.ctl.alice-user-list", ["--user=alice:apw2", "user", "list"], "permission denied"),
    # cluster and maintenance calls as a non-root user, and with no user
    E("authz.ctl.alice-member-list", ["--user=alice:apw2", "member", "list"],
      mask=MEMBER_MASK),
    E("authz.ctl.alice-member-add", ["--user=alice:apw2", "member", "add", "l3", "--learner",
                                     "--peer-urls=http://127.0.0.1:13"]),
    E("authz.ctl.alice-member-remove", ["--user=alice:apw2", "member", "remove", "1234"]),
    E("authz.ctl.alice-member-update", ["--user=alice:apw2", "member", "update", "{HEX:SELF}",
                                        "--peer-urls={PEER}"]),
    E("authz.ctl.alice-member-promote", ["--user=alice:apw2", "member", "promote", "1234"]),
    E("authz.ctl.alice-status", ["--user=alice:apw2", "endpoint", "status"], mask=STATUS_MASK),
    E("authz.ctl.alice-alarm-list", ["--user=alice:apw2", "alarm", "list"]),
    E("authz.ctl.alice-hashkv", ["--user=alice:apw2", "endpoint", "hashkv"]),
    E("authz.ctl.alice-defrag", ["--user=alice:apw2", "defrag"], json_out=False),
    E("authz.ctl.alice-move-leader", ["--user=alice:apw2", "move-leader", "{HEX:SELF}"]),
    E("authz.ctl.alice-lease-list", ["--user=alice:apw2", "lease", "list"], sort=("leases",)),
    E("authz.ctl.alice-role-get", ["--user=alice:apw2", "role", "get", "r1"]),
    E("authz.ctl.alice-user-get-self", ["--user=alice:apw2", "user", "get", "alice"]),
    E("authz.ctl.no-user-member-list", ["member", "list"], mask=MEMBER_MASK),
    E("authz.ctl.no-user-status", ["endpoint", "status"], mask=STATUS_MASK),
    E("authz.ctl.no-user-hashkv", ["endpoint", "hashkv"]),
    E("authz.ctl.no-user-defrag", ["defrag"], json_out=False),
    E("authz.ctl.no-user-alarm-list", ["alarm", "list"]),
    E("authz.ctl.root-member-add", ["--user=root:rootpw", "member", "add", "l4", "--learner",
                                    "--peer-urls=http://127.0.0.1:14"], mask=MEMBER_MASK,
      sort=("members",), capture={"LEARNER3": "member.ID"}),
    E("authz.ctl.root-member-remove", ["--user=root:rootpw", "member", "remove",
                                       "{HEX:LEARNER3}"], mask=MEMBER_MASK),
    G("authz.gw.login-alice", "/v3/auth/authenticate", {"name": "alice", "password": "apw2"}),
    G("authz.gw.login-bob", "/v3/auth/authenticate", {"name": "bob", "password": "bpw"}),
    G("authz.gw.alice-put", "/v3/kv/put", put("k/y", "2"),
      headers={"Authorization": "{TOKEN:alice}"}),
    G("authz.gw.alice-range", "/v3/kv/range", rng("k/", "k0"),
      headers={"Authorization": "{TOKEN:alice}"}),
    G("authz.gw.alice-delete-denied", "/v3/kv/deleterange", rng("c/k1"),
      headers={"Authorization": "{TOKEN:alice}"}),
    G("authz.gw.alice-txn-denied", "/v3/kv/txn",
      {"success": [op_put("k/z", "1"), op_get("c/k1")]},
      headers={"Authorization": "{TOKEN:alice}"}),
    G("authz.gw.bob-range-denied", "/v3/kv/range", rng("k/x"),
      headers={"Authorization": "{TOKEN:bob}"}),
    G("authz.gw.bob-lease-grant", "/v3/lease/grant", {"ID": 5000, "TTL": 60},
      headers={"Authorization": "{TOKEN:bob}"}),
    G("authz.gw.bob-lease-revoke", "/v3/lease/revoke", {"ID": 5000},
      headers={"Authorization": "{TOKEN:bob}"}),
    G("authz.gw.bob-user-add-denied", "/v3/auth/user/add", {"name": "eve", "password": "e"},
      headers={"Authorization": "{TOKEN:bob}"}),
    G("authz.gw.alice-defrag", "/v3/maintenance/defragment", {},
      headers={"Authorization": "{TOKEN:alice}"}, desc="auth: permission denied, code 2"),
    G("authz.gw.no-token-hash", "/v3/maintenance/hash", {}),
    G("authz.gw.alice-member-remove", "/v3/cluster/member/remove", {"ID": 4660},
      headers={"Authorization": "{TOKEN:alice}"}),
    G("authz.gw.alice-member-list", "/v3/cluster/member/list", {}, mask=MEMBER_MASK,
      headers={"Authorization": "{TOKEN:alice}"}),
    G("authz.gw.login-root2", "/v3/auth/authenticate", {"name": "root", "password": "rootpw"}),
    G("authz.gw.root-user-get", "/v3/auth/user/get", {"name": "root"},
      headers={"Authorization": "{TOKEN:root2}"}),
    E("authz.ctl.root-revoke-root-role", ["--user=root:rootpw", "user", "revoke-role", "root",
                                          "root"], "cannot revoke root's root role"),
    E("authz.ctl.root-delete-root", ["--user=root:rootpw", "user", "delete", "root"]),
    E("authz.ctl.root-role-delete-root", ["--user=root:rootpw", "role", "delete", "root"]),
    E("authz.ctl.root-role-delete", ["--user=root:rootpw", "role", "delete", "r2"]),
    E("authz.ctl.root-role-delete-missing", ["--user=root:rootpw", "role", "delete", "r2"]),
    E("authz.ctl.root-user-delete-bob", ["--user=root:rootpw", "user", "delete", "bob"]),
    E("authz.ctl.root-user-delete-missing", ["--user=root:rootpw", "user", "delete", "bob"]),
    E("authz.ctl.disable", ["--user=root:rootpw", "auth", "disable"], json_out=False),
    E("authz.ctl.disable-again", ["auth", "disable"], json_out=False),
    E("authz.ctl.after", ["get", "k/", "--prefix"], "auth off again"),
    E("authz.ctl.user-get-root", ["user", "get", "root"]),
]

# ============================================================================ the Lock service
# etcd's v3lock (clientv3's concurrency mutex run on the server) through the gateway: a lock's
# key is name/<lease in hex>; errors come back as code 2 (Unknown), HTTP 500. Waiting for a
# held lock is tested in node/tests/v3_concurrency.rs (a blocked call does not fit a sequential corpus).
LK_A, LK_B = 6000, 6001     # hex 1770, 1771
CASES += [
    G("lock.gw.grant-a", "/v3/lease/grant", {"ID": LK_A, "TTL": 600}),
    G("lock.gw.grant-b", "/v3/lease/grant", {"ID": LK_B, "TTL": 600}),
    G("lock.gw.lock", "/v3/lock/lock", {"name": b64("lk"), "lease": LK_A}, "free: acquired"),
    G("lock.gw.lock-again", "/v3/lock/lock", {"name": b64("lk"), "lease": LK_A},
      "the same lease again: its key, the header of a txn that wrote nothing"),
    G("lock.gw.range", "/v3/kv/range", {"key": b64("lk/"), "range_end": b64("lk0")},
      "the lock's key, with its lease"),
    G("lock.gw.unknown-lease", "/v3/lock/lock", {"name": b64("lk"), "lease": 12345}),
    G("lock.gw.negative-lease", "/v3/lock/lock", {"name": b64("lk"), "lease": -1}),
    G("lock.gw.empty-name", "/v3/lock/lock", {"lease": LK_B}, "prefix \"/\""),
    G("lock.gw.beta", "/v3beta/lock/lock", {"name": b64("lk2"), "lease": LK_B}),
    G("lock.gw.unlock-missing", "/v3/lock/unlock", {"key": b64("nope")}),
    G("lock.gw.unlock-no-key", "/v3/lock/unlock", {}, "key is not provided, code 2"),
    G("lock.gw.bad-json", "/v3/lock/lock", raw="garbage"),
    G("lock.gw.wrong-type", "/v3/lock/lock", {"name": 5}),
    G("lock.gw.get", "/v3/lock/lock", method="GET"),
    G("lock.gw.unlock-get", "/v3/lock/unlock", method="GET"),
    G("lock.gw.wrong-case", "/v3/lock/Lock", {}),
    G("lock.gw.unlock", "/v3/lock/unlock", {"key": b64("lk/1770")}),
    G("lock.gw.lock-b", "/v3/lock/lock", {"name": b64("lk"), "lease": LK_B},
      "released: the other lease takes it"),
    G("lock.gw.revoke-a", "/v3/lease/revoke", {"ID": LK_A}),
    G("lock.gw.revoke-b", "/v3/lease/revoke", {"ID": LK_B}, "deletes lk/1771, lk2/1771, /1771"),
    G("lock.gw.range-after", "/v3/kv/range", {"key": b64("\0"), "range_end": b64("\0"),
                                               "count_only": True}),
]

# ======================================================================== the Election service
# etcd's v3election (clientv3's concurrency election run on the server) through the gateway.
# A Campaign that waits and Proclaim/Resign with lease 0 (which grant a lease of their own) are
# tested in node/tests/v3_concurrency.rs.
EL_A, EL_B = 7000, 7001     # hex 1b58, 1b59
EL_KEY = b64("el/1b58")
CASES += [
    G("election.gw.grant-a", "/v3/lease/grant", {"ID": EL_A, "TTL": 600}),
    G("election.gw.grant-b", "/v3/lease/grant", {"ID": EL_B, "TTL": 600}),
    G("election.gw.leader-none", "/v3/election/leader", {"name": b64("el")},
      "election: no leader, code 2"),
    G("election.gw.campaign", "/v3/election/campaign",
      {"name": b64("el"), "lease": EL_A, "value": b64("a")}, "no leader: elected at once",
      capture={"EL_REV": "leader.rev"}),
    G("election.gw.campaign-again", "/v3/election/campaign",
      {"name": b64("el"), "lease": EL_A, "value": b64("a")}, "the same lease and value"),
    G("election.gw.campaign-new-value", "/v3/election/campaign",
      {"name": b64("el"), "lease": EL_A, "value": b64("b")},
      "the same lease, a new value: proclaimed; the header is the first txn's"),
    G("election.gw.leader", "/v3/election/leader", {"name": b64("el")}),
    GS("election.gw.observe", "/v3/election/observe", {"name": b64("el")},
       desc="the current leader first"),
    G("election.gw.proclaim", "/v3/election/proclaim",
      {"leader": {"name": b64("el"), "key": EL_KEY, "rev": "{VAR:EL_REV}", "lease": EL_A},
       "value": b64("c")}),
    G("election.gw.proclaim-wrong-rev", "/v3/election/proclaim",
      {"leader": {"name": b64("el"), "key": EL_KEY, "rev": 1, "lease": EL_A},
       "value": b64("x")}, "election: not leader"),
    G("election.gw.proclaim-no-leader", "/v3/election/proclaim", {"value": b64("x")},
      "\"leader\" field must be provided"),
    G("election.gw.resign-wrong-rev", "/v3/election/resign",
      {"leader": {"name": b64("el"), "key": EL_KEY, "rev": 1, "lease": EL_A}},
      "no error, nothing deleted"),
    G("election.gw.resign-no-leader", "/v3/election/resign", {}),
    G("election.gw.campaign-unknown-lease", "/v3/election/campaign",
      {"name": b64("el"), "lease": 12345, "value": b64("x")}),
    G("election.gw.campaign-empty-name", "/v3/election/campaign",
      {"lease": EL_B, "value": b64("z")}, "prefix \"/\""),
    G("election.gw.leader-empty-name", "/v3/election/leader", {}),
    G("election.gw.beta-leader", "/v3beta/election/leader", {"name": b64("el")}),
    G("election.gw.bad-json", "/v3/election/campaign", raw="garbage"),
    G("election.gw.observe-bad-json", "/v3/election/observe", raw="garbage"),
    G("election.gw.wrong-type", "/v3/election/leader", {"name": 5}),
    G("election.gw.get", "/v3/election/leader", method="GET"),
    G("election.gw.observe-get", "/v3/election/observe", method="GET"),
    G("election.gw.wrong-case", "/v3/election/Leader", {}),
    G("election.gw.resign", "/v3/election/resign",
      {"leader": {"name": b64("el"), "key": EL_KEY, "rev": "{VAR:EL_REV}", "lease": EL_A}}),
    G("election.gw.leader-after-resign", "/v3/election/leader", {"name": b64("el")}),
    G("election.gw.campaign-b", "/v3/election/campaign",
      {"name": b64("el"), "lease": EL_B, "value": b64("B")}, "resigned: the other lease leads"),
    G("election.gw.revoke-a", "/v3/lease/revoke", {"ID": EL_A}),
    G("election.gw.revoke-b", "/v3/lease/revoke", {"ID": EL_B}),
    G("election.gw.leader-after-revoke", "/v3/election/leader", {"name": b64("el")}),
]


# ----------------------------------------------------------------------------- running
REL = re.compile(r"\{(B|CUR)([+-]\d+)?\}")
VAR = re.compile(r"\{(HEX|VAR):(\w+)\}|\{(PEER|TMP)\}")


class Runner:
    def __init__(self, endpoint, etcdctl, verbose):
        self.ep = endpoint
        self.host, _, port = endpoint.rpartition(":")
        self.port = int(port)
        self.etcdctl = etcdctl
        self.verbose = verbose
        self.base = None
        self.tokens = {}
        self.tmp = tempfile.mkdtemp(prefix="v3corpus-")
        # the member's own ID and peer URL, for member update/promote/move-leader cases
        self.vars = {}
        self.peer = None
        try:
            _, _, data = self.http("POST", "/v3/cluster/member/list", b"{}", {})
            for m in json.loads(data).get("members", []):
                if "http://" + endpoint in m.get("clientURLs", []):
                    self.vars["SELF"] = int(m["ID"])
                    self.peer = m["peerURLs"][0]
        except Exception as e:  # noqa: BLE001 - the member cases then fail visibly
            print("member list failed:", repr(e), file=sys.stderr)

    def env(self):
        return {"endpoint": self.ep, "peer": self.peer, "tmp": self.tmp}

    def stream(self, method, path, body, headers, lines, deadline):
        """Send one request and read at most `lines` lines of its (chunked) answer, for at
        most `deadline` seconds; then close. Returns (status, headers, lines, timed_out)."""
        end = time.monotonic() + deadline
        c = http.client.HTTPConnection(self.host, self.port, timeout=deadline)
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            out, timed_out = [], False
            while len(out) < lines:
                left = end - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                c.sock.settimeout(left)
                try:
                    ln = r.readline()
                except (socket.timeout, TimeoutError):
                    timed_out = True
                    break
                if not ln:
                    break
                if ln.strip():
                    out.append(ln.decode("utf-8", "replace").rstrip("\n"))
            return r.status, [(k, v) for k, v in r.getheaders()], out, timed_out
        finally:
            c.close()

    def sub_vars(self, s):
        def one(m):
            if m.group(3) == "PEER":
                return self.peer or ""
            if m.group(3) == "TMP":
                return self.tmp
            v = self.vars.get(m.group(2), 0)
            return "%x" % v if m.group(1) == "HEX" else str(v)
        return VAR.sub(one, s)

    def capture(self, case, j):
        for name, path in case.get("capture", {}).items():
            v = j
            for part in path.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            if v is not None:
                self.vars[name] = int(v)

    def http(self, method, path, body, headers, timeout=15):
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            return r.status, [(k, v) for k, v in r.getheaders()], data
        finally:
            c.close()

    def current(self):
        _, _, data = self.http("POST", "/v3/kv/range", json.dumps({"key": "AA=="}), {})
        return int(json.loads(data)["header"]["revision"])

    def sub_str(self, s, cur):
        def one(m):
            n = int(m.group(2) or 0)
            return str((self.base if m.group(1) == "B" else cur()) + n)
        return self.sub_vars(REL.sub(one, s))

    def sub(self, obj, cur):
        """Resolve {B+N}/{CUR+N}/{VAR:X}: a whole-string template in JSON becomes a number."""
        if isinstance(obj, str):
            if REL.fullmatch(obj) or re.fullmatch(r"\{VAR:\w+\}", obj):
                return int(self.sub_str(obj, cur))
            return self.sub_str(obj, cur)
        if isinstance(obj, list):
            return [self.sub(x, cur) for x in obj]
        if isinstance(obj, dict):
            return {k: self.sub(v, cur) for k, v in obj.items()}
        return obj

    def run_case(self, case):
        memo = {}

        def cur():
            if "c" not in memo:
                memo["c"] = self.current()
            return memo["c"]

        rec = {k: case[k] for k in ("id", "kind", "desc", "compare")}
        if case["kind"] == "gw":
            if case["raw"] is not None:
                body = self.sub_str(case["raw"], cur).encode()
            elif case["body"] is not None:
                body = json.dumps(self.sub(case["body"], cur)).encode()
            else:
                body = None
            headers = {}
            for k, v in case["headers"].items():
                m = re.fullmatch(r"\{TOKEN:(\w+)\}", v)
                headers[k] = self.tokens.get(m.group(1), "") if m else v
            rec["request"] = {"method": case["method"], "path": case["path"],
                              "body": None if body is None else body.decode()[:65536],
                              "body_truncated": body is not None and len(body) > 65536,
                              "headers": case["headers"]}
            if case.get("lines"):
                try:
                    st, hdrs, lines, timed_out = self.stream(
                        case["method"], case["path"], body, headers, case["lines"],
                        case["deadline"])
                except Exception as e:  # noqa: BLE001 - recorded, not fatal
                    rec["runner_error"] = repr(e)
                    return rec
                rec["response"] = {"status": st, "headers": hdrs, "lines": lines,
                                   "timed_out": timed_out}
                rec["base"] = self.base
                rec["env"] = self.env()
                return rec
            try:
                st, hdrs, data = self.http(case["method"], case["path"], body, headers)
            except Exception as e:  # noqa: BLE001 - recorded, not fatal
                rec["runner_error"] = repr(e)
                return rec
            # body_text: the exact bytes (replayed byte for byte by detcd's gateway tests)
            resp = {"status": st, "headers": hdrs, "body_text": data.decode("utf-8", "replace")}
            try:
                resp["body_json"] = json.loads(data) if data else None
            except ValueError:
                pass
            rec["response"] = resp
            j = resp.get("body_json")
            for pre in ("auth.gw.login-", "authz.gw.login-"):
                if case["id"].startswith(pre) and isinstance(j, dict) and "token" in j:
                    self.tokens[case["id"][len(pre):]] = j["token"]
            if isinstance(j, dict):
                self.capture(case, j)
            if self.base is None and isinstance(j, dict) and "header" in j:
                self.base = int(j["header"]["revision"])
        else:
            args = [self.sub_str(a, cur) for a in case["args"]]
            stdin = self.sub_str(case["stdin"], cur) if case["stdin"] else None
            cmd = [self.etcdctl, "--endpoints", self.ep, "--command-timeout=5s"]
            if case["json_out"]:
                cmd += ["-w", "json"]
            rec["request"] = {"args": case["args"], "stdin": case["stdin"]}
            env = dict(os.environ, ETCDCTL_API="3")
            killed = False
            try:
                p = subprocess.run(cmd + args, input=(stdin or "").encode(), env=env,
                                   capture_output=True, timeout=case.get("timeout") or 30)
                rc, o, e = p.returncode, p.stdout, p.stderr
            except subprocess.TimeoutExpired as ex:
                if not case.get("timeout"):
                    rec["runner_error"] = repr(ex)
                    return rec
                killed, rc, o, e = True, "killed", ex.stdout or b"", ex.stderr or b""
            except Exception as ex:  # noqa: BLE001
                rec["runner_error"] = repr(ex)
                return rec
            out = o.decode("utf-8", "replace")
            resp = {"rc": rc, "stderr": e.decode("utf-8", "replace"), "killed": killed}
            try:
                resp["stdout_json"] = json.loads(out)
            except ValueError:
                resp["stdout"] = out
            rec["response"] = resp
            j = resp.get("stdout_json")
            if self.base is None and isinstance(j, dict) and "header" in j:
                self.base = int(j["header"]["revision"])
            if isinstance(j, dict):
                self.capture(case, j)
        rec["base"] = self.base
        rec["env"] = self.env()
        return rec


def cmd_run(args):
    r = Runner(args.endpoints, args.etcdctl, args.verbose)
    only = re.compile(args.only) if args.only else None
    out = open(args.out, "w") if args.out else sys.stdout
    n = 0
    for case in CASES:
        if only and not only.search(case["id"]) and not case["id"].startswith("base."):
            continue
        rec = r.run_case(case)
        out.write(json.dumps(rec, sort_keys=True) + "\n")
        n += 1
        if args.verbose:
            resp = rec.get("response", {})
            print(case["id"], resp.get("status", resp.get("rc")), file=sys.stderr)
        time.sleep(0.01)
    if out is not sys.stdout:
        out.close()
    shutil.rmtree(r.tmp, ignore_errors=True)
    print(f"{n} cases recorded", file=sys.stderr)


# ----------------------------------------------------------------------------- normalising
REV_KEYS = {"revision", "create_revision", "mod_revision", "compact_revision"}
ID_KEYS = {"cluster_id", "member_id"}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
HDR_IGNORED = {"date", "content-length", "transfer-encoding"}


class Norm:
    def __init__(self, recs):
        self.base = next((r.get("base") for r in recs if r.get("base") is not None), 0)
        env = next((r["env"] for r in recs if r.get("env")), {})
        # longest first: the client URL contains the endpoint
        subs = [("http://" + env["endpoint"], "<client-url>")] if env.get("endpoint") else []
        if env.get("peer"):
            subs.append((env["peer"], "<peer-url>"))
        if env.get("endpoint"):
            subs.append((env["endpoint"], "<endpoint>"))
        if env.get("tmp"):
            subs.append((env["tmp"], "<tmp>"))
        self.subs = subs
        self.mask = set()
        self.sort = set()

    def for_case(self, case):
        self.mask = set(case.get("mask", ()))
        self.sort = set(case.get("sort", ()))
        return self

    def string(self, s):
        for a, b in self.subs:
            s = s.replace(a, b)
        return s

    def rel(self, v):
        n = int(v) - self.base
        return "r%+d" % n

    def value(self, obj):
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                if k in REV_KEYS and isinstance(v, (int, str)) and str(v).lstrip("-").isdigit():
                    out[k] = self.rel(v) if isinstance(v, int) else "'%s'" % self.rel(v)
                elif k in ID_KEYS:
                    out[k] = "<id>"
                elif k == "raft_term":
                    out[k] = "<term>"
                elif k == "token":
                    out[k] = "<token>"
                elif k in self.mask:
                    out[k] = "<masked>"
                elif k == "raftTerm":
                    out[k] = "<term>"
                elif k in self.sort and isinstance(v, list):
                    out[k] = sorted((self.value(x) for x in v),
                                    key=lambda x: json.dumps(x, sort_keys=True))
                else:
                    out[k] = self.value(v)
            return out
        if isinstance(obj, list):
            return [self.value(x) for x in obj]
        if isinstance(obj, str) and TS.match(obj):
            return "<ts>"
        if isinstance(obj, str):
            return self.string(obj)
        return obj

    def text(self, s):
        # "compacted revision 37" and the like
        s = self.string(s)
        return re.sub(r"\b(revision )(\d+)\b", lambda m: m.group(1) + self.rel(m.group(2)), s)

    def stdout(self, s):
        """etcdctl's stdout: one JSON value, a sequence of JSON values (watch -w json), or text."""
        dec, i, vals = json.JSONDecoder(), 0, []
        while True:
            while i < len(s) and s[i].isspace():
                i += 1
            if i == len(s):
                break
            try:
                v, i = dec.raw_decode(s, i)
            except ValueError:
                return {"stdout_text": self.text(s)}
            vals.append(self.value(v))
        if not vals:
            return {"stdout_text": self.text(s)}
        return {"stdout_jsons": vals}


def normalise(rec, nz):
    case = CASE_BY_ID.get(rec["id"], rec)
    mode = case.get("compare", "full")
    nz = nz.for_case(case)
    out = {"id": rec["id"], "compare": mode}
    if mode == "none":
        return out
    if "runner_error" in rec:
        out["runner_error"] = rec["runner_error"]
        return out
    resp = rec.get("response") or {}
    if rec["kind"] == "gw":
        out["status"] = resp.get("status")
        if mode == "status":
            return out
        out["headers"] = sorted([k, v] for k, v in resp.get("headers", [])
                                if k.lower() not in HDR_IGNORED)
        if "lines" in resp:
            # a stream: each line as JSON (or text), and whether the deadline ended it
            out["lines"] = []
            for ln in resp["lines"]:
                try:
                    out["lines"].append(nz.value(json.loads(ln)))
                except ValueError:
                    out["lines"].append(nz.string(ln))
            out["timed_out"] = resp.get("timed_out")
        elif resp.get("body_json") is not None:
            out["body"] = nz.value(resp["body_json"])
        else:
            out["body_text"] = resp.get("body_text")
    else:
        out["rc"] = resp.get("rc")
        if mode == "status":
            return out
        if "stdout_json" in resp:
            out["stdout"] = nz.value(resp["stdout_json"])
        elif case.get("timeout"):
            out.update(nz.stdout(resp.get("stdout", "")))
        else:
            out["stdout_text"] = nz.text(resp.get("stdout", ""))
        if not resp.get("killed"):
            # a killed etcdctl (a watch at its deadline) is compared by its stdout only
            out["stderr"] = [nz.text(ln) for ln in resp.get("stderr", "").splitlines()
                             if not ln.startswith('{"level"')]
    return out


CASE_BY_ID = {c["id"]: c for c in CASES}


def load(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def cmd_normalize(args):
    recs = load(args.file)
    nz = Norm(recs)
    for r in recs:
        print(json.dumps(normalise(r, nz), sort_keys=True))


def cmd_diff(args):
    a, b = load(args.a), load(args.b)
    na, nb = Norm(a), Norm(b)
    ma = {r["id"]: normalise(r, na) for r in a}
    mb = {r["id"]: normalise(r, nb) for r in b}
    ndiff = 0
    for cid in list(ma) + [x for x in mb if x not in ma]:
        x, y = ma.get(cid), mb.get(cid)
        if x == y:
            continue
        ndiff += 1
        print(f"--- {cid}")
        if x is None or y is None:
            print("   only in", args.a if y is None else args.b)
            continue
        fx = json.dumps(x, sort_keys=True, indent=1).splitlines()
        fy = json.dumps(y, sort_keys=True, indent=1).splitlines()
        for line in difflib.unified_diff(fx, fy, args.a, args.b, lineterm="", n=1):
            print("   " + line)
    total = len(set(ma) | set(mb))
    print(f"{ndiff} of {total} cases differ")
    return 1 if ndiff else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)
    r = sp.add_parser("run")
    r.add_argument("--endpoints", required=True, help="host:port, e.g. 127.0.0.1:42379")
    r.add_argument("--etcdctl", default="etcdctl", help="etcdctl 3.4 binary")
    r.add_argument("--only", help="regex on case ids (base.* cases always run)")
    r.add_argument("--out")
    r.add_argument("-v", "--verbose", action="store_true")
    n = sp.add_parser("normalize")
    n.add_argument("file")
    d = sp.add_parser("diff")
    d.add_argument("a")
    d.add_argument("b")
    args = ap.parse_args()
    if args.cmd == "run":
        cmd_run(args)
    elif args.cmd == "normalize":
        cmd_normalize(args)
    else:
        sys.exit(cmd_diff(args))


if __name__ == "__main__":
    main()
