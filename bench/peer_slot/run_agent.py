#!/usr/bin/env python3
"""Peer-bench slot for edgegw in each wire format (bench/peer_formats.sh runs it).

    GATEWAY_CMD="python3 bench/peer_slot/run_agent.py {scenario_json} {run_dir}"

Turns the harness's scenario document into an edgegw config and execs the agent. Env: EDGEGW
(the project's edgegw executable), FORMAT (edgegw | thingsboard | sparkplug), BATCH_S
(telemetry.batch_interval, default 1), EDGEGW_ARGS (more flags for `edgegw run`).
"""

import json
import os
import sys

with open(sys.argv[1]) as f:
    sc = json.load(f)
run_dir = sys.argv[2]
fmt = os.environ.get("FORMAT", "edgegw")
mqtt = f'url: "mqtt://{sc["mqtt"]["host"]}:{sc["mqtt"]["port"]}", topic_prefix: city/v1'
if fmt == "thingsboard":
    mqtt += ', format: thingsboard, thingsboard: {device_name: "{device}"}'
elif fmt == "sparkplug":
    mqtt += ", format: sparkplug, sparkplug: {group_id: bench}"
lines = [
    "gateway: {id: gw-bench, site: bench, groups: [bench],",
    "          location: {lat: 10.7769, lon: 106.7009, timezone: Asia/Ho_Chi_Minh}}",
    f"mqtt: {{{mqtt}}}",
    f"telemetry: {{batch_interval: {os.environ.get('BATCH_S', '1')}}}",
    f"store: {{path: {run_dir}/edgegw-store.db, max_mb: 256}}",
    "service: {connect_jitter: 0}",
    "buses:",
    f'  - {{name: lan, type: modbus-tcp, host: {sc["modbus"]["host"]}, '
    f'port: {sc["modbus"]["port"]}}}',
    "devices:",
]
for d in sc["devices"]:
    lines += [f"  - name: {d['name']}", "    bus: lan", f"    unit: {d['unit_id']}",
              f"    poll: {sc['poll_period_ms'] / 1000}", "    points:"]
    for r in d["registers"]:
        table = {3: "holding", 4: "input"}[r["function_code"]]
        lines.append(f"      - {{name: {r['key']}, table: {table}, address: {r['address']}, "
                     f"type: {r['type']}}}")
cfg = os.path.join(run_dir, "edgegw.yaml")
with open(cfg, "w") as f:
    f.write("\n".join(lines) + "\n")
exe = os.environ["EDGEGW"]
os.execv(exe, [exe, "run", "--config", cfg, *os.environ.get("EDGEGW_ARGS", "").split()])
