#!/usr/bin/env bash
# Smoke check of kafka.sh's cluster mode: start a 3-node cluster, create a topic with
# 6 partitions and replication factor 3, produce (acks=all) and consume, SIGKILL the
# leader of partition 0, check the ISR shrinks and produce still works
# (min.insync.replicas=2), restart the node, check it rejoins every ISR, stop the
# cluster and check no JVM is left.
#
#   cluster-smoke.sh [--base-port P] [--keep]
#
# Not part of CI: three JVMs are heavy on a small machine. Needs `kafka.sh fetch` first.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K="$HERE/kafka.sh"
# After a SIGKILL the controller fences the node after broker.session.timeout.ms
# (9 s by default) and only then shrinks the ISRs.
ISR_SHRINK_TIMEOUT_S="${SMOKE_ISR_SHRINK_TIMEOUT_S:-60}"
REJOIN_TIMEOUT_S="${SMOKE_REJOIN_TIMEOUT_S:-90}"
TOPIC=smoke
PARTITIONS=6

base=39092 keep=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --base-port) base="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "cluster-smoke.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

D="$(mktemp -d "${TMPDIR:-/tmp}/kafka-cluster-smoke.XXXXXX")"
B="127.0.0.1:$base,127.0.0.1:$(( base + 1 )),127.0.0.1:$(( base + 2 ))"
STARTED=0

fail() {
    echo "cluster-smoke.sh: FAIL: $*" >&2
    exit 1
}

finish() {
    local rc=$?
    if (( STARTED )); then "$K" stop-cluster --data-dir "$D" >/dev/null 2>&1 || true; fi
    if (( keep || rc != 0 )); then
        echo "cluster-smoke.sh: data and logs kept in $D" >&2
    else
        rm -rf "$D"
    fi
}
trap finish EXIT
trap 'exit 130' INT TERM

topics() { "$K" tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$B" "$@"; }

# The ISR of each partition of $TOPIC, one line each
isrs() {
    topics --describe --topic "$TOPIC" 2>/dev/null | sed -n 's/.*Partition: .*Isr: \([0-9,]*\).*/\1/p'
}

# Wait until every partition's ISR satisfies predicate $1 (a function of one ISR), or
# $2 seconds pass.
wait_isrs() {
    local pred="$1" deadline=$(( SECONDS + $2 )) isr all
    while (( SECONDS < deadline )); do
        all="$(isrs || true)"
        if [[ "$(wc -l <<<"$all")" == "$PARTITIONS" ]] && [[ -n "$all" ]]; then
            local ok=1
            while read -r isr; do "$pred" "$isr" || ok=0; done <<<"$all"
            (( ok )) && return 0
        fi
        sleep 1
    done
    echo "$all" >&2
    return 1
}
isr_full() { [[ "$(tr ',' '\n' <<<"$1" | wc -l)" == 3 ]]; }
isr_without_victim() { [[ ",$1," != *",$VICTIM,"* && "$(tr ',' '\n' <<<"$1" | wc -l)" == 2 ]]; }

# produce N records with acks=all; prints ProducerPerformance's summary line
produce() {
    local out
    out="$("$K" tool org.apache.kafka.tools.ProducerPerformance --topic "$TOPIC" \
        --num-records "$1" --record-size 200 --throughput 5000 \
        --command-property bootstrap.servers="$B" acks=all 2>&1)" || { echo "$out" >&2; return 1; }
    grep -q "^$1 records sent" <<<"$out" || { echo "$out" >&2; return 1; }
    grep "^$1 records sent" <<<"$out"
}

consume_count() {
    "$K" tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$B" \
        --topic "$TOPIC" --from-beginning --max-messages "$1" --timeout-ms 30000 2>&1 >/dev/null \
        | sed -n 's/^Processed a total of \([0-9]*\) messages/\1/p' || true   # a short count says enough
}

t=$SECONDS
STARTED=1
"$K" start-cluster --base-port "$base" --data-dir "$D" || fail "start-cluster"
echo "== start-cluster took $(( SECONDS - t ))s"

topics --create --topic "$TOPIC" --partitions "$PARTITIONS" --replication-factor 3 >/dev/null \
    || fail "create topic"
topics --describe --topic "$TOPIC"
wait_isrs isr_full 30 || fail "a new topic's ISR is not all 3 replicas"

echo "== produce 20000 (acks=all)"
produce 20000 || fail "produce with 3 nodes"
n="$(consume_count 20000)"
[[ "$n" == 20000 ]] || fail "consumed ${n:-0} of 20000"
echo "== consumed $n"

VICTIM="$(topics --describe --topic "$TOPIC" | sed -n 's/.*Partition: 0\s.*Leader: \([0-9]*\).*/\1/p')"
[[ -n "$VICTIM" ]] || fail "no leader for partition 0"
t=$SECONDS
"$K" kill-node --data-dir "$D" --node "$VICTIM"
wait_isrs isr_without_victim "$ISR_SHRINK_TIMEOUT_S" || fail "ISRs did not drop node $VICTIM within ${ISR_SHRINK_TIMEOUT_S}s"
echo "== ISRs shrank to 2 without node $VICTIM $(( SECONDS - t ))s after the kill"
topics --describe --topic "$TOPIC"

echo "== produce 10000 (acks=all) with node $VICTIM down"
produce 10000 || fail "produce with 2 of 3 nodes (min.insync.replicas=2)"

t=$SECONDS
"$K" start-node --data-dir "$D" --node "$VICTIM" || fail "start-node $VICTIM"
wait_isrs isr_full "$REJOIN_TIMEOUT_S" || fail "node $VICTIM did not rejoin every ISR within ${REJOIN_TIMEOUT_S}s"
echo "== node $VICTIM back in every ISR $(( SECONDS - t ))s after start-node"
topics --describe --topic "$TOPIC"
n="$(consume_count 30000)"
[[ "$n" == 30000 ]] || fail "consumed ${n:-0} of 30000 after the restart"
echo "== consumed $n"

t=$SECONDS
"$K" stop-cluster --data-dir "$D"
STARTED=0
echo "== stop-cluster took $(( SECONDS - t ))s"
if pgrep -f -- "$D/node-" >/dev/null; then
    pgrep -af -- "$D/node-" >&2
    fail "a JVM is still running after stop-cluster"
fi
echo "== PASS (no JVM left)"
