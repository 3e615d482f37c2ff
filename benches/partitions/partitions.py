#!/usr/bin/env python3
"""Many partitions per core: Sluice against Apache Kafka on the same machine (issue #9).

Each broker runs alone (never both at once), pinned to one CPU (`taskset -c 0`), with this
client on another (CPU 1). For each broker:

  1. many: TOPICS x PARTITIONS partitions (default 2,000 x 5 = 10,000, replication factor 1)
     created through CreateTopics in batches; wall time until Metadata shows them all; RSS
     (VmRSS) and open descriptors (/proc/PID/fd) of the broker before and after, and the
     per-partition delta.
  2. one record (acks=all) to every partition, then a consumer assigned to every partition
     from the beginning must get each back exactly once.
  3. restart after SIGTERM and after kill -9: time from starting the process until it serves
     again (Metadata lists every topic AND an acks=all produce plus read-back succeeds on a
     sample of partitions spread over all topics), RSS and fds after; after kill -9 every
     record of step 2 is read back again.
  4. big: one topic of 16 partitions filled with --big-gb GB (10^9 bytes) by a fast
     producer, then kill -9 and the same restart measurement (sample = all 16 partitions),
     and the end offsets after the restart compared with those acknowledged before.

A broker that exits or refuses something is a measured result (recorded, later steps
skipped), not a crash of this script. Every wait is bounded; every process started here is
stopped at the end, on error and on Ctrl-C too.

    python3 benches/partitions/partitions.py --broker both --json out.json

See benches/README.md, section "partitions/".
"""

import argparse
import atexit
import datetime
import json
import logging
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

try:
    from confluent_kafka import (
        OFFSET_BEGINNING,
        Consumer,
        KafkaError,
        KafkaException,
        Producer,
        TopicPartition,
    )
    from confluent_kafka import libversion as rdkafka_libversion
    from confluent_kafka import version as confluent_version
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError:  # pragma: no cover - environment problem, explained to the user
    sys.exit(
        "partitions.py: needs confluent_kafka: pip install -r tests/python/requirements.txt"
    )

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KAFKA_SH = os.path.join(REPO, "benches", "kafka", "kafka.sh")
BIG_TOPIC = "big"
BIG_PARTITIONS = 16
BIG_VALUE_BYTES = 100 * 1024
SAMPLE_PARTITIONS = 50
# Partitions a Sluice shard may hold, over the ones this run creates (internal topics).
PER_SHARD_MARGIN = 1000
PER_SHARD_KEY = "topic.partitions.per.shard"

T_START = time.monotonic()
CPUS_ALLOWED = []  # of this script before it pins itself to the client CPU
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log(msg):
    print(f"[{time.monotonic() - T_START:8.1f}s] {msg}", file=sys.stderr, flush=True)


class PhaseError(Exception):
    """A phase could not be measured; the message goes into the results."""


# ------------------------------------------------------------------ processes


_CLEANUPS = []  # callables that stop what was started, newest last


def _cleanup_all():
    while _CLEANUPS:
        fn = _CLEANUPS.pop()
        try:
            fn()
        except Exception as e:  # never let one failure keep the others running
            print(f"partitions.py: cleanup: {e}", file=sys.stderr)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def _die_with_parent():
    """In a broker child: have Linux SIGKILL it if this script dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def pid_gone(pid):
    """No thread of pid is left running (a lone zombie leader counts as gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    return not pid_alive(pid) and len(tasks) <= 1


def pid_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def proc_stats(pid):
    """RSS, peak RSS, descriptors, threads, memory maps and CPU seconds of a process."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out["rss_kib" if k == "VmRSS" else "hwm_kib"] = int(v.split()[0])
                elif k == "Threads":
                    out["threads"] = int(v)
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/maps") as f:
            out["maps"] = sum(1 for _ in f)
        out["cpu_secs"] = proc_cpu_secs(pid)
    except OSError as e:
        out["error"] = str(e)
    return out


def proc_cpu_secs(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_fd_limit(pid):
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


def free_port(avoid=()):
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p not in avoid:
            return p
    raise RuntimeError("no free port")


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def tail(path, lines=30):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def du(path):
    """(apparent bytes, allocated bytes) under path."""
    try:
        a = subprocess.run(["du", "-sb", "--apparent-size", path], capture_output=True,
                           text=True, timeout=300)
        b = subprocess.run(["du", "-sB1", path], capture_output=True, text=True, timeout=300)
        return int(a.stdout.split()[0]), int(b.stdout.split()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None, None


class Scrub:
    """Replaces this machine's absolute paths in text that goes into the results."""

    def __init__(self):
        self.pairs = []

    def add(self, path, name):
        path = os.path.abspath(path)
        if path not in ("/", "") and (path, name) not in self.pairs:
            self.pairs.append((path, name))
            self.pairs.sort(key=lambda p: -len(p[0]))

    def __call__(self, text):
        for path, name in self.pairs:
            text = text.replace(path, name)
        return text


SCRUB = Scrub()


# ------------------------------------------------------------------ brokers


class Broker:
    """One broker on one data dir. Subclasses know how to start and find the process."""

    name = "?"

    def __init__(self, args, data_dir):
        self.args = args
        self.data_dir = data_dir
        self.port = None
        self.pid = None
        self.notes = []

    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def alive(self):
        raise NotImplementedError

    def launch(self):
        """Start the process; return the monotonic time just before it was started."""
        raise NotImplementedError

    def after_served(self):
        """Called once the broker serves (Kafka: reap kafka.sh)."""

    def exit_info(self):
        return ""

    def log_tail(self, lines=30):
        return SCRUB(ANSI.sub("", tail(self.log_path, lines)))

    def partitions_on_disk(self, prefix="mp-"):
        """Partition directories of this run's topics (both brokers name them TOPIC-N)."""
        try:
            return sum(1 for d in os.listdir(self.log_dirs) if d.startswith(prefix))
        except OSError:
            return None

    def gone(self):
        """The process and all its threads have exited (its sockets are closed)."""
        return not self.alive()

    def wait_gone(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gone():
                return True
            time.sleep(0.02)
        return self.gone()

    def wait_port_free(self, timeout=30):
        """Before a restart: the old listener must be closed, or the new one cannot bind."""
        deadline = time.monotonic() + timeout
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, timeout):
        """SIGTERM, wait up to timeout; SIGKILL after. Returns (seconds, clean)."""
        if self.pid is None or self.gone():
            return 0.0, True
        t0 = time.monotonic()
        self._signal(signal.SIGTERM)
        clean = self.wait_gone(timeout)
        secs = time.monotonic() - t0
        if not clean:
            log(f"{self.name}: still alive {timeout:.0f}s after SIGTERM; SIGKILL")
            self.kill9()
        return secs, clean

    def kill9(self):
        if self.pid is not None and not self.gone():
            self._signal(signal.SIGKILL)
            self.wait_gone(60)

    def _signal(self, sig):
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def stats(self):
        s = proc_stats(self.pid) if self.pid and self.alive() else {"error": "not running"}
        return s


class Sluice(Broker):
    name = "sluice"

    def __init__(self, args, data_dir):
        super().__init__(args, data_dir)
        self.bin = args.sluice_bin
        self.port = free_port()
        self.admin_port = free_port(avoid=(self.port,))
        self.log_path = os.path.join(data_dir, "..", os.path.basename(data_dir) + ".sluice.log")
        self.config_path = os.path.join(data_dir, "..", os.path.basename(data_dir) + ".toml")
        self.log_dirs = data_dir
        self.popen = None
        self.per_shard = args.partitions_per_shard or (
            max(args.topics * args.partitions, BIG_PARTITIONS) + PER_SHARD_MARGIN
        )
        # None: not probed yet; True/False: the broker accepts the key or not.
        self.key_accepted = args.sluice_key_accepted

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def _cmd(self):
        cmd = ["taskset", "-c", str(self.args.broker_cpu), self.bin, "start", "--cores", "1",
               "--data-dir", self.data_dir, "--listen", f"127.0.0.1:{self.port}",
               "--admin-listen", f"127.0.0.1:{self.admin_port}"]
        if self.key_accepted is not False:
            with open(self.config_path, "w") as f:
                f.write(f'"{PER_SHARD_KEY}" = {self.per_shard}\n')
            cmd += ["--config", self.config_path]
        return cmd

    def launch(self):
        os.makedirs(self.data_dir, exist_ok=True)
        self.wait_port_free()
        with open(self.log_path, "ab") as lf:
            lf.write(f"\n==== partitions.py: start at {time.time():.3f}\n".encode())
            t0 = time.monotonic()
            self.popen = subprocess.Popen(self._cmd(), stdout=lf, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True,
                                          preexec_fn=_die_with_parent)
        self.pid = self.popen.pid  # taskset execs the broker: same pid
        p = self.popen
        _CLEANUPS.append(lambda: _stop_popen(p))
        return t0

    def probe_key(self):
        """Start once with the per-shard key; if the config is refused, drop the key."""
        if self.key_accepted is not None:
            return
        self.launch()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.alive() and not port_open(self.port):
            time.sleep(0.05)
        if self.alive():
            self.key_accepted = True
            self.stop(30)
            self.notes.append(f'config key "{PER_SHARD_KEY}" = {self.per_shard} accepted')
        else:
            text = tail(self.log_path, 10)
            if "unknown field" in text or PER_SHARD_KEY in text:
                self.key_accepted = False
                self.notes.append(
                    f'config key "{PER_SHARD_KEY}" refused by this broker; started without it')
            else:
                raise PhaseError("sluice exited at start: " + SCRUB(text))
        self.args.sluice_key_accepted = self.key_accepted
        # the probe may have left a fresh data dir; start from empty again
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if os.path.exists(self.config_path) and not self.key_accepted:
            os.unlink(self.config_path)

    def exit_info(self):
        if self.popen is not None and self.popen.poll() is not None:
            return f"exit code {self.popen.returncode}"
        return ""


def _stop_popen(p, timeout=20):
    if p.poll() is not None:
        return
    try:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)
    except ProcessLookupError:
        pass


class Kafka(Broker):
    name = "kafka"

    def __init__(self, args, data_dir):
        super().__init__(args, data_dir)
        self.port = free_port()
        self.log_path = os.path.join(data_dir, "kafka.log")
        self.log_dirs = os.path.join(data_dir, "logs")
        self.sh_log = os.path.join(data_dir, "..", os.path.basename(data_dir) + ".kafka-sh.log")
        self.sh = None
        self.sets = list(args.kafka_set)

    def alive(self):
        # Right after kafka.sh wrote the pid, the child may not have exec'd java yet.
        if self.pid is None or not pid_alive(self.pid):
            return False
        cmd = pid_cmdline(self.pid)
        return "kafka.Kafka" in cmd or "kafka.sh" in cmd

    def gone(self):
        # The JVM is not our child and may stay a zombie; a killed thread-group leader turns
        # zombie before its other threads have exited and closed the sockets.
        return self.pid is None or pid_gone(self.pid)

    def launch(self):
        os.makedirs(self.data_dir, exist_ok=True)
        pidfile = os.path.join(self.data_dir, "kafka.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        self.wait_port_free()
        # kafka.sh truncates kafka.log at every start; keep each start's log
        if os.path.exists(self.log_path):
            self.starts = getattr(self, "starts", 0) + 1
            os.replace(self.log_path, f"{self.log_path}.{self.starts}")
        cmd = ["taskset", "-c", str(self.args.broker_cpu), "bash", KAFKA_SH, "start",
               "--port", str(self.port), "--data-dir", self.data_dir, "--heap", self.args.kafka_heap]
        for kv in self.sets:
            cmd += ["--set", kv]
        env = dict(os.environ)
        # kafka.sh kills a JVM that is not up by then; ours gives up first
        env["KAFKA_START_TIMEOUT_S"] = str(int(self.args.start_timeout) + 60)
        shf = open(self.sh_log, "ab")
        t0 = time.monotonic()
        self.sh = subprocess.Popen(cmd, stdout=shf, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        shf.close()
        sh = self.sh
        _CLEANUPS.append(lambda: _stop_popen(sh, 5))
        # kafka.sh writes the JVM's pid right after forking it
        self.pid = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with open(pidfile) as f:
                    pid = int(f.read().strip())
                self.pid = pid
                break
            except (OSError, ValueError):
                pass
            if self.sh.poll() is not None:
                raise PhaseError("kafka.sh start failed: " + SCRUB(tail(self.sh_log, 30)))
            time.sleep(0.01)
        if self.pid is None:
            raise PhaseError("kafka.sh wrote no pid file within 60 s")
        pid = self.pid
        _CLEANUPS.append(lambda: _stop_jvm(pid))
        return t0

    def after_served(self):
        if self.sh is not None:
            try:
                rc = self.sh.wait(max(60, self.args.start_timeout))
                if rc != 0:
                    self.notes.append(f"kafka.sh start exited {rc}: " + SCRUB(tail(self.sh_log, 5)))
            except subprocess.TimeoutExpired:
                self.notes.append("kafka.sh start did not return after the broker served")
            self.sh = None

    def exit_info(self):
        return SCRUB(tail(self.sh_log, 10))


def _stop_jvm(pid, timeout=60):
    if not (pid_alive(pid) and "kafka.Kafka" in pid_cmdline(pid)):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pid_gone(pid):
        time.sleep(0.1)
    if not pid_gone(pid):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not pid_gone(pid):
            time.sleep(0.1)


# ------------------------------------------------------------------ clients


def _quiet_logger(path):
    lg = logging.getLogger("rdkafka:" + path)
    if not lg.handlers:
        h = logging.FileHandler(path)
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        lg.addHandler(h)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    return lg


class Clients:
    """librdkafka clients for one broker, logging to a file instead of stderr."""

    def __init__(self, broker, log_path):
        self.broker = broker
        self.logger = _quiet_logger(log_path)

    def base(self):
        return {
            "bootstrap.servers": self.broker.bootstrap(),
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 500,
            "topic.metadata.refresh.fast.interval.ms": 100,
            "socket.connection.setup.timeout.ms": 5000,
            "logger": self.logger,
            "error_cb": lambda e: self.logger.info("error_cb: %s", e),
        }

    def admin(self):
        return AdminClient(self.base())

    def producer(self, **extra):
        c = self.base()
        c.update({"acks": "all", "enable.idempotence": False, "linger.ms": 5,
                  "message.timeout.ms": 120000, "queue.buffering.max.messages": 500000})
        c.update(extra)
        return Producer(c)

    def consumer(self, **extra):
        c = self.base()
        c.update({"group.id": "partitions-bench-" + uuid.uuid4().hex[:8],
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
                  "enable.partition.eof": False, "session.timeout.ms": 45000})
        c.update(extra)
        return Consumer(c)


def metadata_check(admin, expected, timeout):
    """(all there, detail): every expected topic with its partition count and a leader each."""
    md = admin.list_topics(timeout=timeout)
    missing = 0
    leaderless = 0
    for name, n in expected.items():
        t = md.topics.get(name)
        if t is None or t.error is not None or len(t.partitions) != n:
            missing += 1
            continue
        if any(p.leader < 0 or p.error is not None for p in t.partitions.values()):
            leaderless += 1
    total = sum(len(t.partitions) for t in md.topics.values())
    return missing == 0 and leaderless == 0, {
        "topics_in_metadata": len(md.topics), "partitions_in_metadata": total,
        "missing_topics": missing, "leaderless_topics": leaderless}


def produce_and_read(clients, tps, tag, timeout, from_beginning=False):
    """acks=all produce of one record to each (topic, partition), then read each back.

    Returns a dict with ok, times and counts; never raises on broker errors."""
    deadline = time.monotonic() + timeout
    res = {"ok": False, "partitions": len(tps)}
    delivered = {}
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err.name() if hasattr(err, "name") else str(err))
        else:
            delivered[(msg.topic(), msg.partition())] = msg.offset()

    p = clients.producer(**{"message.timeout.ms": max(1000, int(timeout * 1000)),
                            "linger.ms": 0})
    t0 = time.monotonic()
    try:
        for t, part in tps:
            p.produce(t, key=f"{t}/{part}".encode(), value=f"{t}/{part}/{tag}".encode(),
                      partition=part, on_delivery=on_delivery)
        while len(delivered) + len(errors) < len(tps) and time.monotonic() < deadline:
            p.poll(0.05)
    finally:
        if len(delivered) + len(errors) < len(tps):
            p.purge()
        p.flush(1)
    res["produce_secs"] = time.monotonic() - t0
    res["delivered"] = len(delivered)
    if errors or len(delivered) < len(tps):
        res["error"] = f"produce: {len(delivered)}/{len(tps)} delivered, errors {sorted(set(errors))[:5]}"
        return res
    c = clients.consumer()
    got = {}
    bad = 0
    t1 = time.monotonic()
    try:
        c.assign([TopicPartition(t, part, OFFSET_BEGINNING if from_beginning else delivered[(t, part)])
                  for t, part in tps])
        want = {(t, part): f"{t}/{part}/{tag}".encode() for t, part in tps}
        while len(got) < len(tps) and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.1):
                if m.error() is not None:
                    continue
                k = (m.topic(), m.partition())
                if m.value() == want.get(k):
                    got[k] = got.get(k, 0) + 1
                elif not from_beginning:
                    bad += 1
    finally:
        c.close()
    res["read_secs"] = time.monotonic() - t1
    res["read"] = len(got)
    res["mismatched"] = bad
    res["ok"] = len(got) == len(tps) and bad == 0
    if not res["ok"]:
        res["error"] = f"read back {len(got)}/{len(tps)}, {bad} mismatched"
    return res


def wait_serving(broker, clients, t0, expected, sample, timeout, from_beginning=False):
    """From t0 (process start): port open, Metadata shows `expected`, sample produce + read.

    Returns a dict of seconds since t0 for each step, or an error."""
    out = {}
    deadline = t0 + timeout
    while not port_open(broker.port):
        if not broker.alive():
            raise PhaseError(f"{broker.name} exited while starting ({broker.exit_info()}): "
                             + broker.log_tail(15))
        if time.monotonic() > deadline:
            raise PhaseError(f"{broker.name}: port not open after {timeout:.0f}s")
        time.sleep(0.01)
    out["port_open_secs"] = time.monotonic() - t0
    admin = clients.admin()
    attempts = 0
    detail = {}
    while True:
        attempts += 1
        try:
            ok, detail = metadata_check(admin, expected, min(10.0, max(1.0, deadline - time.monotonic())))
        except KafkaException as e:
            ok, detail = False, {"error": str(e)}
        if ok:
            break
        if not broker.alive():
            raise PhaseError(f"{broker.name} exited while starting: " + broker.log_tail(15))
        if time.monotonic() > deadline or attempts > 100000:
            raise PhaseError(f"{broker.name}: metadata incomplete after {timeout:.0f}s: {detail}")
        time.sleep(0.05)
    out["metadata_secs"] = time.monotonic() - t0
    out["metadata_attempts"] = attempts
    out.update(detail)
    del admin
    attempts = 0
    while True:
        attempts += 1
        r = produce_and_read(clients, sample, "serve-" + uuid.uuid4().hex[:8],
                             min(30.0, max(2.0, deadline - time.monotonic())), from_beginning)
        if r["ok"]:
            break
        if not broker.alive():
            raise PhaseError(f"{broker.name} exited while starting: " + broker.log_tail(15))
        if time.monotonic() > deadline or attempts > 1000:
            raise PhaseError(f"{broker.name}: sample produce/read failing after {timeout:.0f}s: "
                             + r.get("error", ""))
        time.sleep(0.05)
    out["serve_secs"] = time.monotonic() - t0
    out["serve_attempts"] = attempts
    out["sample_partitions"] = len(sample)
    out["sample_produce_secs"] = r["produce_secs"]
    out["sample_read_secs"] = r["read_secs"]
    broker.after_served()
    return out


# ------------------------------------------------------------------ phases


def topic_names(n):
    width = max(4, len(str(n - 1)))
    return [f"mp-{i:0{width}d}" for i in range(n)]


def spread_sample(topics, partitions, k):
    """k (topic, partition) pairs spread over every topic and partition index."""
    k = min(k, len(topics) * partitions)
    out = []
    for i in range(k):
        t = topics[(i * len(topics)) // k]
        out.append((t, i % partitions))
    return out


def phase_create(broker, clients, args, topics, res):
    """CreateTopics in batches; returns the topics that exist."""
    admin = clients.admin()
    created = []
    failed = {}
    curve = []
    t0 = time.monotonic()
    batch = args.create_batch
    deadline = t0 + args.phase_timeout
    exited = False
    for i in range(0, len(topics), batch):
        names = topics[i:i + batch]
        futs = admin.create_topics([NewTopic(n, args.partitions, 1) for n in names],
                                   operation_timeout=60, request_timeout=120)
        for n, f in futs.items():
            try:
                f.result(timeout=180)
                created.append(n)
            except KafkaException as e:
                err = e.args[0]
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    created.append(n)
                else:
                    failed[n] = err.name()
            except Exception as e:  # future timeout
                failed[n] = type(e).__name__
        s = broker.stats()
        curve.append({"topics": len(created), "partitions": len(created) * args.partitions,
                      "secs": round(time.monotonic() - t0, 3), "rss_kib": s.get("rss_kib"),
                      "fds": s.get("fds")})
        if (i // batch) % max(1, len(topics) // batch // 10) == 0 or i + batch >= len(topics):
            log(f"{broker.name}: created {len(created)}/{len(topics)} topics "
                f"({len(created) * args.partitions} partitions), rss {s.get('rss_kib', 0) // 1024} MiB, "
                f"fds {s.get('fds')}, failed {len(failed)}")
        if not broker.alive():
            exited = True
            break
        if failed and len(failed) >= max(10, batch):
            break
        if time.monotonic() > deadline:
            res["create_timeout"] = True
            break
    res["create_requests_secs"] = time.monotonic() - t0
    res["create_curve"] = curve
    res["topics_acknowledged"] = len(created)
    res["topics_failed"] = len(failed)
    if failed:
        res["create_errors"] = sorted(set(failed.values()))
    if exited:
        res["partitions_on_disk_at_exit"] = broker.partitions_on_disk()
        res["broker_exited"] = (f"broker exited after {len(created)} topics "
                                f"({len(created) * args.partitions} partitions) were acknowledged, "
                                f"{res['partitions_on_disk_at_exit']} partition directories on "
                                f"disk; {broker.exit_info()}")
        res["broker_log_tail"] = broker.log_tail(20)
        log(f"{broker.name}: {res['broker_exited']}")
        return created, False
    # wait until Metadata shows every acknowledged topic with a leader for each partition
    expected = {n: args.partitions for n in created}
    attempts = 0
    ok, detail = False, {}
    while time.monotonic() < deadline + 120 and attempts < 100000:
        attempts += 1
        try:
            ok, detail = metadata_check(admin, expected, 30)
        except KafkaException as e:
            ok, detail = False, {"error": str(e)}
        if ok or not broker.alive():
            break
        time.sleep(0.2)
    res["create_secs"] = time.monotonic() - t0
    res["create_metadata"] = detail
    if not ok:
        res["create_metadata_incomplete"] = True
        if not broker.alive():
            res["broker_exited"] = f"broker exited while metadata was awaited; {broker.exit_info()}"
            res["broker_log_tail"] = broker.log_tail(20)
            return created, False
    res["partitions_created"] = len(created) * args.partitions
    if res["partitions_created"]:
        res["create_partitions_per_sec"] = res["partitions_created"] / res["create_secs"]
    return created, True


def phase_produce_all(broker, clients, args, tps, tag, res):
    delivered = {}
    errors = {}
    bad_offset = 0

    def on_delivery(err, msg):
        nonlocal bad_offset
        if err is not None:
            errors[err.name()] = errors.get(err.name(), 0) + 1
        else:
            delivered[(msg.topic(), msg.partition())] = msg.offset()
            if msg.offset() != 0:
                bad_offset += 1

    p = clients.producer(**{"linger.ms": 20, "message.timeout.ms": int(args.phase_timeout * 1000)})
    cpu0 = proc_cpu_secs(broker.pid)
    t0 = time.monotonic()
    deadline = t0 + args.phase_timeout
    try:
        for i, (t, part) in enumerate(tps):
            while True:
                try:
                    p.produce(t, key=f"{t}/{part}".encode(), value=f"{t}/{part}/{tag}".encode(),
                              partition=part, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.05)
                    if time.monotonic() > deadline:
                        raise PhaseError("produce queue full until the phase timeout")
            if i % 1000 == 0:
                p.poll(0)
        while len(delivered) + sum(errors.values()) < len(tps) and time.monotonic() < deadline:
            p.poll(0.1)
            if not broker.alive():
                break
    finally:
        if len(delivered) + sum(errors.values()) < len(tps):
            p.purge()
        p.flush(2)
    secs = time.monotonic() - t0
    cpu1 = proc_cpu_secs(broker.pid)
    res.update({"produce_records": len(tps), "produce_acked": len(delivered),
                "produce_errors": errors, "produce_offset_not_zero": bad_offset,
                "produce_secs": secs,
                "produce_broker_cpu_secs": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None})
    log(f"{broker.name}: produced 1 record to each of {len(tps)} partitions: {len(delivered)} acked "
        f"in {secs:.1f}s, errors {errors or 'none'}")
    return delivered


def read_all(broker, clients, args, tps, tag, res, prefix):
    """Consumer assigned to every partition from the beginning; each tagged record once."""
    want = {(t, part): f"{t}/{part}/{tag}".encode() for t, part in tps}
    counts = {}
    mismatched = 0
    other = 0
    c = clients.consumer(**{"queued.max.messages.kbytes": 16384})
    t0 = time.monotonic()
    first = None
    done_at = None
    deadline = t0 + args.phase_timeout
    try:
        c.assign([TopicPartition(t, part, OFFSET_BEGINNING) for t, part in tps])
        while time.monotonic() < deadline:
            msgs = c.consume(num_messages=10000, timeout=0.2)
            for m in msgs:
                if m.error() is not None:
                    continue
                if first is None:
                    first = time.monotonic() - t0
                k = (m.topic(), m.partition())
                v = m.value() or b""
                if v == want.get(k):
                    counts[k] = counts.get(k, 0) + 1
                elif v.endswith(b"/" + tag.encode()):
                    mismatched += 1  # our record, in the wrong partition
                else:
                    other += 1  # e.g. a sample record of a restart check
            if done_at is None and len(counts) == len(want):
                done_at = time.monotonic() - t0
                grace_end = time.monotonic() + args.dup_grace
                deadline = min(deadline, grace_end)
            if not broker.alive():
                break
    finally:
        c.close()
    dups = sum(n - 1 for n in counts.values() if n > 1)
    res.update({
        f"{prefix}_expected": len(want), f"{prefix}_received": len(counts),
        f"{prefix}_missing": len(want) - len(counts), f"{prefix}_duplicates": dups,
        f"{prefix}_mismatched": mismatched, f"{prefix}_other_records": other,
        f"{prefix}_first_record_secs": first, f"{prefix}_secs": done_at,
        f"{prefix}_exactly_once": len(counts) == len(want) and dups == 0 and mismatched == 0,
    })
    log(f"{broker.name}: read back {len(counts)}/{len(want)} ({dups} duplicates, {mismatched} "
        f"mismatched) in {done_at if done_at is not None else float('nan'):.1f}s")


def restart(broker, clients, args, how, expected, sample, res, from_beginning=False):
    """Stop (SIGTERM or kill -9), start again, time until it serves. Fills res."""
    before = broker.stats()
    res["before"] = before
    if how == "sigterm":
        secs, clean = broker.stop(args.stop_timeout)
        res["shutdown_secs"] = secs
        res["shutdown_clean"] = clean
        res["exit"] = broker.exit_info() if broker.name == "sluice" else None
    else:
        t = time.monotonic()
        broker.kill9()
        res["kill_secs"] = time.monotonic() - t
    if args.drop_caches:
        res["dropped_caches"] = drop_caches()
    log(f"{broker.name}: stopped ({how}); starting again")
    t0 = broker.launch()
    r = wait_serving(broker, clients, t0, expected, sample, args.start_timeout, from_beginning)
    res.update(r)
    time.sleep(args.settle)
    res["after"] = broker.stats()
    log(f"{broker.name}: after {how}: port {r['port_open_secs']:.2f}s, metadata "
        f"{r['metadata_secs']:.2f}s, serves {r['serve_secs']:.2f}s; rss "
        f"{res['after'].get('rss_kib', 0) // 1024} MiB, fds {res['after'].get('fds')}")


def drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def start_fresh(broker, clients, args, res):
    """Start on an empty data dir; up = port open and Metadata answers."""
    t0 = broker.launch()
    deadline = t0 + args.start_timeout
    while not port_open(broker.port):
        if not broker.alive():
            raise PhaseError(f"{broker.name} exited at start ({broker.exit_info()}): "
                             + broker.log_tail(15))
        if time.monotonic() > deadline:
            raise PhaseError(f"{broker.name}: port not open after {args.start_timeout:.0f}s")
        time.sleep(0.02)
    admin = clients.admin()
    while True:
        try:
            admin.list_topics(timeout=5)
            break
        except KafkaException:
            if time.monotonic() > deadline or not broker.alive():
                raise PhaseError(f"{broker.name}: no Metadata answer at start")
            time.sleep(0.1)
    broker.after_served()
    res["fresh_start_secs"] = time.monotonic() - t0
    res["fd_limit"] = proc_fd_limit(broker.pid)


def run_many(broker, args, res):
    clients = Clients(broker, os.path.join(broker.data_dir, "..", "clients-many.log"))
    start_fresh(broker, clients, args, res)
    time.sleep(args.settle)
    res["baseline"] = broker.stats()
    log(f"{broker.name}: fresh broker up in {res['fresh_start_secs']:.2f}s: rss "
        f"{res['baseline'].get('rss_kib', 0) // 1024} MiB, fds {res['baseline'].get('fds')}")

    topics = topic_names(args.topics)
    created, alive = phase_create(broker, clients, args, topics, res)
    if not alive:
        res["skipped"] = "produce, read-back and restarts: " + res["broker_exited"]
        return
    time.sleep(args.settle)
    res["after_create"] = broker.stats()
    b, a = res["baseline"], res["after_create"]
    n = len(created) * args.partitions
    if n and "rss_kib" in a and "rss_kib" in b:
        res["rss_per_partition_kib"] = (a["rss_kib"] - b["rss_kib"]) / n
        res["fds_per_partition"] = (a["fds"] - b["fds"]) / n
    log(f"{broker.name}: {n} partitions in {res['create_secs']:.1f}s; rss "
        f"{a.get('rss_kib', 0) // 1024} MiB ({res.get('rss_per_partition_kib', float('nan')):.1f} "
        f"KiB/partition), fds {a.get('fds')}")
    if not created:
        res["skipped"] = "no topic could be created"
        return

    tps = [(t, p) for t in created for p in range(args.partitions)]
    tag = "p2-" + uuid.uuid4().hex[:8]
    phase_produce_all(broker, clients, args, tps, tag, res)
    if broker.alive():
        read_all(broker, clients, args, tps, tag, res, "read")
    if not broker.alive():
        res["broker_exited"] = f"broker exited during produce/read-back; {broker.exit_info()}"
        res["broker_log_tail"] = broker.log_tail(20)
        res["skipped"] = "restarts: " + res["broker_exited"]
        return
    time.sleep(args.settle)
    res["after_produce_read"] = broker.stats()
    res["disk_apparent_bytes"], res["disk_allocated_bytes"] = du(broker.log_dirs)

    expected = {t: args.partitions for t in created}
    sample = spread_sample(created, args.partitions, SAMPLE_PARTITIONS)
    for how in ("sigterm", "kill9"):
        r = res.setdefault(f"restart_{how}", {})
        try:
            restart(broker, clients, args, how, expected, sample, r)
        except PhaseError as e:
            r["error"] = str(e)
            log(f"{broker.name}: restart after {how} failed: {e}")
            if not broker.alive():
                return
    # durability: every record of step 2 still there after kill -9
    read_all(broker, clients, args, tps, tag, res["restart_kill9"], "reread")


def run_big(broker, args, res):
    clients = Clients(broker, os.path.join(broker.data_dir, "..", "clients-big.log"))
    need = 3 * args.big_gb * 1e9
    free = shutil.disk_usage(os.path.dirname(broker.data_dir)).free
    res["disk_free_bytes_before"] = free
    if free < need:
        raise PhaseError(f"only {free / 1e9:.1f} GB free, need 3 x {args.big_gb} GB")
    start_fresh(broker, clients, args, res)
    admin = clients.admin()
    f = admin.create_topics([NewTopic(BIG_TOPIC, BIG_PARTITIONS, 1)], operation_timeout=60,
                            request_timeout=120)[BIG_TOPIC]
    try:
        f.result(timeout=180)
    except KafkaException as e:
        raise PhaseError(f"create {BIG_TOPIC}: {e}")
    deadline = time.monotonic() + 120
    expected = {BIG_TOPIC: BIG_PARTITIONS}
    while not metadata_check(admin, expected, 10)[0]:
        if time.monotonic() > deadline:
            raise PhaseError(f"{BIG_TOPIC} not in metadata after 120 s")
        time.sleep(0.2)
    del admin

    total = int(args.big_gb * 1e9)
    n = math.ceil(total / BIG_VALUE_BYTES)
    value = os.urandom(BIG_VALUE_BYTES)
    acked = [0]
    errors = {}

    def on_delivery(err, _msg):
        if err is None:
            acked[0] += 1
        else:
            errors[err.name()] = errors.get(err.name(), 0) + 1

    p = clients.producer(**{"acks": "all", "linger.ms": 10, "batch.size": 1000000,
                            "queue.buffering.max.kbytes": 262144,
                            "message.timeout.ms": 300000, "compression.type": "none"})
    timeout = args.big_timeout or (300 + 300 * args.big_gb)
    log(f"{broker.name}: producing {n} x {BIG_VALUE_BYTES} B ({total / 1e9:.2f} GB) to "
        f"{BIG_TOPIC} ({BIG_PARTITIONS} partitions), timeout {timeout:.0f}s")
    cpu0 = proc_cpu_secs(broker.pid)
    t0 = time.monotonic()
    deadline = t0 + timeout
    sent = 0
    last_log = t0
    try:
        for i in range(n):
            queued = False
            while not queued:
                try:
                    p.produce(BIG_TOPIC, value=value, partition=i % BIG_PARTITIONS,
                              on_delivery=on_delivery)
                    queued = True
                except BufferError:  # queue full: wait for acks
                    p.poll(0.01)
                    if time.monotonic() > deadline or not broker.alive():
                        break
            if not queued:
                res["big_produce_stopped"] = "timeout" if broker.alive() else "broker exited"
                break
            sent += 1
            if i % 64 == 0:
                p.poll(0)
                now = time.monotonic()
                if now - last_log > 15:
                    last_log = now
                    log(f"{broker.name}: {acked[0] * BIG_VALUE_BYTES / 1e9:.2f} GB acked, "
                        f"{acked[0] * BIG_VALUE_BYTES / 1e6 / (now - t0):.0f} MB/s")
        while acked[0] + sum(errors.values()) < sent and time.monotonic() < deadline:
            p.poll(0.1)
            if not broker.alive():
                break
    finally:
        if acked[0] + sum(errors.values()) < sent:
            p.purge()
        p.flush(2)
    secs = time.monotonic() - t0
    cpu1 = proc_cpu_secs(broker.pid)
    res.update({
        "big_records_sent": sent, "big_records_acked": acked[0], "big_errors": errors,
        "big_value_bytes": BIG_VALUE_BYTES, "big_bytes_acked": acked[0] * BIG_VALUE_BYTES,
        "big_produce_secs": secs,
        "big_produce_mb_per_sec": acked[0] * BIG_VALUE_BYTES / 1e6 / secs if secs else None,
        "big_produce_broker_cpu_secs": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
    })
    log(f"{broker.name}: {res['big_bytes_acked'] / 1e9:.2f} GB acked in {secs:.1f}s "
        f"({res['big_produce_mb_per_sec']:.0f} MB/s), errors {errors or 'none'}")
    if not broker.alive():
        res["broker_exited"] = f"broker exited during the big produce; {broker.exit_info()}"
        res["broker_log_tail"] = broker.log_tail(20)
        return
    ends_before = end_offsets(clients, BIG_TOPIC, BIG_PARTITIONS)
    res["end_offsets_before_kill"] = ends_before
    res["disk_apparent_bytes"], res["disk_allocated_bytes"] = du(broker.log_dirs)
    sample = [(BIG_TOPIC, i) for i in range(BIG_PARTITIONS)]
    r = res.setdefault("restart_kill9", {})
    try:
        restart(broker, clients, args, "kill9", expected, sample, r)
    except PhaseError as e:
        r["error"] = str(e)
        log(f"{broker.name}: big restart failed: {e}")
        return
    ends_after = end_offsets(clients, BIG_TOPIC, BIG_PARTITIONS)
    r["end_offsets_after"] = ends_after
    # the serve check added one record per partition (more if it retried)
    lost = [i for i in range(BIG_PARTITIONS)
            if ends_before[i] is None or ends_after[i] is None or ends_after[i] < ends_before[i] + 1]
    r["acked_records_survived"] = not lost and sum(ends_before) >= acked[0] \
        if all(e is not None for e in ends_before) else False
    r["partitions_short"] = lost


def end_offsets(clients, topic, n):
    c = clients.consumer()
    try:
        out = []
        for i in range(n):
            try:
                out.append(c.get_watermark_offsets(TopicPartition(topic, i), timeout=30)[1])
            except KafkaException:
                out.append(None)
        return out
    finally:
        c.close()


# ------------------------------------------------------------------ run and report


def machine_facts(args, data_root):
    cv = confluent_version()
    facts = {"nproc": os.cpu_count(), "cpus_allowed": CPUS_ALLOWED,
             "uname_r": platform.release(),
             "kernel": f"{platform.system()} {platform.release()} {platform.version()}",
             "machine": platform.machine(), "python": platform.python_version(),
             "confluent_kafka": cv[0] if isinstance(cv, tuple) else cv,
             "librdkafka": rdkafka_libversion()[0],
             "ulimit_n": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
             "ulimit_n_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
             "load_avg_at_start": os.getloadavg()}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    facts["mem_total_kib"] = int(line.split()[1])
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    facts["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            facts["vm_max_map_count"] = int(f.read())
    except (OSError, ValueError):
        pass
    try:
        r = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,OPTIONS", "-T", data_root],
                           capture_output=True, text=True, timeout=10)
        fs = r.stdout.split()
        facts["data_dir_fs"] = fs[0] if fs else None
        facts["data_dir_mount_options"] = fs[1] if len(fs) > 1 else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    facts["disk_free_bytes"] = shutil.disk_usage(data_root).free
    if args.broker in ("sluice", "both"):
        try:
            facts["sluice_version"] = subprocess.run(
                [args.sluice_bin, "--version"], capture_output=True, text=True,
                timeout=10).stdout.strip()
        except OSError as e:
            facts["sluice_version"] = f"? ({e})"
        # the binary may be older than the commit below (it is not rebuilt here)
        facts["sluice_bin_built"] = datetime.datetime.fromtimestamp(
            os.path.getmtime(args.sluice_bin)).astimezone().isoformat(timespec="seconds")
    if args.broker in ("kafka", "both"):
        try:
            libs = os.listdir(os.path.join(REPO, "benches", "kafka", "lib"))
            facts["kafka_version"] = next(
                (j[len("kafka_2.13-"):-4] for j in libs if j.startswith("kafka_2.13-")), None)
        except OSError:
            facts["kafka_version"] = None
        try:
            r = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20)
            facts["java"] = r.stderr.splitlines()[0] if r.stderr else None
        except (OSError, subprocess.TimeoutExpired):
            facts["java"] = None
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "broker",
                                "storage", "protocol"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        facts["git_commit"] = rev + ("+uncommitted broker/storage/protocol changes" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return facts


def run_broker(kind, args, root, res):
    """Fills res as it goes, so an interrupted run still reports what it measured."""
    cls = Sluice if kind == "sluice" else Kafka
    bdir = os.path.join(root, kind)
    os.makedirs(bdir, exist_ok=True)
    many = res.setdefault("many", {"topics": args.topics, "partitions_per_topic": args.partitions})
    b = cls(args, os.path.join(bdir, "many"))
    try:
        if kind == "sluice":
            b.probe_key()
            many["config"] = ({PER_SHARD_KEY: b.per_shard} if b.key_accepted else {})
        else:
            many["config"] = {"heap": args.kafka_heap, "set": list(b.sets)}
        run_many(b, args, many)
    except PhaseError as e:
        many["error"] = str(e)
        log(f"{kind}: many-partitions phase failed: {e}")
    finally:
        b.stop(args.stop_timeout)
        many["notes"] = b.notes
        if not args.keep:
            shutil.rmtree(b.data_dir, ignore_errors=True)
    if args.skip_big:
        res["big"] = {"skipped": "--skip-big"}
        return res
    big = res.setdefault("big", {"topic_partitions": BIG_PARTITIONS, "gb": args.big_gb})
    b = cls(args, os.path.join(bdir, "big"))
    try:
        run_big(b, args, big)
    except PhaseError as e:
        big["error"] = str(e)
        log(f"{kind}: big phase failed: {e}")
    finally:
        b.stop(args.stop_timeout)
        big["notes"] = b.notes
        if not args.keep:
            shutil.rmtree(b.data_dir, ignore_errors=True)
    return res


def fmt(v, spec="{:.2f}"):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return spec.format(v)
    return str(v)


def report(results, args):
    brokers = [r["broker"] for r in results["brokers"]]
    rows = []

    def g(r, *path):
        for p in path:
            if not isinstance(r, dict):
                return None
            r = r.get(p)
        return r

    def mib(kib):
        return None if kib is None else kib / 1024

    def row(label, fn, spec="{:.2f}"):
        vals = []
        for r in results["brokers"]:
            try:
                vals.append(fmt(fn(r), spec))
            except (TypeError, KeyError, ZeroDivisionError):
                vals.append("-")
        rows.append((label, vals))

    m = lambda r, *p: g(r, "many", *p)  # noqa: E731
    row("partitions created", lambda r: m(r, "partitions_created") or
        f"{(m(r, 'topics_acknowledged') or 0) * args.partitions} (incomplete)")
    row("create: requests acknowledged, s", lambda r: m(r, "create_requests_secs"), "{:.1f}")
    row("create: wall s (until Metadata shows all)", lambda r: m(r, "create_secs"), "{:.1f}")
    row("create: partitions/s", lambda r: m(r, "create_partitions_per_sec"), "{:.0f}")
    row("RSS fresh, MiB", lambda r: mib(m(r, "baseline", "rss_kib")), "{:.1f}")
    row("RSS after create, MiB", lambda r: mib(m(r, "after_create", "rss_kib")), "{:.1f}")
    row("RSS per partition, KiB", lambda r: m(r, "rss_per_partition_kib"), "{:.1f}")
    row("fds fresh", lambda r: m(r, "baseline", "fds"))
    row("fds after create", lambda r: m(r, "after_create", "fds"))
    row("fds per partition", lambda r: m(r, "fds_per_partition"), "{:.2f}")
    row("produce 1/partition: acked", lambda r: m(r, "produce_acked"))
    row("produce 1/partition: s", lambda r: m(r, "produce_secs"), "{:.1f}")
    row("read-back: received / dups", lambda r: f"{m(r, 'read_received')} / {m(r, 'read_duplicates')}"
        if m(r, "read_received") is not None else None)
    row("read-back: exactly once", lambda r: m(r, "read_exactly_once"))
    row("read-back: s", lambda r: m(r, "read_secs"), "{:.1f}")
    row("RSS after produce+read, MiB", lambda r: mib(m(r, "after_produce_read", "rss_kib")), "{:.1f}")
    row("disk used, MB", lambda r: m(r, "disk_allocated_bytes") / 1e6, "{:.0f}")
    for how, label in (("sigterm", "SIGTERM"), ("kill9", "kill -9")):
        if how == "sigterm":
            row(f"{label}: shutdown s", lambda r: m(r, "restart_sigterm", "shutdown_secs"), "{:.1f}")
        row(f"{label}: restart, port open s", lambda r: m(r, f"restart_{how}", "port_open_secs"))
        row(f"{label}: restart, Metadata all s", lambda r: m(r, f"restart_{how}", "metadata_secs"))
        row(f"{label}: restart, serves s", lambda r: m(r, f"restart_{how}", "serve_secs"))
        row(f"{label}: RSS after, MiB", lambda r: mib(m(r, f"restart_{how}", "after", "rss_kib")), "{:.1f}")
        row(f"{label}: fds after", lambda r: m(r, f"restart_{how}", "after", "fds"))
    row("kill -9: all records read again", lambda r: m(r, "restart_kill9", "reread_exactly_once"))
    if not args.skip_big:
        b = lambda r, *p: g(r, "big", *p)  # noqa: E731
        row(f"big: GB acked ({BIG_PARTITIONS} partitions)", lambda r: b(r, "big_bytes_acked") / 1e9)
        row("big: produce MB/s", lambda r: b(r, "big_produce_mb_per_sec"), "{:.0f}")
        row("big: broker CPU s per GB", lambda r: b(r, "big_produce_broker_cpu_secs") /
            (b(r, "big_bytes_acked") / 1e9), "{:.1f}")
        row("big kill -9: restart, port open s", lambda r: b(r, "restart_kill9", "port_open_secs"))
        row("big kill -9: restart, serves s", lambda r: b(r, "restart_kill9", "serve_secs"))
        row("big kill -9: acked records survived", lambda r: b(r, "restart_kill9", "acked_records_survived"))
        row("big: RSS after restart, MiB", lambda r: mib(b(r, "restart_kill9", "after", "rss_kib")), "{:.1f}")
        row("big: fds after restart", lambda r: b(r, "restart_kill9", "after", "fds"))
    w = max(len(lbl) for lbl, _ in rows)
    cw = max([14] + [len(v) for _, vs in rows for v in vs])
    out = [f"{'':{w}}  " + "  ".join(f"{n:>{cw}}" for n in brokers)]
    for lbl, vs in rows:
        out.append(f"{lbl:{w}}  " + "  ".join(f"{v:>{cw}}" for v in vs))
    notes = []
    for r in results["brokers"]:
        for part in ("many", "big"):
            sec = r.get(part, {})
            for k in ("error", "broker_exited", "skipped"):
                if sec.get(k) and not (k == "skipped" and sec[k] == "--skip-big"):
                    notes.append(f"{r['broker']} {part}: {k}: {sec[k]}")
            for k in ("restart_sigterm", "restart_kill9"):
                if isinstance(sec.get(k), dict) and sec[k].get("error"):
                    notes.append(f"{r['broker']} {part}: {k}: {sec[k]['error']}")
            for n in sec.get("notes", []):
                notes.append(f"{r['broker']} {part}: {n}")
    print("\n".join(out))
    if notes:
        print()
        for n in notes:
            print("NOTE " + n.splitlines()[0][:300])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--broker", choices=("sluice", "kafka", "both"), default="both")
    ap.add_argument("--sluice-bin", default=os.path.join("target", "release", "sluice"))
    ap.add_argument("--topics", type=int, default=2000)
    ap.add_argument("--partitions", type=int, default=5, help="partitions per topic")
    ap.add_argument("--create-batch", type=int, default=100, help="topics per CreateTopics")
    ap.add_argument("--big-gb", type=float, default=10.0, help="GB (10^9 B) in the big topic")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--data-dir", default=os.path.join(".", "target", "bench-data", "partitions"),
                    help="a fresh subdirectory of this is used, removed afterwards unless --keep")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--kafka-heap", default="4g")
    ap.add_argument("--kafka-set", action="append", default=[], metavar="K=V",
                    help="extra Kafka broker property (kafka.sh --set), repeatable")
    ap.add_argument("--partitions-per-shard", type=int, default=None,
                    help=f'Sluice "{PER_SHARD_KEY}" [default: topics x partitions + {PER_SHARD_MARGIN}]')
    ap.add_argument("--broker-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--start-timeout", type=float, default=900.0,
                    help="seconds a (re)start may take before it counts as failed")
    ap.add_argument("--stop-timeout", type=float, default=300.0,
                    help="seconds after SIGTERM before SIGKILL")
    ap.add_argument("--phase-timeout", type=float, default=1800.0,
                    help="bound of topic creation, the 1-record produce and the read-back")
    ap.add_argument("--big-timeout", type=float, default=None,
                    help="bound of the big produce [default: 300 + 300 s per GB]")
    ap.add_argument("--dup-grace", type=float, default=2.0,
                    help="seconds the read-back goes on after the last record, to see duplicates")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds to wait before reading RSS/fds")
    ap.add_argument("--drop-caches", action="store_true",
                    help="sync and drop the page cache before every restart (needs root)")
    args = ap.parse_args(argv)
    if args.topics < 1 or args.partitions < 1 or args.create_batch < 1:
        ap.error("--topics, --partitions and --create-batch must be at least 1")
    if args.big_gb <= 0 and not args.skip_big:
        ap.error("--big-gb must be positive (or --skip-big)")
    args.sluice_key_accepted = None
    return args


def main(argv=None):
    args = parse_args(argv)
    if shutil.which("taskset") is None:
        sys.exit("partitions.py: needs taskset (util-linux)")
    allowed = os.sched_getaffinity(0)
    CPUS_ALLOWED[:] = sorted(allowed)
    if args.broker_cpu not in allowed or args.client_cpu not in allowed or \
            args.broker_cpu == args.client_cpu:
        sys.exit(f"partitions.py: --broker-cpu {args.broker_cpu} and --client-cpu "
                 f"{args.client_cpu} must be two different CPUs of {sorted(allowed)}")
    if args.broker in ("sluice", "both"):
        if not os.path.isabs(args.sluice_bin) and not os.path.exists(args.sluice_bin):
            alt = os.path.join(REPO, args.sluice_bin)
            if os.path.exists(alt):
                args.sluice_bin = alt
        if not os.access(args.sluice_bin, os.X_OK):
            sys.exit(f"partitions.py: no sluice binary at {args.sluice_bin}: "
                     "cargo build --release -p sluice-broker (or --sluice-bin)")
        args.sluice_bin = os.path.abspath(args.sluice_bin)
    if args.broker in ("kafka", "both"):
        r = subprocess.run(["bash", KAFKA_SH, "classpath"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("partitions.py: no Kafka jars: bash benches/kafka/kafka.sh fetch")

    os.makedirs(args.data_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    root = os.path.abspath(os.path.join(args.data_dir, f"run-{stamp}-{os.getpid()}"))
    SCRUB.add(root, "$RUN")
    SCRUB.add(args.data_dir, "$DATA_DIR")
    SCRUB.add(REPO, "$REPO")
    SCRUB.add(os.path.expanduser("~"), "$HOME")
    n_brokers = 2 if args.broker == "both" else 1
    free = shutil.disk_usage(args.data_dir).free
    # many partitions: Sluice writes ahead up to 1 MiB of zeros per partition it appends to
    need = (0 if args.skip_big else 3 * args.big_gb * 1e9 * (n_brokers if args.keep else 1)) \
        + args.topics * args.partitions * 2 * 2**20 * (n_brokers if args.keep else 1)
    if free < need:
        sys.exit(f"partitions.py: only {free / 1e9:.1f} GB free under {args.data_dir}; this run "
                 f"needs {need / 1e9:.1f} GB (3 x --big-gb {args.big_gb} plus 2 MiB per partition"
                 f"{', per broker with --keep' if args.keep and n_brokers > 1 else ''}). "
                 "Use a smaller --big-gb, --skip-big, or another --data-dir.")

    signal.signal(signal.SIGTERM, _on_signal)
    # also when started in the background, where a shell leaves SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, _on_signal)
    # atexit runs last-registered first: processes are stopped before their data is removed
    atexit.register(lambda: (not args.keep) and shutil.rmtree(root, ignore_errors=True))
    atexit.register(_cleanup_all)
    os.sched_setaffinity(0, {args.client_cpu})  # librdkafka threads inherit it

    results = {
        "benchmark": "partitions",
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python3 benches/partitions/partitions.py " + " ".join(
            SCRUB(a) for a in (argv if argv is not None else sys.argv[1:])),
        "settings": {k: (SCRUB(v) if isinstance(v, str) else v) for k, v in vars(args).items()
                     if k not in ("sluice_key_accepted",)},
        "definitions": {
            "serves": "Metadata lists every topic with all its partitions led, AND an acks=all "
                      "produce of one record to each sample partition is acknowledged and read "
                      "back; seconds from just before the process is started",
            "sample": f"{SAMPLE_PARTITIONS} partitions spread over all topics (many), all "
                      f"{BIG_PARTITIONS} (big)",
            "rss_per_partition_kib": "(VmRSS after creation - VmRSS fresh) / partitions created",
            "gb": "10^9 bytes", "mb_per_sec": "10^6 bytes/s of record values",
            "broker_cpu": f"CPU {args.broker_cpu} (taskset), client on CPU {args.client_cpu}",
            "fd_limit": "the broker's RLIMIT_NOFILE (/proc/PID/limits)",
            "disk": "du of the broker's data (Kafka: its log.dirs) after the phase",
        },
        "machine": machine_facts(args, args.data_dir),
        "brokers": [],
    }
    results["settings"]["sluice_bin"] = SCRUB(args.sluice_bin)
    results["settings"]["data_dir"] = os.path.relpath(args.data_dir) \
        if not os.path.isabs(args.data_dir) else "(absolute path given)"
    os.makedirs(root)
    try:
        for kind in (["sluice", "kafka"] if args.broker == "both" else [args.broker]):
            log(f"==== {kind}")
            t = time.monotonic()
            r = {"broker": kind}
            results["brokers"].append(r)
            try:
                run_broker(kind, args, root, r)
            finally:
                r["wall_secs"] = time.monotonic() - t
            _cleanup_all()  # nothing of this broker may run while the next one is measured
    finally:
        _cleanup_all()
        results["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        if results["brokers"]:
            report(results, args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(scrub_tree(results), f, indent=2, sort_keys=False)
                f.write("\n")
            log(f"wrote {args.json}")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"kept data in {root}")


def scrub_tree(v):
    if isinstance(v, str):
        return SCRUB(v)
    if isinstance(v, dict):
        return {k: scrub_tree(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [scrub_tree(x) for x in v]
    return v


if __name__ == "__main__":
    main()
