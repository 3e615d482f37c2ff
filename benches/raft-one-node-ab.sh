#!/usr/bin/env bash
# One round of the standard workload against one broker binary, the broker alone on CPU 0
# and the generator on CPU 1, so two builds can be compared in interleaved rounds.
#   benches/raft-one-node-ab.sh BIN NAME OUT.json
# (benches/results/2026-12-02-raft-one-node.md gives the commands that produced it.)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 name=$2 out=$3
port=${SLUICE_AB_PORT:-19392}
mkdir -p target
dir=$(mktemp -d target/ab-XXXX)
taskset -c 0 "$bin" start --listen "127.0.0.1:$port" --data-dir "$dir" --cores 1 >"$dir.log" 2>&1 &
pid=$!
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
taskset -c 1 target/release/sluice-bench --workload benches/workloads/omb-1topic-16p-1kb.toml \
    --duration 30 --warmup 10 --target "$name=127.0.0.1:$port" --broker-pid "$name=$pid" \
    --floor-dir target/ab-floor --json "$out" >"$out.txt"
kill -TERM "$pid"
wait "$pid" || true
rm -rf "$dir" "$dir.log"
