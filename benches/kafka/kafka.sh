#!/usr/bin/env bash
# Apache Kafka (from its Maven Central jars, KRaft combined mode, one node) as the
# reference peer for Sluice's compatibility tests and benchmarks.
#
#   kafka.sh fetch
#   kafka.sh start --port P --data-dir D [--profile default|fsync] [--heap 1g]
#   kafka.sh stop  --data-dir D
#   kafka.sh tool  CLASS [ARGS...]
#   kafka.sh classpath
#
# See README.md next to this script.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$HERE/lib"
START_TIMEOUT_S="${KAFKA_START_TIMEOUT_S:-90}"
STOP_TIMEOUT_S="${KAFKA_STOP_TIMEOUT_S:-30}"

die() { echo "kafka.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------- helpers

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
    local port="" dir="" profile="default" heap="1g" extra=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --port) port="$2"; shift 2 ;;
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
    cat >"$props" <<EOF
# written by kafka.sh (profile: $profile)
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$logs
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
num.network.threads=2
num.io.threads=4
log.retention.hours=168
EOF
    if [[ "$profile" == fsync ]]; then
        echo "log.flush.interval.messages=1" >>"$props"
    fi
    # Later lines win in a properties file, so --set overrides anything above.
    for kv in "${extra[@]}"; do
        echo "$kv" >>"$props"
    done

    local java cp
    java="$(java_cmd)"
    cp="$LIB/*"

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

    # shellcheck disable=SC2086
    nohup "$java" -Xms256m -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true \
        -Dorg.slf4j.simpleLogger.defaultLogLevel="${KAFKA_LOG_LEVEL:-info}" \
        -Dorg.slf4j.simpleLogger.showDateTime=true \
        -Dorg.slf4j.simpleLogger.dateTimeFormat="yyyy-MM-dd'T'HH:mm:ss.SSS" \
        -Dorg.slf4j.simpleLogger.log.org.apache.kafka.clients=warn \
        ${KAFKA_JVM_OPTS:-} \
        -cp "$cp" kafka.Kafka "$props" >"$log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$pidfile"

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
    -h|--help|help) usage ;;
    *) die "unknown subcommand '$sub' (fetch|start|stop|tool|classpath)" ;;
esac
