"""What scripts/bench-vs-etcd and scripts/bench-containers share when they summarise their
rounds: each round's reports are read from OUT/<round>/<server>/<scenario>/report.json, and
ratios are taken per round (the two servers run back to back) before the median."""
import json, statistics


class Rounds:
    def __init__(self, out, rounds):
        self.out, self.rounds = out, range(1, rounds + 1)

    def load(self, r, server, name):
        return json.load(open(f"{self.out}/{r}/{server}/{name}/report.json"))

    def med(self, server, name, key):
        return statistics.median(figures(self.load(r, server, name))[key] for r in self.rounds)

    def round_ratios(self, name, key, pre=""):
        # `pre` = "one-thread/" reads the pass with one-thread runtimes.
        return [figures(self.load(r, pre + "detcd", name))[key] / figures(self.load(r, pre + "etcd", name))[key]
                for r in self.rounds]

    def ratio(self, name, key, pre=""):
        return statistics.median(self.round_ratios(name, key, pre))

    def all_ok(self, server, name):
        return all(figures(self.load(r, server, name))["ok"] for r in self.rounds)


def figures(rep):
    """Writes/s over the whole run, the steady phase's write p50/p99/p999/max, every check passed."""
    ph = [p for p in rep["phases"] if p["writes"]["count"] > 0]
    n = sum(p["writes"]["count"] for p in ph)
    secs = max(p["end_s"] for p in rep["phases"])
    ok = all(c["verdict"] == "pass" for c in rep["checks"])
    return {"wps": n / secs, "p50": rep["phases"][0]["writes"]["p50_ms"],
            "p99": rep["phases"][0]["writes"]["p99_ms"], "p999": rep["phases"][0]["writes"]["p999_ms"],
            "max": rep["phases"][0]["writes"]["max_ms"], "ok": ok, "rep": rep}


def kill_figs(rep):
    """Unavailable s (inf: no write invoked after the kill was acknowledged), the fault phase's
    write p99 (None: no write completed inside it), its slowest write, the linearizability verdict."""
    un = max((u["unavailable_s"] if u["unavailable_s"] is not None else float("inf")) for u in rep["unavailability"])
    fp = [p for p in rep["phases"] if p["name"].startswith("fault")]
    worst = max(p["writes"]["max_ms"] for p in fp) if fp else 0
    p99 = max((p["writes"]["p99_ms"] for p in fp if p["writes"]["count"]), default=None)
    lin = [x["verdict"] for x in rep["checks"] if x["name"] == "linearizable"][0]
    return un, p99, worst, lin
