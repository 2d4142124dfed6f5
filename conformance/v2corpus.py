#!/usr/bin/env python3
"""etcd v2 HTTP API conformance corpus (python3 stdlib only).

Record the responses of a server:
    v2corpus.py run --base http://127.0.0.1:2379 --sections keys --out keys.jsonl
    v2corpus.py run --base http://127.0.0.1:2379 --sections members --out members.jsonl

Compare two recordings (for example real etcd against a re-implementation), ignoring
volatile fields (see NORMALISATION below and README.md):
    v2corpus.py diff etcd.jsonl other.jsonl [--index relative|ignore]
    v2corpus.py normalize etcd.jsonl [--index relative|ignore]   # print normalised records

Sections:
  keys     needs a FRESH single-member server (v2 enabled). About 1 minute (it waits for TTLs
           to expire and writes 1010 keys to push the 1000-event watch history).
           All keys live under /corpus, which the run deletes first.
  members  needs a 3-member cluster with every member started; it adds (and later removes) an
           extra member with peer URL http://127.0.0.1:42380 that is never started, so the
           4-member cluster keeps quorum (3 of 4). Never run it against a 1-member cluster:
           adding an unstarted member there loses quorum and the removal cannot commit.

Every request has a bounded timeout; every loop is bounded in count.

NORMALISATION (used by `diff` and `normalize`):
  * Compared headers: Content-Type, Location, Allow, X-Etcd-Index (index-normalised),
    and presence only ("<present>") of X-Raft-Index, X-Raft-Term, X-Etcd-Cluster-Id.
    Everything else (Date, Content-Length, CORS headers, ...) is ignored.
  * Index values (X-Etcd-Index, node.createdIndex/modifiedIndex at any depth incl. prevNode
    and nodes[], error "index", the 20-digit suffix of in-order keys, and integers inside
    error "cause" strings that fall in [B, max index seen]) become "i+N" = offset from the
    base index B, the X-Etcd-Index of the first case (GET /v2/keys/ on the fresh server).
    With --index ignore they all become "<idx>".
  * "expiration" -> "<ts>" (if RFC3339), "ttl" -> "<ttl>" (if a positive integer).
  * Member ids ("id" in member objects, "leader" in stats, ids used in request paths)
    -> "<id>"; member lists are sorted by (name, peerURLs) before comparing.
  * Directory listings: nodes[] sorted by key (etcd returns unsorted listings in Go map
    order, which differs from run to run; sorted=true listings are sorted by etcd anyway).
  * 12-16 digit hex tokens in members-API "message" strings -> "<id>"; stats/leader
    "followers" keys -> "<id>".
  * The base URL of the run (e.g. http://127.0.0.1:2379) -> "<base>" in all strings.
  * Request paths are compared in their template form (before {{...}} substitution).
  * compare mode per case: full (status + headers above + normalised body), shape (status +
    Content-Type + JSON key/type skeleton), status (status code only), none.
  * For watch cases the booleans client_timeout / trigger status are compared as well.
"""
import argparse
import http.client
import json
import re
import sys
import threading
import time
import urllib.parse

# ----------------------------------------------------------------------------- cases
K = "/v2/keys"
C = K + "/corpus"


def H(id, method, path, desc, form=None, body=None, json_body=None, headers=None,
      compare="full", timeout=15.0, section="keys"):
    return dict(kind="http", id=id, method=method, path=path, desc=desc, form=form,
                body=body, json_body=json_body, headers=headers or {}, compare=compare,
                timeout=timeout, section=section)


def WATCH_TIMEOUT(id, path, desc, timeout=1.5, compare="full", section="keys"):
    """A watch that is expected to block: stop reading after `timeout` s (like curl --max-time)."""
    return dict(kind="watch_timeout", id=id, method="GET", path=path, desc=desc,
                timeout=timeout, compare=compare, section=section)


def WATCH_CONCURRENT(id, path, trigger, desc, delay=0.5, timeout=5.0, compare="full",
                     section="keys"):
    """Start a blocking watch, then after `delay` s issue `trigger` (method, path, form)."""
    return dict(kind="watch_concurrent", id=id, method="GET", path=path, desc=desc,
                trigger=trigger, delay=delay, timeout=timeout, compare=compare,
                section=section)


def STREAM(id, path, triggers, desc, delay=0.3, timeout=2.0, compare="full", section="keys"):
    return dict(kind="stream", id=id, method="GET", path=path, desc=desc, triggers=triggers,
                delay=delay, timeout=timeout, compare=compare, section=section)


def SLEEP(id, seconds, desc, section="keys"):
    return dict(kind="sleep", id=id, seconds=seconds, desc=desc, compare="none",
                section=section)


def FILL(id, path, count, desc, section="keys", limit_s=120):
    return dict(kind="fill", id=id, path=path, count=count, desc=desc, limit_s=limit_s,
                compare="full", section=section)


KEYS_CASES = [
    # --- base, misc endpoints
    H("base.get-root", "GET", K + "/", "root listing; its X-Etcd-Index is the base index B"),
    H("setup.cleanup", "DELETE", C + "?recursive=true", "remove /corpus (404 on a fresh server)",
      compare="none"),
    H("misc.version", "GET", "/version", "server/cluster version", compare="shape"),
    H("misc.health", "GET", "/health", "health check"),
    H("misc.machines", "GET", "/v2/machines", "client URLs, text/plain"),
    H("misc.v2-version-404", "GET", "/v2/version", "no such endpoint"),
    H("misc.stats-self", "GET", "/v2/stats/self", "member stats", compare="shape"),
    H("misc.stats-leader", "GET", "/v2/stats/leader", "leader stats (single member: no followers)",
      compare="shape"),
    H("misc.stats-store", "GET", "/v2/stats/store", "store op counters", compare="shape"),
    H("misc.auth-enable", "GET", "/v2/auth/enable", "v2 auth status"),
    H("misc.auth-roles", "GET", "/v2/auth/roles", "v2 auth roles"),
    H("misc.auth-users", "GET", "/v2/auth/users", "v2 auth users"),
    # --- set / get / update / delete
    H("kv.get-missing", "GET", C + "/missing", "error 100 Key not found, JSON error shape"),
    H("kv.set-new", "PUT", C + "/k1", "set a new key -> 201 action=set", form={"value": "v1"}),
    H("kv.get", "GET", C + "/k1", "get -> 200 action=get"),
    H("kv.head", "HEAD", C + "/k1", "HEAD -> headers only"),
    H("kv.set-overwrite", "PUT", C + "/k1", "overwrite -> 200 with prevNode", form={"value": "v2"}),
    H("kv.set-query-value", "PUT", C + "/kq?value=fromquery", "value given in the query string"),
    H("kv.set-empty-value", "PUT", C + "/kempty", "PUT with no value -> empty string value"),
    H("kv.set-noValueOnSuccess", "PUT", C + "/k1?noValueOnSuccess=true",
      "noValueOnSuccess=true: response node without value", form={"value": "v3"}),
    H("kv.set-url-escaped", "PUT", C + "/sp%20ace", "percent-encoded key", form={"value": "s"}),
    H("kv.get-url-escaped", "GET", C + "/sp%20ace", "get percent-encoded key"),
    H("kv.set-double-slash", "PUT", C + "//dbl//", "path with doubled slashes is cleaned",
      form={"value": "d"}),
    H("kv.get-recursive-file", "GET", C + "/k1?recursive=true", "recursive on a file"),
    H("kv.get-bad-recursive", "GET", C + "/k1?recursive=maybe", "invalid boolean -> 209"),
    H("kv.get-quorum", "GET", C + "/k1?quorum=true", "quorum read (goes through raft)"),
    H("kv.delete", "DELETE", C + "/k1", "delete -> 200 action=delete with prevNode"),
    H("kv.get-deleted", "GET", C + "/k1", "deleted key -> 100"),
    H("kv.delete-missing", "DELETE", C + "/k1", "delete missing -> 100"),
    H("kv.patch-405", "PATCH", C + "/k1", "unsupported method -> 405 + Allow"),
    H("kv.put-root", "PUT", K + "/", "write to root -> 107 Root is read only", form={"value": "x"}),
    H("kv.bad-form", "PUT", C + "/bf", "malformed urlencoded body",
      body="value=%zz", headers={"Content-Type": "application/x-www-form-urlencoded"}),
    # --- create / update via prevExist
    H("pe.create", "PUT", C + "/c?prevExist=false", "create -> 201 action=create",
      form={"value": "c1"}),
    H("pe.create-conflict", "PUT", C + "/c?prevExist=false", "create existing -> 412 code 105",
      form={"value": "c1b"}),
    H("pe.update-missing", "PUT", C + "/nokey?prevExist=true", "update missing -> 404 code 100",
      form={"value": "u"}),
    H("pe.update", "PUT", C + "/c?prevExist=true", "update existing -> 200 action=update",
      form={"value": "c2"}),
    H("pe.bad-bool", "PUT", C + "/c?prevExist=bogus", "invalid prevExist -> 209",
      form={"value": "x"}),
    # --- compareAndSwap
    H("cas.setup", "PUT", C + "/cas", "setup", form={"value": "one"}),
    H("cas.prevValue-ok", "PUT", C + "/cas?prevValue=one", "CAS by value -> compareAndSwap",
      form={"value": "two"}),
    H("cas.prevValue-fail", "PUT", C + "/cas?prevValue=one", "CAS stale value -> 412 code 101",
      form={"value": "three"}),
    H("cas.prevIndex-ok", "PUT", C + "/cas?prevIndex={{cas.prevValue-ok:node.modifiedIndex}}",
      "CAS by index -> compareAndSwap", form={"value": "three"}),
    H("cas.prevIndex-fail", "PUT", C + "/cas?prevIndex=1", "CAS wrong index -> 412 code 101",
      form={"value": "four"}),
    H("cas.both-fail", "PUT", C + "/cas?prevValue=nope&prevIndex=999999",
      "both conditions fail -> cause lists both", form={"value": "four"}),
    H("cas.prevIndex-nan", "PUT", C + "/cas?prevIndex=abc", "prevIndex not a number -> 203",
      form={"value": "x"}),
    H("cas.prevValue-empty", "PUT", C + "/cas?prevValue=", "empty prevValue -> 201",
      form={"value": "x"}),
    H("cas.missing-key", "PUT", C + "/nocas?prevValue=x", "CAS on missing key -> 100",
      form={"value": "y"}),
    H("cas.prevExist-false-and-prevValue", "PUT", C + "/cas?prevExist=false&prevValue=three",
      "prevExist=false with prevValue", form={"value": "z"}),
    # --- compareAndDelete
    H("cad.prevValue-fail", "DELETE", C + "/cas?prevValue=wrong", "CAD wrong value -> 412 101"),
    H("cad.prevValue-ok", "DELETE", C + "/cas?prevValue=three", "CAD by value -> compareAndDelete"),
    H("cad.setup", "PUT", C + "/cad2", "setup", form={"value": "x"}),
    H("cad.prevIndex-fail", "DELETE", C + "/cad2?prevIndex=1", "CAD wrong index -> 412 101"),
    H("cad.prevIndex-ok", "DELETE", C + "/cad2?prevIndex={{cad.setup:node.modifiedIndex}}",
      "CAD by index -> compareAndDelete"),
    # --- directories
    H("dir.create", "PUT", C + "/dir?dir=true", "create dir -> 201 node.dir=true"),
    H("dir.create-again", "PUT", C + "/dir?dir=true", "dir=true on existing dir"),
    H("dir.create-exclusive-conflict", "PUT", C + "/dir?dir=true&prevExist=false",
      "create existing dir with prevExist=false -> 105"),
    H("dir.child-a", "PUT", C + "/dir/a", "child file", form={"value": "1"}),
    H("dir.child-b", "PUT", C + "/dir/b", "child file", form={"value": "2"}),
    H("dir.child-sub-c", "PUT", C + "/dir/sub/c", "implicit intermediate dir", form={"value": "3"}),
    H("dir.list", "GET", C + "/dir", "non-recursive listing: sub has no nodes", compare="full"),
    H("dir.list-recursive", "GET", C + "/dir?recursive=true", "recursive listing"),
    H("dir.list-sorted", "GET", C + "/dir?recursive=true&sorted=true", "sorted recursive listing"),
    H("dir.not-a-dir", "PUT", C + "/dir/a/x", "child of a file -> 104 Not a directory",
      form={"value": "x"}),
    H("dir.set-value-on-dir", "PUT", C + "/dir", "value on a dir -> 102 Not a file",
      form={"value": "x"}),
    H("dir.dir-with-value", "PUT", C + "/dir2?dir=true", "dir=true plus a value",
      form={"value": "x"}),
    H("dir.delete-as-file", "DELETE", C + "/dir", "delete dir without dir=true -> 102"),
    H("dir.delete-nonempty", "DELETE", C + "/dir?dir=true", "delete non-empty dir -> 108"),
    H("dir.delete-file-with-dir", "DELETE", C + "/dir/a?dir=true", "dir=true on a file"),
    H("dir.delete-recursive", "DELETE", C + "/dir?recursive=true", "recursive delete"),
    H("dir.get-after-delete", "GET", C + "/dir/sub/c", "children gone"),
    H("dir.empty-create", "PUT", C + "/edir?dir=true", "empty dir"),
    H("dir.empty-delete", "DELETE", C + "/edir?dir=true", "delete empty dir with dir=true"),
    H("dir.prevValue-on-dir", "DELETE", C + "/edir2?prevValue=x", "CAD on missing"),
    # --- in-order keys
    H("q.post-1", "POST", C + "/queue", "in-order key -> 201 action=create",
      form={"value": "Job1"}),
    H("q.post-2", "POST", C + "/queue", "second in-order key", form={"value": "Job2"}),
    H("q.list-sorted", "GET", C + "/queue?sorted=true", "ordered listing"),
    H("q.file-setup", "PUT", C + "/qfile", "setup: a plain file", form={"value": "f"}),
    H("q.post-to-file", "POST", C + "/qfile", "POST on a file -> 104 Not a directory",
      form={"value": "x"}),
    H("q.get-inorder-key", "GET", C + "/queue/{{q.post-1:node.key:basename}}",
      "get one in-order key by name"),
    # --- hidden keys
    H("hid.set", "PUT", C + "/_hidden", "hidden key", form={"value": "h"}),
    H("hid.list-parent", "GET", C + "?recursive=true&sorted=true",
      "parent listing omits _hidden"),
    H("hid.get-direct", "GET", C + "/_hidden", "direct get works"),
    H("hid.watch-history", "GET", C + "?wait=true&recursive=true&waitIndex={{hid.set:node.modifiedIndex}}",
      "recursive watch from the hidden key's index (history scan)"),
    WATCH_CONCURRENT("hid.watch-live", C + "?wait=true&recursive=true",
                     ("PUT", C + "/_hidden2", {"value": "h2"}),
                     "live recursive watch is not notified of a hidden key", timeout=2.0),
    # --- TTL
    H("ttl.set", "PUT", C + "/ttl", "set with ttl -> expiration + ttl fields",
      form={"value": "t", "ttl": "30"}),
    H("ttl.get", "GET", C + "/ttl", "get shows remaining ttl"),
    H("ttl.nan", "PUT", C + "/ttl", "bad ttl -> 202", form={"value": "t", "ttl": "abc"}),
    H("ttl.negative", "PUT", C + "/ttl", "negative ttl", form={"value": "t", "ttl": "-1"}),
    H("ttl.zero", "PUT", C + "/ttl0", "ttl=0", form={"value": "t", "ttl": "0"}),
    H("ttl.remove", "PUT", C + "/ttl?prevExist=true", "empty ttl removes the TTL",
      form={"value": "t2", "ttl": ""}),
    H("ttl.refresh-setup", "PUT", C + "/ttlr", "setup", form={"value": "keep", "ttl": "30"}),
    H("ttl.refresh", "PUT", C + "/ttlr?refresh=true&prevExist=true", "refresh ttl, no value",
      form={"ttl": "60"}),
    H("ttl.refresh-get", "GET", C + "/ttlr", "value unchanged after refresh"),
    H("ttl.refresh-with-value", "PUT", C + "/ttlr?refresh=true&prevExist=true",
      "refresh with a value -> error", form={"ttl": "60", "value": "new"}),
    H("ttl.refresh-no-ttl", "PUT", C + "/ttlr?refresh=true&prevExist=true",
      "refresh without ttl -> error"),
    H("ttl.refresh-missing", "PUT", C + "/nottl?refresh=true&prevExist=true",
      "refresh missing key -> 100", form={"ttl": "5"}),
    WATCH_CONCURRENT("ttl.refresh-not-notified", C + "/ttlr?wait=true",
                     ("PUT", C + "/ttlr?refresh=true&prevExist=true", {"ttl": "90"}),
                     "a refresh does not notify watchers", timeout=2.0),
    H("ttl.short", "PUT", C + "/ttlshort", "ttl=1", form={"value": "gone", "ttl": "1"}),
    H("ttl.dir", "PUT", C + "/tdir?dir=true&ttl=1", "dir with ttl=1"),
    H("ttl.dir-child", "PUT", C + "/tdir/child", "child of ttl dir", form={"value": "c"}),
    H("ttl.dir-update-ttl", "PUT", C + "/tdir2?dir=true&ttl=30", "setup dir with ttl"),
    H("ttl.dir-refresh", "PUT", C + "/tdir2?dir=true&prevExist=true&ttl=60",
      "update a dir's TTL (dir=true&prevExist=true)"),
    SLEEP("ttl.wait", 3.5, "wait for ttl=1 keys to expire"),
    H("ttl.expired-get", "GET", C + "/ttlshort", "expired -> 100"),
    H("ttl.expired-dir-child", "GET", C + "/tdir/child", "child of expired dir -> 100"),
    H("ttl.expire-event", "GET", C + "/ttlshort?wait=true&waitIndex={{ttl.short:node.modifiedIndex|+1}}",
      "watch history holds an expire event"),
    # --- watch
    H("w.setup", "PUT", C + "/wk", "setup", form={"value": "w1"}),
    H("w.past-event", "GET", C + "/wk?wait=true&waitIndex={{w.setup:node.modifiedIndex}}",
      "waitIndex in the past -> returns the event at once"),
    H("w.past-recursive", "GET", C + "?wait=true&recursive=true&waitIndex={{w.setup:node.modifiedIndex}}",
      "recursive watch on parent from past index"),
    H("w.waitIndex-nan", "GET", C + "/wk?wait=true&waitIndex=abc", "waitIndex NaN -> 203"),
    WATCH_TIMEOUT("w.timeout", C + "/future?wait=true", "watch on a future key, client gives up"),
    WATCH_CONCURRENT("w.concurrent", C + "/future?wait=true",
                     ("PUT", C + "/future", {"value": "fired"}), "watch then a concurrent set"),
    WATCH_CONCURRENT("w.dir-nonrecursive", C + "?wait=true",
                     ("PUT", C + "/child-nr", {"value": "x"}),
                     "non-recursive watch on a dir ignores a child change", timeout=2.0),
    WATCH_CONCURRENT("w.delete-event", C + "/future?wait=true",
                     ("DELETE", C + "/future", None), "watch sees a delete"),
    STREAM("w.stream", C + "/s?wait=true&stream=true",
           [("PUT", C + "/s", {"value": "s1"}), ("PUT", C + "/s", {"value": "s2"})],
           "stream=true delivers several events on one response"),
    # --- event history limit
    FILL("hist.fill", C + "/fill/x", 1010, "1010 writes to push the 1000-event history"),
    H("hist.cleared", "GET", C + "/wk?wait=true&waitIndex={{w.setup:node.modifiedIndex}}",
      "waitIndex older than history -> 401 event cleared"),
    H("hist.stats-store", "GET", "/v2/stats/store", "store stats after the corpus",
      compare="shape"),
    H("end.list", "GET", C + "?recursive=true&sorted=true", "final state of /corpus minus fill",
      compare="status"),
]

MEMBERS_CASES = [
    H("m.list", "GET", "/v2/members", "members list", section="members"),
    H("m.leader", "GET", "/v2/members/leader", "leader member (which one varies)",
      compare="shape", section="members"),
    H("m.stats-leader-on-leader", "GET", "{{m.leader:clientURLs.0}}/v2/stats/leader",
      "leader stats on the leader", compare="shape", section="members"),
    H("m.stats-leader-on-follower", "GET", "{{@follower}}/v2/stats/leader",
      "leader stats on a follower -> 403", section="members"),
    H("m.stats-self-on-follower", "GET", "{{@follower}}/v2/stats/self",
      "self stats on a follower", compare="shape", section="members"),
    H("m.add-existing-peer", "POST", "/v2/members",
      "peer URL of a running member -> 409 (all members connected)",
      json_body={"peerURLs": ["http://127.0.0.1:22380"]}, section="members"),
    H("m.add", "POST", "/v2/members", "add a member (never started) -> 201 body",
      json_body={"peerURLs": ["http://127.0.0.1:42380"]}, section="members"),
    H("m.list-after-add", "GET", "/v2/members", "new member has empty name/clientURLs",
      section="members"),
    H("m.add-duplicate", "POST", "/v2/members",
      "same peer URL again while the added member is not started (etcd: strict reconfig "
      "check rejects first -> 500)",
      json_body={"peerURLs": ["http://127.0.0.1:42380"]}, section="members"),
    H("m.add-bad-json", "POST", "/v2/members", "body not JSON -> 400",
      body="not json", headers={"Content-Type": "application/json"}, section="members"),
    H("m.add-bad-url", "POST", "/v2/members", "invalid peer URL -> 400",
      json_body={"peerURLs": ["foo"]}, section="members"),
    H("m.add-no-urls", "POST", "/v2/members", "empty peerURLs -> 400",
      json_body={"peerURLs": []}, section="members"),
    H("m.add-wrong-ctype", "POST", "/v2/members", "Content-Type not JSON -> 415",
      body='{"peerURLs":["http://127.0.0.1:42381"]}',
      headers={"Content-Type": "application/x-www-form-urlencoded"}, section="members"),
    H("m.update", "PUT", "/v2/members/{{m.add:id}}", "update peerURLs -> 204",
      json_body={"peerURLs": ["http://127.0.0.1:42381"]}, section="members"),
    H("m.update-to-existing", "PUT", "/v2/members/{{m.add:id}}",
      "update to a running member's peer URL -> 409",
      json_body={"peerURLs": ["http://127.0.0.1:22380"]}, section="members"),
    H("m.update-unknown", "PUT", "/v2/members/123456789abcdef", "update unknown id -> 404",
      json_body={"peerURLs": ["http://127.0.0.1:42382"]}, section="members"),
    H("m.update-bad-id", "PUT", "/v2/members/xyz", "update with a non-hex id",
      json_body={"peerURLs": ["http://127.0.0.1:42382"]}, section="members"),
    H("m.list-after-update", "GET", "/v2/members", "peer URL changed", section="members"),
    H("m.remove", "DELETE", "/v2/members/{{m.add:id}}", "remove -> 204", section="members"),
    H("m.remove-again", "DELETE", "/v2/members/{{m.add:id}}", "remove a removed id -> 410",
      section="members"),
    H("m.remove-unknown", "DELETE", "/v2/members/123456789abcdef", "remove unknown id -> 404",
      section="members"),
    H("m.remove-bad-id", "DELETE", "/v2/members/xyz", "id not hex", section="members"),
    H("m.post-on-id", "POST", "/v2/members/123",
      "POST on a member path (etcd ignores the id and adds a member)",
      json_body={"peerURLs": ["http://127.0.0.1:42383"]}, section="members"),
    H("m.remove-post-on-id", "DELETE", "/v2/members/{{m.post-on-id:id}}",
      "clean up the member added by the previous case", section="members"),
    H("m.list-final", "GET", "/v2/members", "back to the 3 original members", section="members"),
]

# --- auth: a FRESH single member (auth state is cluster-wide and this section changes it).
A = "/v2/auth"


def BA(user, password):
    """Basic-auth header for `user`."""
    import base64
    tok = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    return {"Authorization": "Basic " + tok}


ROOT = BA("root", "rootpw")
ALICE = BA("alice", "alicepw")


def AH(id, method, path, desc, **kw):
    kw.setdefault("section", "auth")
    return H(id, method, path, desc, **kw)


AUTH_CASES = [
    AH("a.base", "GET", K + "/", "root listing; its X-Etcd-Index is the base index B"),
    AH("a.cleanup", "DELETE", C + "?recursive=true", "remove /corpus", compare="none"),
    AH("a.seed-key", "PUT", C + "/open/k", "a key written before auth is on", form={"value": "o"}),
    AH("a.status", "GET", A + "/enable", "auth is off on a fresh member"),
    AH("a.users-none", "GET", A + "/users", "no users yet"),
    AH("a.roles-default", "GET", A + "/roles", "the built-in roles"),
    AH("a.role-root", "GET", A + "/roles/root", "the root role"),
    AH("a.role-guest", "GET", A + "/roles/guest", "the guest role before it is stored"),
    AH("a.enable-no-root", "PUT", A + "/enable", "enable without a root user"),
    AH("a.user-missing", "GET", A + "/users/nobody", "unknown user"),
    AH("a.role-missing", "GET", A + "/roles/nothing", "unknown role"),
    AH("a.user-bad-json", "PUT", A + "/users/x", "body is not JSON", body="nope",
       headers={"Content-Type": "application/json"}),
    AH("a.user-name-mismatch", "PUT", A + "/users/x", "name in the body differs from the path",
       json_body={"user": "y", "password": "p"}),
    AH("a.user-no-password", "PUT", A + "/users/bob", "create without a password",
       json_body={"user": "bob"}),
    AH("a.user-unknown-role", "PUT", A + "/users/carol", "create with a role that does not exist",
       json_body={"user": "carol", "password": "c", "roles": ["nothing"]}),
    AH("a.root-create", "PUT", A + "/users/root", "create root",
       json_body={"user": "root", "password": "rootpw"}),
    AH("a.root-get", "GET", A + "/users/root", "root has the root role"),
    AH("a.role-create", "PUT", A + "/roles/fooer", "create a role with read+write on a prefix",
       json_body={"role": "fooer", "permissions": {"kv": {"read": ["/corpus/foo/*"],
                                                         "write": ["/corpus/foo/*"]}}}),
    AH("a.role-create-dup", "PUT", A + "/roles/fooer", "create the same role again",
       json_body={"role": "fooer", "permissions": {"kv": {"read": ["/x"], "write": []}}}),
    AH("a.role-reader", "PUT", A + "/roles/reader", "a read-only role on /corpus/*",
       json_body={"role": "reader", "permissions": {"kv": {"read": ["/corpus/*"], "write": []}}}),
    AH("a.role-name-mismatch", "PUT", A + "/roles/r1", "role in the body differs from the path",
       json_body={"role": "r2"}),
    AH("a.role-bad-json", "PUT", A + "/roles/r1", "role body is not JSON", body="{",
       headers={"Content-Type": "application/json"}),
    AH("a.role-get", "GET", A + "/roles/fooer", "get a role"),
    AH("a.role-grant", "PUT", A + "/roles/reader", "grant another read path",
       json_body={"role": "reader", "grant": {"kv": {"read": ["/other"]}}}),
    AH("a.role-revoke", "PUT", A + "/roles/reader", "revoke it again",
       json_body={"role": "reader", "revoke": {"kv": {"read": ["/other"]}}}),
    AH("a.role-revoke-missing", "PUT", A + "/roles/reader", "revoke a path never granted",
       json_body={"role": "reader", "revoke": {"kv": {"read": ["/never"]}}}),
    AH("a.role-modify-root", "PUT", A + "/roles/root", "the root role cannot change",
       json_body={"role": "root", "grant": {"kv": {"read": ["/x"]}}}),
    AH("a.user-create", "PUT", A + "/users/alice", "create alice with a role",
       json_body={"user": "alice", "password": "alicepw", "roles": ["fooer"]}),
    AH("a.user-create-again", "PUT", A + "/users/alice", "PUT alice again with a password only",
       json_body={"user": "alice", "password": "alicepw"}),
    AH("a.user-grant", "PUT", A + "/users/alice", "grant reader to alice",
       json_body={"user": "alice", "grant": ["reader"]}),
    AH("a.user-grant-dup", "PUT", A + "/users/alice", "grant a role she has",
       json_body={"user": "alice", "grant": ["reader"]}),
    AH("a.user-revoke-missing", "PUT", A + "/users/alice", "revoke a role she lacks",
       json_body={"user": "alice", "revoke": ["root"]}),
    AH("a.user-grant-unknown", "PUT", A + "/users/alice", "grant a role that does not exist",
       json_body={"user": "alice", "grant": ["nothing"]}),
    AH("a.user-get", "GET", A + "/users/alice", "alice with her roles"),
    AH("a.users-list", "GET", A + "/users", "all users"),
    AH("a.roles-list", "GET", A + "/roles", "all roles"),
    AH("a.user-post", "POST", A + "/users/alice", "POST is not allowed", json_body={}),
    AH("a.roles-post", "POST", A + "/roles", "POST on the role list"),
    AH("a.enable-post", "POST", A + "/enable", "POST on enable"),
    AH("a.user-plain", "PUT", A + "/users/dave", "create a user with a password only",
       json_body={"user": "dave", "password": "davepw"}),
    AH("a.user-roles-and-grant", "PUT", A + "/users/dave", "roles together with grant",
       json_body={"user": "dave", "roles": ["x"], "grant": ["y"]}),
    AH("a.user-touch", "PUT", A + "/users/dave", "PUT with the name only",
       json_body={"user": "dave"}),
    AH("a.user-touch-again", "PUT", A + "/users/dave", "the same again: nothing to update",
       json_body={"user": "dave"}),
    AH("a.user-update-missing", "PUT", A + "/users/ghost", "grant to a user that does not exist",
       json_body={"user": "ghost", "grant": ["x"]}),
    AH("a.user-grant-root", "PUT", A + "/users/dave", "grant the root role to dave",
       json_body={"user": "dave", "grant": ["root"]}),
    AH("a.role-plain", "PUT", A + "/roles/empty", "a role without permissions",
       json_body={"role": "empty"}),
    AH("a.role-plain-get", "GET", A + "/roles/empty", "read it back"),
    AH("a.role-perms-and-grant", "PUT", A + "/roles/empty", "permissions together with grant",
       json_body={"role": "empty", "permissions": {"kv": {"read": ["/a"]}},
                  "grant": {"kv": {"read": ["/b"]}}}),
    AH("a.role-grant-write-only", "PUT", A + "/roles/empty", "grant a write pattern only",
       json_body={"role": "empty", "grant": {"kv": {"write": ["/w"]}}}),
    AH("a.role-grant-dup-perm", "PUT", A + "/roles/fooer", "grant a pattern the role has",
       json_body={"role": "fooer", "grant": {"kv": {"read": ["/corpus/foo/*"]}}}),
    AH("a.role-update-missing", "PUT", A + "/roles/ghost", "grant to a role that does not exist",
       json_body={"role": "ghost", "grant": {"kv": {"read": ["/x"]}}}),
    AH("a.role-delete-missing", "DELETE", A + "/roles/ghost", "delete a role that does not exist"),
    AH("a.role-create-root", "PUT", A + "/roles/root", "create the root role",
       json_body={"role": "root"}),
    AH("a.user-delete-missing-off", "DELETE", A + "/users/ghost", "delete an unknown user"),
    AH("a.enable", "PUT", A + "/enable", "enable auth"),
    AH("a.enable-again", "PUT", A + "/enable", "enable again (no credentials)"),
    AH("a.enable-again-root", "PUT", A + "/enable", "enable again as root", headers=ROOT),
    AH("a.status-on", "GET", A + "/enable", "auth is on (status needs no credentials)"),
    AH("a.users-noauth", "GET", A + "/users", "user list without credentials"),
    AH("a.users-badpass", "GET", A + "/users", "user list with a wrong password",
       headers=BA("root", "wrong")),
    AH("a.users-alice", "GET", A + "/users", "user list as a non-root user", headers=ALICE),
    AH("a.users-root", "GET", A + "/users", "user list as root", headers=ROOT),
    AH("a.user-self", "GET", A + "/users/alice", "alice reads herself", headers=ALICE),
    AH("a.roles-root", "GET", A + "/roles", "role list as root", headers=ROOT),
    AH("a.guest-get", "GET", A + "/roles/guest", "the guest role once auth is on", headers=ROOT),
    AH("a.keys-guest-get", "GET", C + "/open/k", "guest reads (guest may do anything by default)"),
    AH("a.keys-guest-put", "PUT", C + "/open/g", "guest writes", form={"value": "g"}),
    AH("a.guest-revoke", "PUT", A + "/roles/guest", "take guest's access away",
       json_body={"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}},
       headers=ROOT),
    AH("a.keys-noauth-get", "GET", C + "/open/k", "read without credentials"),
    AH("a.keys-noauth-put", "PUT", C + "/open/k", "write without credentials", form={"value": "x"}),
    AH("a.keys-noauth-watch", "GET", C + "/open/k?wait=true", "watch without credentials"),
    AH("a.keys-badpass", "GET", C + "/open/k", "wrong password", headers=BA("alice", "nope")),
    AH("a.keys-unknown-user", "GET", C + "/open/k", "unknown user", headers=BA("zed", "z")),
    AH("a.keys-bad-header", "GET", C + "/open/k", "not basic auth",
       headers={"Authorization": "Bearer abc"}),
    AH("a.keys-bad-base64", "GET", C + "/open/k", "basic auth that is not base64",
       headers={"Authorization": "Basic !!!"}),
    AH("a.keys-alice-put-foo", "PUT", C + "/foo/a", "write inside alice's prefix",
       form={"value": "a"}, headers=ALICE),
    AH("a.keys-alice-get-foo", "GET", C + "/foo/a", "read it back", headers=ALICE),
    AH("a.keys-alice-put-other", "PUT", C + "/open/k", "write outside her write prefix",
       form={"value": "a"}, headers=ALICE),
    AH("a.keys-alice-get-other", "GET", C + "/open/k", "read through the reader role",
       headers=ALICE),
    AH("a.keys-alice-get-root", "GET", K + "/", "read the root dir", headers=ALICE),
    AH("a.keys-alice-recursive", "GET", C + "/open?recursive=true", "recursive read",
       headers=ALICE),
    AH("a.keys-alice-delete-foo-dir", "DELETE", C + "/foo?recursive=true",
       "recursive delete of the dir that holds her prefix", headers=ALICE),
    AH("a.keys-alice-delete-foo", "DELETE", C + "/foo/a", "delete inside her prefix",
       headers=ALICE),
    AH("a.keys-alice-inorder", "POST", C + "/foo/q", "in-order key inside her prefix",
       form={"value": "q"}, headers=ALICE),
    AH("a.keys-alice-watch", "GET", C + "/open/k?wait=true&waitIndex=1",
       "watch a readable key from an old index", headers=ALICE, compare="status"),
    AH("a.keys-root-put", "PUT", C + "/open/r", "root writes anywhere", form={"value": "r"},
       headers=ROOT),
    AH("a.members-noauth", "GET", "/v2/members", "members without credentials", compare="status"),
    AH("a.stats-noauth", "GET", "/v2/stats/self", "stats without credentials", compare="status"),
    AH("a.machines-noauth", "GET", "/v2/machines", "machines without credentials"),
    AH("a.health-noauth", "GET", "/health", "health without credentials"),
    AH("a.users-dave", "GET", A + "/users", "a user granted the root role", headers=BA("dave", "davepw")),
    AH("a.keys-dave-recursive", "GET", K + "/?recursive=true", "root role reads everything",
       headers=BA("dave", "davepw"), compare="status"),
    AH("a.members-add-noauth", "POST", "/v2/members", "adding a member needs root",
       json_body={"peerURLs": ["http://127.0.0.1:42390"]}),
    AH("a.members-remove-noauth", "DELETE", "/v2/members/1234", "removing one too"),
    AH("a.root-delete", "DELETE", A + "/users/root", "delete root while auth is on",
       headers=ROOT),
    AH("a.root-revoke-root", "PUT", A + "/users/root", "revoke root's root role",
       json_body={"user": "root", "revoke": ["root"]}, headers=ROOT),
    AH("a.user-passwd", "PUT", A + "/users/alice", "change alice's password",
       json_body={"user": "alice", "password": "alicepw2"}, headers=ROOT),
    AH("a.keys-alice-oldpass", "GET", C + "/foo/q", "her old password no longer works",
       headers=ALICE),
    AH("a.keys-alice-newpass", "GET", C + "/open/k", "her new one does",
       headers=BA("alice", "alicepw2")),
    AH("a.role-delete-inuse", "DELETE", A + "/roles/reader", "delete a role a user has",
       headers=ROOT),
    AH("a.keys-alice-after-role-delete", "GET", C + "/open/k", "reader is gone",
       headers=BA("alice", "alicepw2")),
    AH("a.role-delete-root", "DELETE", A + "/roles/root", "the root role cannot go",
       headers=ROOT),
    AH("a.role-delete-guest", "DELETE", A + "/roles/guest", "delete the guest role",
       headers=ROOT),
    AH("a.user-delete", "DELETE", A + "/users/alice", "delete alice", headers=ROOT),
    AH("a.user-delete-missing", "DELETE", A + "/users/alice", "delete her again", headers=ROOT),
    AH("a.keys-alice-deleted", "GET", C + "/open/k", "a deleted user",
       headers=BA("alice", "alicepw2")),
    AH("a.disable-noauth", "DELETE", A + "/enable", "disable without credentials"),
    AH("a.disable", "DELETE", A + "/enable", "disable as root", headers=ROOT),
    AH("a.disable-again", "DELETE", A + "/enable", "disable when off"),
    AH("a.status-off", "GET", A + "/enable", "auth is off again"),
    AH("a.keys-after", "GET", C + "/open/k", "no credentials needed any more"),
    AH("a.users-after", "GET", A + "/users", "user list without credentials when off"),
    AH("a.roles-after", "GET", A + "/roles", "role list after the deletes"),
    AH("a.root-delete-off", "DELETE", A + "/users/root", "delete root while auth is off"),
    AH("a.users-final", "GET", A + "/users", "no users left"),
]

ALL_CASES = {"keys": KEYS_CASES, "members": MEMBERS_CASES, "auth": AUTH_CASES}

# ----------------------------------------------------------------------------- runner
TEMPLATE = re.compile(r"\{\{([^}:]+):([^}|]+)(?:\|([^}]+))?\}\}")


def dig(obj, dotted):
    for part in dotted.split("."):
        if isinstance(obj, list):
            obj = obj[int(part)]
        else:
            obj = obj[part]
    return obj


def follower_url(base):
    """Client URL of some member that is not the leader (for follower-only cases)."""
    lead = request(base, "GET", "/v2/members/leader")["response"]["body_json"]
    ms = request(base, "GET", "/v2/members")["response"]["body_json"]["members"]
    for m in sorted(ms, key=lambda m: m.get("name", "")):
        if m["id"] != lead["id"] and m.get("clientURLs"):
            return m["clientURLs"][0]
    raise RuntimeError("no follower with a client URL")


def expand(s, results, base=None):
    if "{{@follower}}" in s:
        s = s.replace("{{@follower}}", follower_url(base))

    def sub(m):
        cid, field, op = m.group(1), m.group(2), m.group(3)
        rec = results[cid]
        field, _, post = field.partition(":")
        if field.startswith("hdr."):
            val = rec["response"]["headers"].get(field[4:])
        else:
            val = dig(rec["response"]["body_json"], field)
        if post == "basename":
            val = str(val).rsplit("/", 1)[-1]
        if op and op.startswith("+"):
            val = int(val) + int(op[1:])
        return str(val)
    return TEMPLATE.sub(sub, s)


def target(base, path):
    if path.startswith("http://") or path.startswith("https://"):
        u = urllib.parse.urlsplit(path)
        return u.hostname, u.port, urllib.parse.urlunsplit(("", "", u.path, u.query, ""))
    u = urllib.parse.urlsplit(base)
    return u.hostname, u.port, path


def encode_body(form, body, json_body, headers):
    headers = dict(headers or {})
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif json_body is not None:
        data = json.dumps(json_body).encode()
        headers.setdefault("Content-Type", "application/json")
    elif body is not None:
        data = body.encode()
    return data, headers


def parse_body(raw, ctype):
    text = raw.decode("utf-8", "replace")
    out = {"body_text": text}
    try:
        out["body_json"] = json.loads(text) if text.strip() else None
    except ValueError:
        out["body_json"] = None
    return out


def request(base, method, path, form=None, body=None, json_body=None, headers=None,
            timeout=15.0):
    host, port, p = target(base, path)
    data, hdrs = encode_body(form, body, json_body, headers)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    t0 = time.monotonic()
    rec = {"request": {"method": method, "path": p, "headers": hdrs,
                       "body": data.decode() if data is not None else None}}
    try:
        conn.request(method, p, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = b"" if method == "HEAD" else resp.read()
        r = {"status": resp.status, "reason": resp.reason,
             "headers": {k: v for k, v in resp.getheaders()}}
        r.update(parse_body(raw, resp.getheader("Content-Type")))
        rec["response"] = r
        rec["client_timeout"] = False
    except (socket_timeout_types()) as e:
        rec["response"] = None
        rec["client_timeout"] = True
        rec["error"] = repr(e)
    finally:
        conn.close()
    rec["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 2)
    return rec


def socket_timeout_types():
    import socket
    return (socket.timeout, TimeoutError)


def watch_open(base, path, timeout):
    """Open a watch; return (conn, resp|None, rec). Headers may arrive before any event."""
    host, port, p = target(base, path)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    rec = {"request": {"method": "GET", "path": p, "headers": {}, "body": None}}
    conn.request("GET", p)
    return conn, rec


def watch_read(conn, rec, t0, stream=False):
    lines = []
    try:
        resp = conn.getresponse()
        rec["response"] = {"status": resp.status, "reason": resp.reason,
                           "headers": {k: v for k, v in resp.getheaders()}}
        if stream:
            for _ in range(100):  # bounded
                line = resp.readline()
                if not line:
                    break
                lines.append(line.decode("utf-8", "replace"))
            rec["response"]["body_lines"] = lines
        else:
            raw = resp.read()
            rec["response"].update(parse_body(raw, resp.getheader("Content-Type")))
        rec["client_timeout"] = False
    except socket_timeout_types() as e:
        rec["client_timeout"] = True
        rec.setdefault("response", None)
        rec["error"] = repr(e)
        if stream and rec.get("response") is not None:
            rec["response"]["body_lines"] = lines
    finally:
        conn.close()
    rec["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 2)
    return rec


def run_case(base, c, results):
    kind = c["kind"]
    if kind == "sleep":
        time.sleep(c["seconds"])
        return {"slept_s": c["seconds"]}
    if kind == "fill":
        path = expand(c["path"], results)
        hist = {}
        t0 = time.monotonic()
        n = 0
        for i in range(c["count"]):
            if time.monotonic() - t0 > c["limit_s"]:
                break
            r = request(base, "PUT", path, form={"value": str(i)}, timeout=15)
            st = r["response"]["status"] if r["response"] else "timeout"
            hist[str(st)] = hist.get(str(st), 0) + 1
            n += 1
        return {"request": {"method": "PUT", "path": path, "count": n},
                "response": {"status_histogram": hist, "last": r.get("response")},
                "elapsed_ms": round((time.monotonic() - t0) * 1000, 2)}
    path = expand(c["path"], results, base)
    if kind == "http":
        return request(base, c["method"], path, c.get("form"), c.get("body"),
                       c.get("json_body"), c.get("headers"), c.get("timeout", 15))
    if kind == "watch_timeout":
        t0 = time.monotonic()
        conn, rec = watch_open(base, path, c["timeout"])
        return watch_read(conn, rec, t0)
    if kind in ("watch_concurrent", "stream"):
        t0 = time.monotonic()
        conn, rec = watch_open(base, path, c["timeout"])
        box = {}
        th = threading.Thread(target=lambda: box.update(
            r=watch_read(conn, rec, t0, stream=(kind == "stream"))))
        th.start()
        trig_recs = []
        triggers = [c["trigger"]] if kind == "watch_concurrent" else c["triggers"]
        for (m, p, form) in triggers:
            time.sleep(c["delay"])
            tr = request(base, m, expand(p, results), form=form, timeout=10)
            tr["t_ms"] = round((time.monotonic() - t0) * 1000, 2)
            trig_recs.append(tr)
        th.join(c["timeout"] + 5)
        rec = box.get("r", rec)
        rec["triggers"] = trig_recs
        return rec
    raise ValueError(kind)


def cmd_run(args):
    sections = args.sections.split(",")
    cases = [c for s in sections for c in ALL_CASES[s]]
    if args.only:
        pat = re.compile(args.only)
        cases = [c for c in cases if pat.search(c["id"])]
    results = {}
    out = open(args.out, "w") if args.out else sys.stdout
    seq = 0
    for c in cases:
        seq += 1
        try:
            rec = run_case(args.base, c, results)
        except Exception as e:  # keep going; the failure is data
            rec = {"runner_error": repr(e)}
        rec = {"seq": seq, "id": c["id"], "section": c["section"], "kind": c["kind"],
               "desc": c["desc"], "compare": c["compare"], "base": args.base,
               "path_template": c.get("path"), **rec}
        results[c["id"]] = rec
        out.write(json.dumps(rec, sort_keys=False) + "\n")
        out.flush()
        if args.verbose:
            st = (rec.get("response") or {}).get("status")
            body = (rec.get("response") or {}).get("body_text", "")
            print(f"{seq:3d} {c['id']:<36} {st} {str(body)[:110]!s}", file=sys.stderr)
    if out is not sys.stdout:
        out.close()


# ----------------------------------------------------------------------------- normalise/diff
INDEX_FIELDS = {"createdIndex", "modifiedIndex", "index"}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
INORDER = re.compile(r"/(\d{20})$")


class Norm:
    def __init__(self, records, mode):
        self.mode = mode
        self.base = None
        self.max = 0
        for r in records:
            h = ((r.get("response") or {}).get("headers") or {})
            if "X-Etcd-Index" in h:
                v = int(h["X-Etcd-Index"])
                if self.base is None:
                    self.base = v
                self.max = max(self.max, v)
        if self.base is None:
            self.base = 0

    def idx(self, v):
        v = int(v)
        if self.mode == "ignore":
            return "<idx>"
        d = v - self.base
        return "i%+d" % d

    def text(self, s, base_url):
        if base_url:
            s = s.replace(base_url, "<base>")
        return s

    def cause(self, s):
        def sub(m):
            v = int(m.group(0))
            if self.base <= v <= self.max:
                return self.idx(v)
            return m.group(0)
        return re.sub(r"\d+", sub, s)

    def key(self, k):
        m = INORDER.search(k)
        if m:
            return k[:m.start(1)] + "<" + self.idx(m.group(1)) + ">"
        return k

    def node(self, n):
        if isinstance(n, dict):
            out = {}
            for k, v in n.items():
                if k in INDEX_FIELDS and isinstance(v, int):
                    out[k] = self.idx(v)
                elif k == "key" and isinstance(v, str):
                    out[k] = self.key(v)
                elif k == "expiration" and isinstance(v, str):
                    out[k] = "<ts>" if RFC3339.match(v) else "<bad-ts:%s>" % v
                elif k == "ttl" and isinstance(v, int):
                    out[k] = "<ttl>" if v > 0 else v
                elif k == "cause" and isinstance(v, str):
                    out[k] = self.cause(v)
                elif k == "nodes" and isinstance(v, list):
                    out[k] = [self.node(x) for x in v]
                else:
                    out[k] = self.node(v)
            return out
        if isinstance(n, list):
            return [self.node(x) for x in n]
        return n


MEMBER_KEYS = {"peerURLs", "clientURLs"}


def norm_members(obj):
    def one(m):
        m = dict(m)
        if "id" in m:
            m["id"] = "<id>"
        return m
    if isinstance(obj, dict) and "members" in obj and isinstance(obj["members"], list):
        ms = [one(m) for m in obj["members"]]
        ms.sort(key=lambda m: (m.get("name", ""), m.get("peerURLs", [])))
        return {**obj, "members": ms}
    if isinstance(obj, dict) and MEMBER_KEYS & set(obj) and "id" in obj:
        return one(obj)
    if isinstance(obj, dict) and "leader" in obj and "followers" in obj:
        f = obj["followers"]
        return {**obj, "leader": "<id>",
                "followers": {"<id>": v for v in f.values()} if isinstance(f, dict) else f}
    if isinstance(obj, dict) and isinstance(obj.get("message"), str):
        return {**obj, "message": HEXID.sub("<id>", obj["message"])}
    return obj


HEXID = re.compile(r"\b[0-9a-f]{12,16}\b")


def sort_listing(n):
    """Unsorted directory listings come in Go map order: sort nodes by key."""
    if isinstance(n, dict):
        n = {k: sort_listing(v) for k, v in n.items()}
        if isinstance(n.get("nodes"), list):
            n["nodes"] = sorted(n["nodes"], key=lambda x: str(x.get("key")))
        return n
    if isinstance(n, list):
        return [sort_listing(x) for x in n]
    return n


def replace_base(obj, base):
    if isinstance(obj, str):
        return obj.replace(base, "<base>") if base else obj
    if isinstance(obj, list):
        return [replace_base(x, base) for x in obj]
    if isinstance(obj, dict):
        return {k: replace_base(v, base) for k, v in obj.items()}
    return obj


def skeleton(obj):
    if isinstance(obj, dict):
        return {k: skeleton(v) for k, v in sorted(obj.items())}
    if isinstance(obj, list):
        return [skeleton(obj[0])] if obj else []
    return type(obj).__name__


HDR_EXACT = ("Content-Type", "Location", "Allow")
HDR_PRESENT = ("X-Raft-Index", "X-Raft-Term", "X-Etcd-Cluster-Id")


def norm_response(resp, mode, nz, base_url):
    if resp is None:
        return None
    out = {"status": resp.get("status")}
    if mode == "status":
        if "status_histogram" in resp:
            out["status_histogram"] = resp["status_histogram"]
        return out
    h = resp.get("headers") or {}
    out["headers"] = {}
    for k in HDR_EXACT:
        if k in h:
            out["headers"][k] = replace_base(h[k], base_url)
    for k in HDR_PRESENT:
        if k in h:
            out["headers"][k] = "<present>"
    if "X-Etcd-Index" in h:
        out["headers"]["X-Etcd-Index"] = nz.idx(h["X-Etcd-Index"])
    if "status_histogram" in resp:
        out["status_histogram"] = resp["status_histogram"]
    body = resp.get("body_json")
    if mode == "shape":
        out["headers"] = {k: v for k, v in out["headers"].items() if k == "Content-Type"}
        out["body_shape"] = skeleton(norm_members(body))
        return out
    if "body_lines" in resp:
        evs = []
        for ln in resp["body_lines"]:
            try:
                evs.append(nz.node(json.loads(ln)))
            except ValueError:
                evs.append(ln)
        out["body_events"] = evs
    elif body is not None:
        out["body"] = replace_base(norm_members(sort_listing(nz.node(body))), base_url)
    elif resp.get("body_text"):
        out["body_text"] = replace_base(resp["body_text"], base_url)
    return out


CASE_BY_ID = {c["id"]: c for cs in ALL_CASES.values() for c in cs}


def normalise(rec, nz):
    # the compare mode of the current case table wins over the one stored in the recording
    mode = CASE_BY_ID.get(rec["id"], rec).get("compare", rec.get("compare", "full"))
    base = rec.get("base")
    if mode == "none":
        return {"id": rec["id"], "compare": "none"}
    path = rec.get("path_template") or ""
    out = {"id": rec["id"], "compare": mode,
           "request": {"method": (rec.get("request") or {}).get("method"), "path": path,
                       "body": replace_base((rec.get("request") or {}).get("body"), base)}}
    if "runner_error" in rec:
        out["runner_error"] = rec["runner_error"]
    if rec.get("kind") in ("watch_timeout", "watch_concurrent", "stream"):
        out["client_timeout"] = rec.get("client_timeout")
    out["response"] = norm_response(rec.get("response"), mode, nz, base)
    if rec.get("triggers"):
        out["triggers"] = [norm_response(t.get("response"), "status", nz, base)
                           for t in rec["triggers"]]
    return out


def load(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def cmd_normalize(args):
    recs = load(args.file)
    nz = Norm(recs, args.index)
    for r in recs:
        print(json.dumps(normalise(r, nz), sort_keys=True))


def cmd_diff(args):
    a, b = load(args.a), load(args.b)
    na, nb = Norm(a, args.index), Norm(b, args.index)
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
        import difflib
        for line in difflib.unified_diff(fx, fy, args.a, args.b, lineterm="", n=1):
            print("   " + line)
    total = len(set(ma) | set(mb))
    print(f"{ndiff} of {total} cases differ (index mode: {args.index})")
    return 1 if ndiff else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)
    r = sp.add_parser("run")
    r.add_argument("--base", required=True, help="e.g. http://127.0.0.1:2379")
    r.add_argument("--sections", default="keys", help="keys, members or keys,members")
    r.add_argument("--only", help="regex on case ids")
    r.add_argument("--out")
    r.add_argument("-v", "--verbose", action="store_true")
    n = sp.add_parser("normalize")
    n.add_argument("file")
    n.add_argument("--index", choices=("relative", "ignore"), default="relative")
    d = sp.add_parser("diff")
    d.add_argument("a")
    d.add_argument("b")
    d.add_argument("--index", choices=("relative", "ignore"), default="relative")
    args = ap.parse_args()
    if args.cmd == "run":
        cmd_run(args)
    elif args.cmd == "normalize":
        cmd_normalize(args)
    else:
        sys.exit(cmd_diff(args))


if __name__ == "__main__":
    main()
