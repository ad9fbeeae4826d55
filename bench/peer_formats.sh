#!/usr/bin/env bash
# Wire bytes, CPU and RSS per point for each of edgegw's wire formats and for the ThingsBoard IoT
# Gateway, on the peer bench's scenarios, one after the other on this machine (run it on a quiet
# machine; the figures of one run are compared with each other):
#
#   PEER_ROOT=/tmp/peerbench bash bench/peer_formats.sh [S2] [REPS]
#
# FORMATS="sparkplug" runs only those formats; WITH_PEER=0 leaves the ThingsBoard gateway out.
#
# Needs ../shared/peer-bench set up (its setup_env.sh) and this checkout's .venv. Prints one
# JSON line per run (also appended to $RESULTS) and a table of medians at the end.
set -euo pipefail
proj=$(cd "$(dirname "$0")/.." && pwd)
peer=${PEER_BENCH:-$proj/../shared/peer-bench}
scenario=${1:-S2}
reps=${2:-1}
results=${RESULTS:-$proj/bench/peer_formats.jsonl}
: "${PEER_ROOT:?set PEER_ROOT to the venv root of the peer bench (see its README)}"
export EDGEGW="$proj/.venv/bin/edgegw" PYTHONPATH="$proj"
cd "$peer"
for _ in $(seq "$reps"); do
    if [ "${WITH_PEER:-1}" != 0 ]; then
        python3 bench.py --gateway tb --scenario "$scenario" --results "$results"
    fi
    for fmt in ${FORMATS:-edgegw thingsboard sparkplug}; do
        case $fmt in
            edgegw) topics='city/v1/+/telemetry,city/v1/+/state'; dec=cmd ;;
            thingsboard) topics='v1/gateway/telemetry'; dec=tb ;;
            sparkplug) topics='spBv1.0/#'; dec=cmd ;;
        esac
        FORMAT=$fmt GATEWAY_NAME="edgegw-$fmt" TELEMETRY_TOPICS=$topics EDGEGW_ARGS=--no-log-samples \
        GATEWAY_CMD="$proj/.venv/bin/python $proj/bench/peer_slot/run_agent.py {scenario_json} {run_dir}" \
        DECODE_CMD="$proj/.venv/bin/python $proj/bench/peer_slot/decode.py" \
            python3 bench.py --gateway cmd --decoder "$dec" --scenario "$scenario" --inherit-env \
            --results "$results"
    done
done
python3 bench.py --summarize "$results"
