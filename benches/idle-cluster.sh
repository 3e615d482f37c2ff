#!/usr/bin/env bash
# Idle cost of a 3-broker cluster as its partition count grows (issue #13): for each
# count, a topic of that many RF=3 partitions is added, the cluster is left alone until
# leadership has settled, then over a window of idle time each broker's CPU (utime +
# stime from /proc) and its inter-broker RPC counters (/metrics) are sampled.
#
#   benches/idle-cluster.sh [--bin PATH] [--counts 100,1000] [--settle-s 40] [--window-s 30]
#
# Counts are topic partitions besides the 50 RF=3 partitions of __consumer_offsets, which
# the cluster always holds. Prints one JSON object per count, and one before any topic
# (count 0), to stdout. Run it alone on the
# machine: CPU figures of a thread-per-core broker are meaningless beside other load.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/sluice" counts="100,1000" settle=40 window=30
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin=${2:?}; shift 2 ;;
        --counts) counts=${2:?}; shift 2 ;;
        --settle-s) settle=${2:?}; shift 2 ;;
        --window-s) window=${2:?}; shift 2 ;;
        *) echo "usage: idle-cluster.sh [--bin PATH] [--counts N,N] [--settle-s S] [--window-s S]" >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || { echo "no sluice binary at $bin (cargo build --release -p sluice-broker)" >&2; exit 1; }

dir=$(mktemp -d -t sluice-idle-XXXXXX)
cleanup() { bash "$root/tests/cluster/cluster.sh" stop --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
bootstrap=$(bash "$root/tests/cluster/cluster.sh" start --dir "$dir" --bin "$bin")
mapfile -t admins <"$dir/admin"
clk=$(getconf CLK_TCK)

# CPU seconds (user + system) of broker $1 so far.
cpu_s() {
    awk -v t="$clk" '{ print ($14 + $15) / t }' "/proc/$(cat "$dir/broker-$1.pid")/stat"
}

# The sum over shards of RPC counter $2 on broker $1.
rpc_counter() {
    curl -sf "http://${admins[$(($1 - 1))]}/metrics" \
        | awk -v m="$2" '$1 ~ "^"m"(\\{|$)" { s += $2 } END { printf "%d\n", s }'
}

# One line per broker: CPU seconds, frames, group messages and bytes sent so far.
snapshot() {
    local n
    for n in 1 2 3; do
        echo "$(cpu_s "$n") $(rpc_counter "$n" sluice_rpc_frames_sent_total)" \
            "$(rpc_counter "$n" sluice_rpc_messages_sent_total)" \
            "$(rpc_counter "$n" sluice_rpc_sent_bytes_total)"
    done
}

# Samples every broker over the window and prints one JSON object.
measure() {
    local before after
    before=$(snapshot)
    sleep "$window"
    after=$(snapshot)
    python3 - "$1" "$window" "$before" "$after" <<'EOF'
import json, sys
parts, window = int(sys.argv[1]), float(sys.argv[2])
before, after = ([list(map(float, l.split())) for l in a.splitlines()] for a in sys.argv[3:5])
# Per broker and column: the rate over the window.
rates = [[(y - x) / window for x, y in zip(b, a)] for b, a in zip(before, after)]
col = lambda i, digits: [round(r[i], digits) for r in rates]
print(json.dumps({
    # Besides the 50 RF=3 partitions of __consumer_offsets.
    "topic_partitions_rf3": parts,
    "window_s": window,
    "cpu_share_of_core": col(0, 4),
    # Each broker has two peers: per link is half of what it sends.
    "frames_per_s_sent": col(1, 1),
    "messages_per_s_sent": col(2, 1),
    "bytes_per_s_sent": col(3, 1),
}))
EOF
}

sleep "$settle"
measure 0
created=0
IFS=, read -r -a list <<<"$counts"
for c in "${list[@]}"; do
    add=$((c - created))
    [ "$add" -gt 0 ] || continue
    "$bin" topic create --brokers "$bootstrap" "idle-$c" --partitions "$add" --replicas 3 >/dev/null
    created=$c
    sleep "$settle"
    measure "$created"
done
