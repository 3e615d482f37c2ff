#!/usr/bin/env bash
# Apache Kafka (from its Maven Central jars, KRaft combined mode: one node, or a
# cluster of combined nodes) as the reference peer for Sluice's tests and benchmarks.
#
#   kafka.sh fetch
#   kafka.sh start --port P --data-dir D [--profile default|fsync] [--heap 1g] [--cpus L] [--set K=V]...
#   kafka.sh stop  --data-dir D
#   kafka.sh start-cluster --base-port P --data-dir D [--brokers 3] [--profile default|fsync]
#                          [--heap 512m] [--cpus L] [--set K=V]...
#   kafka.sh stop-cluster --data-dir D
#   kafka.sh kill-node  --data-dir D --node N     (SIGKILL one cluster node)
#   kafka.sh start-node --data-dir D --node N     (start it again)
#   kafka.sh tool  CLASS [ARGS...]
#   kafka.sh classpath
#
# See README.md next to this script.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$HERE/lib"
START_TIMEOUT_S="${KAFKA_START_TIMEOUT_S:-90}"
STOP_TIMEOUT_S="${KAFKA_STOP_TIMEOUT_S:-30}"
# Three JVMs on a small machine start slower than one; this covers the JVMs and the probe.
CLUSTER_START_TIMEOUT_S="${KAFKA_CLUSTER_START_TIMEOUT_S:-180}"
TOOL_TIMEOUT_S="${KAFKA_TOOL_TIMEOUT_S:-60}"   # one probe run of TopicCommand
KILL_WAIT_S="${KAFKA_KILL_WAIT_S:-10}"         # for a SIGKILLed JVM to be gone

die() { echo "kafka.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------- helpers

# Write a KRaft combined-mode server.properties: FILE HEADER NODE_ID QUORUM PORT CPORT LOGS
# RF MIN_ISR PROFILE (the replication factor and min ISR apply to internal topics too).
write_props() {
    local file="$1" header="$2" node="$3" quorum="$4" port="$5" cport="$6" logs="$7"
    local rf="$8" min_isr="$9" profile="${10}"
    cat >"$file" <<PROPS
# $header
process.roles=broker,controller
node.id=$node
controller.quorum.bootstrap.servers=$quorum
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$logs
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
num.network.threads=2
num.io.threads=4
log.retention.hours=168
PROPS
    if [[ "$profile" == fsync ]]; then
        echo "log.flush.interval.messages=1" >>"$file"
    fi
}


have_lib() {
    [[ -d "$LIB" ]] && compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null \
        && compgen -G "$LIB/kafka-tools-*.jar" >/dev/null
}

need_lib() {
    have_lib || die "no Kafka jars in $LIB; run: $0 fetch"
}

# true if something accepts TCP connections on 127.0.0.1:$1
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# a free loopback port, chosen by the kernel
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
    else
        local p
        for _ in $(seq 1 200); do
            p=$(( 20000 + RANDOM % 40000 ))
            port_open "$p" || { echo "$p"; return 0; }
        done
        die "could not find a free port"
    fi
}

# Start kafka.Kafka on PROPS in the background, output to LOG, its pid written to
# PIDFILE right after the fork (callers poll for it). CPUS, if set, is a taskset -c
# list; taskset execs the JVM, so the pid stays the JVM's.
launch_jvm() {
    local props="$1" log="$2" pidfile="$3" heap="$4" cpus="${5:-}"
    local java pin=()
    java="$(java_cmd)"
    [[ -z "$cpus" ]] || pin=(taskset -c "$cpus")
    # shellcheck disable=SC2086
    nohup "${pin[@]}" "$java" -Xms256m -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true \
        -Dorg.slf4j.simpleLogger.defaultLogLevel="${KAFKA_LOG_LEVEL:-info}" \
        -Dorg.slf4j.simpleLogger.showDateTime=true \
        -Dorg.slf4j.simpleLogger.dateTimeFormat="yyyy-MM-dd'T'HH:mm:ss.SSS" \
        -Dorg.slf4j.simpleLogger.log.org.apache.kafka.clients=warn \
        ${KAFKA_JVM_OPTS:-} \
        -cp "$LIB/*" kafka.Kafka "$props" >"$log" 2>&1 </dev/null &
    echo "$!" >"$pidfile"
    # Not a job of this shell: a node we SIGKILL is not reported as "Killed" here.
    disown "$!"
}

java_cmd() {
    if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
        echo "$JAVA_HOME/bin/java"
    else
        command -v java >/dev/null 2>&1 || die "java not found (need Java 17+)"
        echo java
    fi
}

# ---------------------------------------------------------------- fetch

cmd_fetch() {
    if have_lib; then
        echo "kafka.sh: jars already in $LIB (delete it to fetch again)"
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn not found"
    local tmp="$HERE/target/lib.partial"   # target/ is git-ignored
    rm -rf "$tmp"; mkdir -p "$HERE/target"
    mvn -B -q -f "$HERE/pom.xml" dependency:copy-dependencies -DoutputDirectory="$tmp"
    rm -rf "$LIB"
    mv "$tmp" "$LIB"
    echo "kafka.sh: $(ls "$LIB" | wc -l) jars in $LIB"
}

# ---------------------------------------------------------------- start

cmd_start() {
    local port="" dir="" profile="default" heap="1g" cpus="" extra=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --port) port="$2"; shift 2 ;;
            --cpus) cpus="$2"; shift 2 ;;
            --set) [[ "$2" == *=* ]] || die "--set needs KEY=VALUE"; extra+=("$2"); shift 2 ;;
            --data-dir) dir="$2"; shift 2 ;;
            --profile) profile="$2"; shift 2 ;;
            --heap) heap="$2"; shift 2 ;;
            *) die "start: unknown argument '$1'" ;;
        esac
    done
    [[ -n "$port" && -n "$dir" ]] || die "start needs --port P --data-dir D"
    [[ "$profile" == default || "$profile" == fsync ]] || die "--profile must be default or fsync"
    need_lib

    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local pidfile="$dir/kafka.pid" log="$dir/kafka.log" props="$dir/server.properties"
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        die "a broker from $dir is already running (pid $(cat "$pidfile"))"
    fi
    port_open "$port" && die "port $port is already in use"

    # The controller port is recorded at format time (the KRaft voter set names its
    # endpoint), so a restart on the same data dir reuses it.
    local cport=""
    if [[ -f "$dir/controller.port" && -f "$dir/logs/meta.properties" ]]; then
        cport="$(cat "$dir/controller.port")"
        port_open "$cport" && die "controller port $cport (recorded in $dir/controller.port) is in use"
    else
        cport="$(free_port)"
        [[ "$cport" != "$port" ]] || cport="$(free_port)"
        echo "$cport" >"$dir/controller.port"
    fi

    local logs="$dir/logs"
    write_props "$props" "written by kafka.sh (profile: $profile)" 1 "127.0.0.1:$cport" \
        "$port" "$cport" "$logs" 1 1 "$profile"
    # Later lines win in a properties file, so --set overrides anything above.
    for kv in "${extra[@]}"; do
        echo "$kv" >>"$props"
    done

    local java cp
    java="$(java_cmd)"
    cp="$LIB/*"
    [[ -z "$cpus" ]] || command -v taskset >/dev/null 2>&1 || die "--cpus needs taskset"

    # Format a fresh log dir; an already formatted one is reused as is.
    if [[ ! -f "$logs/meta.properties" ]]; then
        local cid
        cid="$("$java" -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
        [[ -n "$cid" ]] || die "could not generate a cluster id"
        if ! "$java" -cp "$cp" kafka.tools.StorageTool format --standalone \
                -t "$cid" -c "$props" >"$dir/format.log" 2>&1; then
            tail -n 30 "$dir/format.log" >&2
            die "storage format failed (see $dir/format.log)"
        fi
    fi

    launch_jvm "$props" "$log" "$pidfile" "$heap" "$cpus"
    local pid
    pid="$(cat "$pidfile")"

    local deadline=$(( SECONDS + START_TIMEOUT_S ))
    while (( SECONDS < deadline )); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$log" >&2
            rm -f "$pidfile"
            die "Kafka exited during startup (log: $log)"
        fi
        # The listener opens shortly before the server reports itself started.
        if port_open "$port" && grep -q "Kafka Server started" "$log" 2>/dev/null; then
            echo "kafka.sh: Kafka up on 127.0.0.1:$port (pid $pid, controller port $cport, profile $profile, log $log)"
            return 0
        fi
        sleep 0.5
    done
    tail -n 40 "$log" >&2
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    die "Kafka did not accept connections on port $port within ${START_TIMEOUT_S}s"
}

# ---------------------------------------------------------------- stop

cmd_stop() {
    local dir=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --data-dir) dir="$2"; shift 2 ;;
            *) die "stop: unknown argument '$1'" ;;
        esac
    done
    [[ -n "$dir" ]] || die "stop needs --data-dir D"
    local pidfile="$dir/kafka.pid"
    if [[ ! -f "$pidfile" ]]; then
        echo "kafka.sh: no $pidfile; nothing to stop"
        return 0
    fi
    local pid
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$(( SECONDS + STOP_TIMEOUT_S ))
        while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do
            sleep 0.3
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "kafka.sh: pid $pid still alive after ${STOP_TIMEOUT_S}s; SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    fi
    rm -f "$pidfile"
    echo "kafka.sh: stopped (pid $pid)"
}

# ---------------------------------------------------------------- cluster
#
# D/cluster.conf records what must not change once the storage is formatted (node
# count, cluster id, controller ports: the KRaft voter set names the endpoints) plus
# the heap and CPU list of the last start-cluster, which start-node reuses. Node N
# lives in D/node-N laid out like a one-node data dir (server.properties, kafka.pid,
# kafka.log, logs/).

# true if pid $1 is a live process (a zombie counts as gone: it holds no sockets)
pid_alive() {
    kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
    [[ "$state" != Z ]]
}

node_pid() {   # prints node $2's pid if it runs, else nothing
    local pf="$1/node-$2/kafka.pid"
    [[ -f "$pf" ]] || return 0
    local pid
    pid="$(cat "$pf")"
    if pid_alive "$pid"; then echo "$pid"; fi
}

cluster_load() {
    local dir="$1"
    [[ -f "$dir/cluster.conf" ]] || die "no $dir/cluster.conf; start the cluster with start-cluster first"
    BROKERS="" CLUSTER_ID="" CPORTS="" BASE_PORT="" HEAP="" CPUS=""
    # shellcheck disable=SC1091
    source "$dir/cluster.conf"
    [[ -n "$BROKERS" && -n "$CLUSTER_ID" && -n "$CPORTS" && -n "$BASE_PORT" ]] \
        || die "$dir/cluster.conf is incomplete"
}

cluster_save() {
    local dir="$1"
    {
        echo "# written by kafka.sh start-cluster; the first four must not change after format"
        printf 'BROKERS=%q\nCLUSTER_ID=%q\nCPORTS=%q\nBASE_PORT=%q\nHEAP=%q\nCPUS=%q\n' \
            "$BROKERS" "$CLUSTER_ID" "$CPORTS" "$BASE_PORT" "$HEAP" "$CPUS"
    } >"$dir/cluster.conf.tmp"
    mv "$dir/cluster.conf.tmp" "$dir/cluster.conf"
}

cluster_bootstrap() {   # 127.0.0.1:P,127.0.0.1:P+1,...
    local i out=""
    for (( i = 0; i < BROKERS; i++ )); do
        out+="${out:+,}127.0.0.1:$(( BASE_PORT + i ))"
    done
    echo "$out"
}

# Write node $2's server.properties; profile $3, then the --set lines.
node_props() {
    local dir="$1" n="$2" profile="$3"; shift 3
    local ndir="$dir/node-$n" cports=($CPORTS) i qs=""
    for (( i = 0; i < BROKERS; i++ )); do qs+="${qs:+,}127.0.0.1:${cports[$i]}"; done
    local port=$(( BASE_PORT + n - 1 )) cport="${cports[$(( n - 1 ))]}"
    write_props "$ndir/server.properties" \
        "written by kafka.sh start-cluster (node $n of $BROKERS, profile: $profile)" \
        "$n" "$qs" "$port" "$cport" "$ndir/logs" 3 2 "$profile"
    local kv
    for kv in "$@"; do echo "$kv" >>"$ndir/server.properties"; done
}

# Format every node for one dynamic quorum (KIP-853): all nodes get the same cluster
# id and the same --initial-controllers list, which names each voter's metadata
# directory id, so the three agree on the voter set before any of them starts.
cluster_format() {
    local dir="$1" java cp="$LIB/*" n ic="" cports=($CPORTS) dirid
    java="$(java_cmd)"
    for (( n = 1; n <= BROKERS; n++ )); do
        dirid="$("$java" -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
        [[ -n "$dirid" ]] || die "could not generate a directory id"
        ic+="${ic:+,}$n@127.0.0.1:${cports[$(( n - 1 ))]}:$dirid"
    done
    for (( n = 1; n <= BROKERS; n++ )); do
        if ! "$java" -cp "$cp" kafka.tools.StorageTool format -t "$CLUSTER_ID" \
                --initial-controllers "$ic" -c "$dir/node-$n/server.properties" \
                >"$dir/node-$n/format.log" 2>&1; then
            tail -n 30 "$dir/node-$n/format.log" >&2
            # Half a quorum formatted cannot start; leave nothing that looks usable.
            local m
            for (( m = 1; m <= BROKERS; m++ )); do rm -rf "$dir/node-$m/logs"; done
            rm -f "$dir/cluster.conf"
            die "storage format of node $n failed (see $dir/node-$n/format.log)"
        fi
    done
}

# SIGKILL node $2 and wait until it is gone.
node_kill() {
    local dir="$1" n="$2" pid
    pid="$(node_pid "$dir" "$n")"
    [[ -n "$pid" ]] || { rm -f "$dir/node-$n/kafka.pid"; return 0; }
    kill -KILL "$pid" 2>/dev/null || true
    local deadline=$(( SECONDS + KILL_WAIT_S ))
    while pid_alive "$pid" && (( SECONDS < deadline )); do sleep 0.1; done
    pid_alive "$pid" && die "node $n (pid $pid) still alive ${KILL_WAIT_S}s after SIGKILL"
    rm -f "$dir/node-$n/kafka.pid"
    echo "$pid"
}

# Launch node $2 with the recorded heap and CPUs; fails if it already runs or a port
# is taken.
node_launch() {
    local dir="$1" n="$2" ndir="$1/node-$2" cports=($CPORTS)
    local port=$(( BASE_PORT + n - 1 )) cport="${cports[$(( n - 1 ))]}"
    [[ -z "$(node_pid "$dir" "$n")" ]] || die "node $n already runs (pid $(node_pid "$dir" "$n"))"
    port_open "$port" && die "port $port (node $n) is already in use"
    port_open "$cport" && die "controller port $cport (node $n, recorded in $dir/cluster.conf) is in use"
    # Keep the previous run's log: after a kill it is the evidence.
    [[ ! -f "$ndir/kafka.log" ]] || mv -f "$ndir/kafka.log" "$ndir/kafka.log.prev"
    launch_jvm "$ndir/server.properties" "$ndir/kafka.log" "$ndir/kafka.pid" "$HEAP" "$CPUS"
}

# Wait until node $2 serves; 0 when up, 1 when its JVM exited, 2 at the deadline $3.
node_wait() {
    local dir="$1" n="$2" deadline="$3" pid port=$(( BASE_PORT + $2 - 1 ))
    pid="$(cat "$dir/node-$n/kafka.pid")"
    while (( SECONDS < deadline )); do
        pid_alive "$pid" || return 1
        if port_open "$port" && grep -q "Kafka Server started" "$dir/node-$n/kafka.log" 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    return 2
}

# The cluster is usable once a topic with replication factor $BROKERS can be created:
# that needs every broker registered and unfenced. The probe topic is deleted again.
cluster_probe() {
    local dir="$1" deadline="$2" boot java
    boot="$(cluster_bootstrap)"
    java="$(java_cmd)"
    local topic=(timeout "$TOOL_TIMEOUT_S" "$java" -Xmx256m
        -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$LIB/*"
        org.apache.kafka.tools.TopicCommand --bootstrap-server "$boot")
    while (( SECONDS < deadline )); do
        if "${topic[@]}" --create --if-not-exists --topic kafka-sh-probe --partitions 1 \
                --replication-factor "$BROKERS" >"$dir/probe.log" 2>&1 \
            && "${topic[@]}" --delete --if-exists --topic kafka-sh-probe >>"$dir/probe.log" 2>&1; then
            return 0
        fi
        sleep 1
    done
    return 1
}

CLUSTER_DIR="" CLUSTER_UP=0
# On any failure of start-cluster, no node it launched stays behind.
cluster_cleanup() {
    (( CLUSTER_UP )) && return 0
    [[ -n "$CLUSTER_DIR" && -n "${BROKERS:-}" ]] || return 0
    local n pid
    for (( n = 1; n <= BROKERS; n++ )); do
        pid="$(node_kill "$CLUSTER_DIR" "$n" 2>/dev/null || true)"
        [[ -z "$pid" ]] || echo "kafka.sh: killed node $n (pid $pid)" >&2
    done
}

cmd_start_cluster() {
    local brokers=3 base="" dir="" profile="default" heap="512m" cpus="" extra=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --brokers) brokers="$2"; shift 2 ;;
            --base-port) base="$2"; shift 2 ;;
            --data-dir) dir="$2"; shift 2 ;;
            --profile) profile="$2"; shift 2 ;;
            --heap) heap="$2"; shift 2 ;;
            --cpus) cpus="$2"; shift 2 ;;
            --set) [[ "$2" == *=* ]] || die "--set needs KEY=VALUE"; extra+=("$2"); shift 2 ;;
            *) die "start-cluster: unknown argument '$1'" ;;
        esac
    done
    [[ -n "$base" && -n "$dir" ]] || die "start-cluster needs --base-port P --data-dir D"
    [[ "$profile" == default || "$profile" == fsync ]] || die "--profile must be default or fsync"
    # Internal topics are created with replication factor 3 and min ISR 2.
    [[ "$brokers" =~ ^[0-9]+$ ]] && (( brokers >= 3 )) || die "--brokers must be 3 or more"
    [[ "$base" =~ ^[0-9]+$ ]] || die "--base-port must be a number"
    [[ -z "$cpus" ]] || command -v taskset >/dev/null 2>&1 || die "--cpus needs taskset"
    need_lib

    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local n formatted=0 fresh=1
    if [[ -f "$dir/cluster.conf" ]]; then
        cluster_load "$dir"
        (( BROKERS == brokers )) || die "$dir was formatted for $BROKERS brokers, not $brokers"
        fresh=0
    fi
    for (( n = 1; n <= brokers; n++ )); do
        [[ -z "$(node_pid "$dir" "$n")" ]] || die "node $n of $dir already runs (pid $(node_pid "$dir" "$n"))"
        if [[ -f "$dir/node-$n/logs/meta.properties" ]]; then formatted=$(( formatted + 1 )); fi
    done
    if (( fresh == 0 && formatted != brokers )) || (( fresh == 1 && formatted != 0 )); then
        die "$dir is partly formatted ($formatted of $brokers nodes); remove it and start again"
    fi
    for (( n = 0; n < brokers; n++ )); do
        port_open $(( base + n )) && die "port $(( base + n )) (node $(( n + 1 ))) is already in use"
    done

    BROKERS="$brokers" BASE_PORT="$base" HEAP="$heap" CPUS="$cpus"
    if (( fresh )); then
        local java p seen=" " ports=""
        java="$(java_cmd)"
        CLUSTER_ID="$("$java" -cp "$LIB/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
        [[ -n "$CLUSTER_ID" ]] || die "could not generate a cluster id"
        # Controller ports: free ones, distinct, outside the client port range.
        while (( $(wc -w <<<"$ports") < brokers )); do
            p="$(free_port)"
            if (( p >= base && p < base + brokers )) || [[ "$seen" == *" $p "* ]]; then continue; fi
            seen+="$p "; ports+="${ports:+ }$p"
        done
        CPORTS="$ports"
    fi
    for (( n = 1; n <= brokers; n++ )); do
        mkdir -p "$dir/node-$n"
        node_props "$dir" "$n" "$profile" "${extra[@]}"
    done
    if (( fresh )); then
        cluster_format "$dir"
    fi
    cluster_save "$dir"

    CLUSTER_DIR="$dir"
    trap cluster_cleanup EXIT
    trap 'exit 130' INT TERM
    local t0=$SECONDS deadline=$(( SECONDS + CLUSTER_START_TIMEOUT_S ))
    # All at once: a combined node is not up until a controller majority is.
    for (( n = 1; n <= brokers; n++ )); do node_launch "$dir" "$n"; done
    local rc
    for (( n = 1; n <= brokers; n++ )); do
        rc=0; node_wait "$dir" "$n" "$deadline" || rc=$?
        if (( rc != 0 )); then
            tail -n 40 "$dir/node-$n/kafka.log" >&2
            (( rc == 1 )) && die "node $n exited during startup (log: $dir/node-$n/kafka.log)"
            die "node $n did not start within ${CLUSTER_START_TIMEOUT_S}s (log: $dir/node-$n/kafka.log)"
        fi
    done
    local t_nodes=$(( SECONDS - t0 ))
    if ! cluster_probe "$dir" "$deadline"; then
        tail -n 20 "$dir/probe.log" >&2
        die "no topic with replication factor $brokers could be created within ${CLUSTER_START_TIMEOUT_S}s (see $dir/probe.log and $dir/node-*/kafka.log)"
    fi
    CLUSTER_UP=1
    trap - EXIT INT TERM
    local pids=""
    for (( n = 1; n <= brokers; n++ )); do pids+="${pids:+ }$(node_pid "$dir" "$n")"; done
    echo "kafka.sh: Kafka cluster up, $brokers nodes (pids $pids, controller ports $CPORTS, profile $profile), nodes started in ${t_nodes}s, usable in $(( SECONDS - t0 ))s"
    cluster_bootstrap
}

cmd_stop_cluster() {
    local dir=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --data-dir) dir="$2"; shift 2 ;;
            *) die "stop-cluster: unknown argument '$1'" ;;
        esac
    done
    [[ -n "$dir" ]] || die "stop-cluster needs --data-dir D"
    cluster_load "$dir"
    # SIGTERM to all at once: stopped one by one, the last would wait for a
    # controller quorum that is already gone.
    local n pid pids=()
    for (( n = 1; n <= BROKERS; n++ )); do
        pid="$(node_pid "$dir" "$n")"
        if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
    done
    local deadline=$(( SECONDS + STOP_TIMEOUT_S )) alive=1
    while (( alive && SECONDS < deadline )); do
        alive=0
        for pid in "${pids[@]}"; do pid_alive "$pid" && alive=1; done
        (( alive )) && sleep 0.3
    done
    for (( n = 1; n <= BROKERS; n++ )); do
        pid="$(node_pid "$dir" "$n")"
        if [[ -n "$pid" ]]; then
            echo "kafka.sh: node $n (pid $pid) still alive after ${STOP_TIMEOUT_S}s; SIGKILL" >&2
            node_kill "$dir" "$n" >/dev/null
        fi
        rm -f "$dir/node-$n/kafka.pid"
    done
    echo "kafka.sh: cluster stopped (pids ${pids[*]:-none})"
}

# --data-dir D --node N
node_args() {
    NODE_DIR="" NODE_N=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --data-dir) NODE_DIR="$2"; shift 2 ;;
            --node) NODE_N="$2"; shift 2 ;;
            *) die "unknown argument '$1'" ;;
        esac
    done
    [[ -n "$NODE_DIR" && -n "$NODE_N" ]] || die "needs --data-dir D --node N"
    cluster_load "$NODE_DIR"
    [[ "$NODE_N" =~ ^[0-9]+$ ]] && (( NODE_N >= 1 && NODE_N <= BROKERS )) \
        || die "--node must be 1..$BROKERS"
}

cmd_kill_node() {
    node_args "$@"
    local pid
    pid="$(node_kill "$NODE_DIR" "$NODE_N")"
    if [[ -n "$pid" ]]; then echo "kafka.sh: node $NODE_N killed (pid $pid, SIGKILL)"
    else echo "kafka.sh: node $NODE_N was not running"; fi
}

cmd_start_node() {
    node_args "$@"
    need_lib
    local dir="$NODE_DIR" n="$NODE_N" t0=$SECONDS rc=0
    node_launch "$dir" "$n"
    node_wait "$dir" "$n" $(( SECONDS + START_TIMEOUT_S )) || rc=$?
    if (( rc != 0 )); then
        tail -n 40 "$dir/node-$n/kafka.log" >&2
        node_kill "$dir" "$n" >/dev/null || true
        (( rc == 1 )) && die "node $n exited during startup (log: $dir/node-$n/kafka.log)"
        die "node $n did not start within ${START_TIMEOUT_S}s (log: $dir/node-$n/kafka.log)"
    fi
    echo "kafka.sh: node $n up on 127.0.0.1:$(( BASE_PORT + n - 1 )) (pid $(node_pid "$dir" "$n")) in $(( SECONDS - t0 ))s"
}

# ---------------------------------------------------------------- tool

cmd_tool() {
    [[ $# -ge 1 ]] || die "tool needs a class name, e.g. org.apache.kafka.tools.TopicCommand"
    need_lib
    local cls="$1"; shift
    local java
    java="$(java_cmd)"
    exec "$java" -Xmx512m \
        -Dorg.slf4j.simpleLogger.defaultLogLevel="${KAFKA_TOOL_LOG_LEVEL:-warn}" \
        -cp "$LIB/*" "$cls" "$@"
}

cmd_classpath() {
    need_lib
    echo "$LIB/*"
}

# ---------------------------------------------------------------- main

[[ $# -ge 1 ]] || usage
sub="$1"; shift
case "$sub" in
    fetch) cmd_fetch "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    tool) cmd_tool "$@" ;;
    classpath) cmd_classpath "$@" ;;
    start-cluster) cmd_start_cluster "$@" ;;
    stop-cluster) cmd_stop_cluster "$@" ;;
    kill-node) cmd_kill_node "$@" ;;
    start-node) cmd_start_node "$@" ;;
    -h|--help|help) usage ;;
    *) die "unknown subcommand '$sub' (fetch|start|stop|tool|classpath|start-cluster|stop-cluster|kill-node|start-node)" ;;
esac
