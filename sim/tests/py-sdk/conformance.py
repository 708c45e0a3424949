"""Drives a running flexdisk-sim with Azure's official Python SDK (azure-mgmt-compute over
azure-identity and azure-core): credentials (a client secret against the simulated Entra ID, the
node's managed identity through the App Service protocol and IMDS), disks created, listed,
attached through each VM kind's API (a VM's full-model PUT with If-Match and its PATCH, a
scale-set instance's PUT, attachDetachDataDisks on both), grown, snapshotted, deleted, throttled
and failed operations — every long-running operation through the SDK's own pollers. Every answer
the SDK received is decoded into the SDK's own model and checked (check.py).

Input: the simulator's ready line on stdin. Environment: REQUESTS_CA_BUNDLE (the simulator's CA),
IDENTITY_ENDPOINT and IDENTITY_HEADER of one node. Output: one line per scenario (PASS/FAIL,
duration), then one JSON summary line; exit status 1 when anything failed. Traffic goes only to
the addresses in the ready line (loopback)."""

import json
import logging
import sys
import time
import traceback
from importlib.metadata import version

from check import Deserializers, check_all, self_test
from scenarios import scenarios
from world import Exchange, World


def main():
    # azure-identity logs every failed token request; the scenarios make some on purpose and
    # report what went wrong themselves.
    logging.getLogger("azure.identity").setLevel(logging.ERROR)
    ready = json.load(sys.stdin)
    w = World(ready)
    deserializers = Deserializers(w.sp)
    self_test(deserializers, lambda method, path, status, body: Exchange(
        method, "http://x" + path, status, body, {}, ""))
    results = []
    for name, run in scenarios(w):
        started = time.monotonic()
        try:
            run()
            error = None
        except Exception as e:  # a scenario's failure is reported, and the others still run
            error = "%s: %s" % (type(e).__name__, e)
            traceback.print_exc()
        seconds = time.monotonic() - started
        results.append({"name": name, "ok": error is None, "seconds": round(seconds, 2), "error": error})
        print("%s %-42s %6.2fs%s" % ("PASS" if error is None else "FAIL", name, seconds,
                                      "  " + error if error else ""), flush=True)
    exchanges = w.rec.all()
    problems, checked = check_all(deserializers, exchanges)
    for p in problems:
        print("MODEL", p)
    requests, api_versions, agents = {}, {}, set()
    for e in exchanges:
        kind = kind_of(e.path)
        key = "%s %s%s" % (e.method, kind, " (monitor)" if e.query.get("monitor") == "true" else "")
        requests[key] = requests.get(key, 0) + 1
        api_versions.setdefault(kind, set()).add(e.query.get("api-version", ""))
        agents.add(e.user_agent)
    summary = {
        "scenarios": results,
        "exchanges": len(exchanges),
        "modelProblems": problems,
        "checked": checked,
        "requests": requests,
        "apiVersions": {k: sorted(v) for k, v in api_versions.items()},
        "userAgents": sorted(agents),
        "sdk": {p: version(p) for p in ("azure-mgmt-compute", "azure-identity", "azure-core", "msal")},
    }
    print(json.dumps(summary), flush=True)
    return 1 if problems or not all(r["ok"] for r in results) else 0


def kind_of(path):
    """What a path addresses, by its last resource type ("disks", "virtualMachines",
    "attachDetachDataDisks", "operations", …; "(list)" for a collection)."""
    types = ["disks", "snapshots", "virtualMachines", "virtualMachineScaleSets",
             "attachDetachDataDisks", "operations", "DiskOperations"]
    segs = path.strip("/").split("/")
    kind = "other"
    for i, s in enumerate(segs):
        for t in types:
            if s.lower() == t.lower():
                kind = t + (" (list)" if i == len(segs) - 1 and t != "attachDetachDataDisks" else "")
    return kind


if __name__ == "__main__":
    sys.exit(main())
