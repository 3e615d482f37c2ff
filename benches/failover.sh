#!/usr/bin/env bash
# Producer-seen latency across a leader kill (issues #10 and #13): for each cluster in turn,
# alone on the machine, start it (3 brokers), create an RF=3 topic, run sluice-bench's
# failover workload (idempotent acks=all producers, benches/workloads/failover-16p-1kb.toml)
# and, KILL_AFTER seconds into the measured window, kill -9 the broker leading most of the
# topic's partitions. It stays down: what is measured is the failover, not the rejoin.
#
#   benches/failover.sh [--targets sluice,kafka] [--kill-after 15] [--out DIR] [--rounds 1]
#
# Writes DIR/failover-<target>-<round>.json (sluice-bench's report, floors included) and
# prints a summary line per run. Sluice runs through tests/cluster/cluster.sh (--cores 1
# per broker), Kafka through benches/kafka/kafka.sh start-cluster (default profile).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
targets="sluice,kafka" kill_after=15 out="$root/target/failover" rounds=1
while [ $# -gt 0 ]; do
    case "$1" in
        --targets) targets=${2:?}; shift 2 ;;
        --kill-after) kill_after=${2:?}; shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        --rounds) rounds=${2:?}; shift 2 ;;
        *) echo "usage: failover.sh [--targets sluice,kafka] [--kill-after S] [--out DIR] [--rounds N]" >&2; exit 2 ;;
    esac
done
sluice="$root/target/release/sluice" bench="$root/target/release/sluice-bench"
workload="$root/benches/workloads/failover-16p-1kb.toml"
for b in "$sluice" "$bench"; do
    [ -x "$b" ] || { echo "no $b (cargo build --release -p sluice-broker -p sluice-benches)" >&2; exit 1; }
done
# Seconds from sluice-bench's "round 1/1" line to the kill: its warm-up, then KILL_AFTER.
warmup=$(awk -F' = ' '$1 == "warmup_secs" { print $2 }' "$workload")
mkdir -p "$out"
work=$(mktemp -d -t sluice-failover-XXXXXX)
trap 'stop_all; rm -rf "$work"' EXIT

stop_all() {
    bash "$root/tests/cluster/cluster.sh" stop --dir "$work/sluice" >/dev/null 2>&1 || true
    bash "$root/benches/kafka/kafka.sh" stop-cluster --data-dir "$work/kafka" >/dev/null 2>&1 || true
}

# Starts cluster $1; prints its bootstrap list.
start() {
    case "$1" in
        sluice) bash "$root/tests/cluster/cluster.sh" start --dir "$work/sluice" --bin "$sluice" | tail -n 1 ;;
        kafka)
            local base
            base=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
            bash "$root/benches/kafka/kafka.sh" start-cluster --base-port "$base" --data-dir "$work/kafka" | tail -n 1 ;;
    esac
}

# Kills broker $2 of cluster $1 with SIGKILL.
kill_broker() {
    case "$1" in
        sluice) kill -9 "$(cat "$work/sluice/broker-$2.pid")" ;;
        kafka) bash "$root/benches/kafka/kafka.sh" kill-node --data-dir "$work/kafka" --node "$2" >/dev/null ;;
    esac
}

# The broker leading most partitions of topic $2 at bootstrap $1 (lowest id on a tie).
busiest_leader() {
    "$sluice" topic describe --brokers "$1" "$2" --format json | python3 -c '
import collections, json, sys
leaders = collections.Counter(p["leader"] for p in json.load(sys.stdin)["partitions"])
print(sorted(leaders.items(), key=lambda kv: (-kv[1], kv[0]))[0][0])'
}

IFS=, read -r -a list <<<"$targets"
for ((round = 1; round <= rounds; round++)); do
    for t in "${list[@]}"; do
        stop_all
        rm -rf "${work:?}/$t"
        bootstrap=$(start "$t")
        topic="failover-$t-$round"
        "$sluice" topic create --brokers "$bootstrap" "$topic" --partitions 16 --replicas 3 >/dev/null
        # Leaders settle (Sluice hands leadership to preferred replicas after ~10 s).
        sleep 15
        victim=$(busiest_leader "$bootstrap" "$topic")
        log="$work/bench-$t.log"
        "$bench" --workload "$workload" --target "$t=$bootstrap" --topic "$topic" \
            --json "$out/failover-$t-$round.json" >"$log" 2>&1 &
        bench_pid=$!
        until grep -q "round 1/1" "$log" 2>/dev/null; do
            kill -0 "$bench_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
            sleep 0.2
        done
        sleep "$(python3 -c "print($warmup + $kill_after)")"
        kill_broker "$t" "$victim"
        echo "[$t] round $round: killed broker $victim (leading most of $topic) ${kill_after}s into the window" >&2
        wait "$bench_pid" || { cat "$log" >&2; exit 1; }
        python3 - "$out/failover-$t-$round.json" "$t" "$victim" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["targets"][0]
a, c = t["produce_ack"], t["counts"]
ms = lambda us: round(us / 1000, 1)
print(f'{sys.argv[2]}: killed {sys.argv[3]}; produce->ack p50 {ms(a["p50_us"])} p99 {ms(a["p99_us"])} '
      f'p99.9 {ms(a["p99_9_us"])} max {ms(a["max_us"])} ms; acked {c["acked_total"]} of {c["sent"]}, '
      f'errors {c["produce_errors"]}; fdatasync floor p99.9 '
      f'{ms(((r.get("floors") or {}).get("fdatasync") or {}).get("p99_9_us", 0))} ms')
EOF
    done
done
