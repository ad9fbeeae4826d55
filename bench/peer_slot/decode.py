#!/usr/bin/env python3
"""Peer-bench slot decoder for edgegw's formats: the harness's NDJSON {"t","topic","b64"} on
stdin, one {"points", "samples"} line per message on stdout.

Our format goes through `edgegw platform decode`; Sparkplug B is decoded here with the
project's payload module, as a host application does (aliases from the births, which the
harness passes as context before the window). Run with the project's Python (EDGEGW_PYTHON).
"""

import base64
import json
import os
import subprocess
import sys

msgs = [json.loads(line) for line in sys.stdin if line.strip()]
if os.environ.get("FORMAT", "edgegw") == "sparkplug":
    from gateway.northbound.sparkplug_pb import Payload

    names: dict[tuple[str, int], str] = {}
    for m in msgs:
        parts = m["topic"].split("/")
        verb, device = parts[2], parts[4] if len(parts) > 4 else "gateway"
        p = Payload.FromString(base64.b64decode(m["b64"]))
        samples = []
        if verb in ("NBIRTH", "DBIRTH"):
            for x in p.metrics:
                if x.HasField("alias"):
                    names[(device, x.alias)] = x.name
        elif verb in ("DDATA", "NDATA"):
            for x in p.metrics:
                which = x.WhichOneof("value")
                if which is None:
                    continue
                v = getattr(x, which)
                samples.append([device, names.get((device, x.alias), str(x.alias)), x.timestamp,
                                v])
        print(json.dumps({"points": len(samples) if verb == "DDATA" else 0,
                          "samples": samples if verb == "DDATA" else []}))
    sys.exit(0)

inp = "".join(json.dumps({"topic": m["topic"], "payload_b64": m["b64"]}) + "\n" for m in msgs)
p = subprocess.run([os.environ["EDGEGW"], "platform", "decode"], input=inp, capture_output=True,
                   text=True)
if p.returncode != 0:
    sys.exit(f"edgegw platform decode rc={p.returncode}: {p.stderr[-2000:]}")
out = [json.loads(line) for line in p.stdout.splitlines() if line.strip().startswith("{")]
if len(out) != len(msgs):
    sys.exit(f"edgegw platform decode printed {len(out)} lines for {len(msgs)} messages")
for o in out:
    pts = o.get("points", []) if o.get("kind") == "telemetry" else []
    print(json.dumps({"points": len(pts), "samples": [
        [x.get("device"), x.get("point"), x.get("ts"), x.get("value")] for x in pts]}))
