#!/usr/bin/env bash
# A cluster of Sluice brokers on loopback for the real-client suites (tests/go,
# tests/python, tests/java), which use it through SLUICE_BOOTSTRAP.
#
#   cluster.sh start --dir D [--brokers N] [--bin PATH] [--rpc-proxies ADDR1,...,ADDRN]
#       Starts N (default 3) brokers, node ids 1..N, each with one shard (--cores 1), on
#       free loopback ports, every one an initial voter (the same --seeds list on each),
#       with default.replication.factor and offsets.topic.replication.factor = N. Waits
#       (bounded) until every broker's Metadata lists all N, then prints the Kafka
#       bootstrap list, comma-separated, on stdout. D gets config.toml, broker-I.log,
#       broker-I.pid, broker-I.cmd (its command line, for restart), data-I/, bootstrap,
#       admin (the admin HTTP addresses, one a line) and rpc (the RPC listen addresses,
#       one a line, written before any broker starts).
#       --rpc-proxies (one HOST:PORT per broker, for fault tests that cut links): broker I
#       still listens for RPC on its own port (line I of rpc) but advertises ADDRI, and
#       every broker's --seeds is the proxy list, so all inter-broker traffic to broker I
#       goes through whatever listens at ADDRI (which must be up before start: the
#       brokers need it to form the cluster). Clients (the Kafka ports) are not affected.
#       On failure it prints each log's tail, stops what it started and exits non-zero.
#   cluster.sh stop --dir D
#       SIGTERM to every broker recorded in D, waits (bounded), then SIGKILL.
#   cluster.sh restart --dir D --node I
#       Starts broker I again with the command line start gave it (kept in broker-I.cmd),
#       appending to broker-I.log, once its previous process has ended (refuses if it is
#       still running). Waits (bounded) until it answers Metadata listing every broker of
#       D. For fault tests that kill -9 a broker and bring it back.
set -euo pipefail

START_TIMEOUT_S=${SLUICE_CLUSTER_START_TIMEOUT_S:-90}
STOP_TIMEOUT_S=${SLUICE_CLUSTER_STOP_TIMEOUT_S:-20}

die() { echo "cluster.sh: $*" >&2; exit 1; }

usage() {
    echo "usage: cluster.sh start --dir D [--brokers N] [--bin PATH] [--rpc-proxies A1,...,AN]" \
        "| stop --dir D" \
        "| restart --dir D --node I" >&2
    exit 2
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
dir="" brokers=3 bin="" node="" proxies=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) dir=${2:?}; shift 2 ;;
        --brokers) brokers=${2:?}; shift 2 ;;
        --node) node=${2:?}; shift 2 ;;
        --bin) bin=${2:?}; shift 2 ;;
        --rpc-proxies) proxies=${2:?}; shift 2 ;;
        *) usage ;;
    esac
done
[ -n "$dir" ] || usage
case "$brokers" in ''|*[!0-9]*|0) die "--brokers wants a positive number, not '$brokers'" ;; esac

# Signals every broker recorded in $dir, waits up to STOP_TIMEOUT_S for them to end, then
# SIGKILLs what is left. A pid is only signalled while it is still a sluice process.
stop_cluster() {
    local pids=() pid f
    for f in "$dir"/broker-*.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
            && grep -q sluice "/proc/$pid/cmdline" 2>/dev/null; then
            pids+=("$pid")
        fi
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT_S)) alive
    while :; do
        alive=()
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive+=("$pid")
        done
        [ ${#alive[@]} -gt 0 ] || break
        if [ $SECONDS -ge $deadline ]; then
            echo "cluster.sh: brokers ${alive[*]} still running ${STOP_TIMEOUT_S}s after SIGTERM; SIGKILL" >&2
            kill -KILL "${alive[@]}" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$dir"/broker-*.pid
}

# True while $1 is a running (not zombie) sluice process: a zombie's cmdline is empty.
is_running_sluice() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null && grep -q sluice "/proc/$1/cmdline" 2>/dev/null
}

# Waits up to START_TIMEOUT_S until the broker at Kafka address $1, whose pid file is $2,
# lists $3 brokers in its own Metadata; false if it exits or the time runs out.
wait_lists() {
    local addr=$1 pidfile=$2 want=$3 listed pid
    local deadline=$((SECONDS + START_TIMEOUT_S))
    while :; do
        pid=$(cat "$pidfile")
        kill -0 "$pid" 2>/dev/null || { echo "cluster.sh: broker at $addr (pid $pid) exited" >&2; return 1; }
        listed=$(timeout 10 "$bin" cluster info --brokers "$addr" --format json 2>/dev/null \
            | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["brokers"]))' 2>/dev/null) || listed=0
        [ "$listed" = "$want" ] && return 0
        if [ $SECONDS -ge $deadline ]; then
            echo "cluster.sh: broker at $addr lists ${listed:-0} of $want brokers after ${START_TIMEOUT_S}s" >&2
            return 1
        fi
        sleep 0.5
    done
}

log_tails() {
    local f
    for f in "$dir"/broker-*.log; do
        [ -f "$f" ] || continue
        echo "----- $f (last 40 lines) -----" >&2
        tail -n 40 "$f" >&2
    done
}

case "$cmd" in
stop)
    stop_cluster
    ;;
restart)
    case "$node" in ''|*[!0-9]*) die "restart wants --node I (a node id)" ;; esac
    dir=$(cd "$dir" && pwd)
    cmdfile="$dir/broker-$node.cmd"
    [ -f "$cmdfile" ] || die "no $cmdfile: was broker $node started by this script?"
    old=$(cat "$dir/broker-$node.pid" 2>/dev/null || true)
    is_running_sluice "$old" && die "broker $node (pid $old) is still running"
    mapfile -d '' -t argv <"$cmdfile"
    bin=${argv[0]}
    want=$(find "$dir" -maxdepth 1 -name 'broker-*.cmd' | wc -l)
    addr=$(tr , '\n' <"$dir/bootstrap" | sed -n "${node}p")
    [ -n "$addr" ] || die "no Kafka address for broker $node in $dir/bootstrap"
    echo "cluster.sh: restart $(date -u +%FT%TZ)" >>"$dir/broker-$node.log"
    setsid "${argv[@]}" </dev/null >>"$dir/broker-$node.log" 2>&1 &
    echo $! >"$dir/broker-$node.pid"
    wait_lists "$addr" "$dir/broker-$node.pid" "$want"
    ;;
start)
    if [ -z "$bin" ]; then
        bin="$(cd "$(dirname "$0")/../.." && pwd)/target/debug/sluice"
    fi
    [ -x "$bin" ] || die "no sluice binary at $bin: cargo build -p sluice-broker (or --bin PATH)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    ls "$dir"/broker-*.pid >/dev/null 2>&1 && die "$dir already holds a cluster's pids; stop it first"

    # 3 ports per broker (Kafka, RPC, admin HTTP), all bound at once so they differ, then
    # released for the brokers to take.
    ports=$(python3 -c '
import socket, sys
socks = []
for _ in range(3 * int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$brokers")
    read -r -a port <<<"$ports"
    kafka=() rpc=() admin=()
    for ((i = 0; i < brokers; i++)); do
        kafka+=("127.0.0.1:${port[3 * i]}")
        rpc+=("127.0.0.1:${port[3 * i + 1]}")
        admin+=("127.0.0.1:${port[3 * i + 2]}")
    done
    # Each broker's advertised RPC address: its own listener, or its proxy.
    advertised=("${rpc[@]}")
    if [ -n "$proxies" ]; then
        IFS=, read -r -a advertised <<<"$proxies"
        [ ${#advertised[@]} -eq "$brokers" ] \
            || die "--rpc-proxies names ${#advertised[@]} addresses for $brokers brokers"
    fi
    seeds=$(IFS=,; echo "${advertised[*]}")
    bootstrap=$(IFS=,; echo "${kafka[*]}")
    # Before any broker starts: proxies read it to find their targets.
    printf '%s\n' "${rpc[@]}" >"$dir/rpc"

    cat >"$dir/config.toml" <<EOF
"default.replication.factor" = $brokers
"offsets.topic.replication.factor" = $brokers
EOF
    trap 'log_tails; stop_cluster' ERR
    for ((i = 0; i < brokers; i++)); do
        n=$((i + 1))
        # setsid: the brokers are not in the caller's process group, so a ^C or a
        # test harness's group kill does not reach them; stop does.
        argv=("$bin" start
            --node-id "$n"
            --data-dir "$dir/data-$n"
            --listen "${kafka[i]}" --advertised-listener "${kafka[i]}"
            --rpc-listen "${rpc[i]}")
        # Without proxies the command line is what it always was.
        if [ -n "$proxies" ]; then
            argv+=(--advertised-rpc-listener "${advertised[i]}")
        fi
        argv+=(--seeds "$seeds"
            --admin-listen "${admin[i]}"
            --cores 1 --config "$dir/config.toml")
        setsid "${argv[@]}" </dev/null >"$dir/broker-$n.log" 2>&1 &
        echo $! >"$dir/broker-$n.pid"
        # The same command line, NUL-separated, for restart.
        printf '%s\0' "${argv[@]}" >"$dir/broker-$n.cmd"
    done
    printf '%s\n' "$bootstrap" >"$dir/bootstrap"
    printf '%s\n' "${admin[@]}" >"$dir/admin"

    # Ready when each broker, asked on its own, lists all of them.
    deadline=$((SECONDS + START_TIMEOUT_S))
    for ((i = 0; i < brokers; i++)); do
        n=$((i + 1))
        while :; do
            pid=$(cat "$dir/broker-$n.pid")
            kill -0 "$pid" 2>/dev/null || { echo "cluster.sh: broker $n (pid $pid) exited" >&2; false; }
            listed=$(timeout 10 "$bin" cluster info --brokers "${kafka[i]}" --format json 2>/dev/null \
                | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["brokers"]))' 2>/dev/null) || listed=0
            [ "$listed" = "$brokers" ] && break
            if [ $SECONDS -ge $deadline ]; then
                echo "cluster.sh: broker $n at ${kafka[i]} lists ${listed:-0} of $brokers brokers after ${START_TIMEOUT_S}s" >&2
                false
            fi
            sleep 0.5
        done
    done
    trap - ERR
    echo "$bootstrap"
    ;;
*)
    usage
    ;;
esac
