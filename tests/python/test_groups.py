"""Consumer groups through confluent-kafka (librdkafka): subscribe with rebalance
callbacks and manual synchronous commits, a second member joining, and the
group as AdminClient sees it.

A broker may hold the first rebalance of a new group for
group.initial.rebalance.delay.ms (Kafka's default is 3 s); the waits below
allow for several of those.
"""

import time

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from compat_helpers import NUM_PARTITIONS, REPLICATION_FACTOR, TOPIC_READY_S, base_timestamp, make_messages, unique_topic, wait_for

CLIENT_ID = "sluice-compat-confluent-groups"
GROUP_MESSAGES = 2000
T = 15  # seconds, per admin/metadata call
CONSUME_WAIT = 45  # seconds, bound on one consume phase


def _create_topic(adm, topic):
    fs = adm.create_topics([NewTopic(topic, num_partitions=NUM_PARTITIONS, replication_factor=REPLICATION_FACTOR)],
                           operation_timeout=10, request_timeout=T)
    fs[topic].result(timeout=T)

    def ready():
        md = adm.list_topics(timeout=5).topics.get(topic)
        if md is None or md.error is not None:
            return f"{topic} not in metadata yet ({md and md.error})"
        if len(md.partitions) != NUM_PARTITIONS:
            return f"{topic} has {len(md.partitions)} partitions"
        if any(p.leader < 0 or p.error is not None for p in md.partitions.values()):
            return "a partition has no leader yet"
        if any(p.leader != p.replicas[0] for p in md.partitions.values()):
            return "a partition is not yet led by its preferred replica"
        return None

    wait_for(ready, timeout=TOPIC_READY_S)


def _produce(bootstrap, topic, msgs):
    p = Producer({"bootstrap.servers": bootstrap, "client.id": CLIENT_ID, "acks": "all",
                  "enable.idempotence": True, "linger.ms": 5})
    errors = []

    def on_delivery(err, _m):
        if err is not None:
            errors.append(err)

    for m in msgs:
        p.produce(topic, key=m.key, value=m.value, headers=m.headers, timestamp=m.ts, on_delivery=on_delivery)
        p.poll(0)
    assert p.flush(30) == 0, "messages not delivered after flush"
    assert not errors, f"delivery errors: {errors[:5]}"


class Member:
    """One subscribe() consumer: poll → process → commit(asynchronous=False)."""

    def __init__(self, bootstrap, group, topic, name):
        self.name = name
        self.topic = topic
        self.events = []  # ("assign"|"revoke", sorted partitions)
        self.processed = {}  # partition -> [offsets]
        self.keys = {}  # key -> times processed
        self.c = Consumer({
            "bootstrap.servers": bootstrap,
            "client.id": f"{CLIENT_ID}-{name}",
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
            "max.poll.interval.ms": 60000,
            "fetch.wait.max.ms": 100,
        })
        self.c.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, _c, parts):
        self.events.append(("assign", sorted(p.partition for p in parts)))

    def _on_revoke(self, _c, parts):
        self.events.append(("revoke", sorted(p.partition for p in parts)))

    def assignment(self):
        return sorted(tp.partition for tp in self.c.assignment() if tp.topic == self.topic)

    def poll_once(self, timeout=0.2):
        """Consume one batch, process it, and commit it synchronously."""
        last = {}
        for m in self.c.consume(num_messages=500, timeout=timeout):
            if m.error() is not None:
                raise KafkaException(m.error())
            assert m.topic() == self.topic
            self.processed.setdefault(m.partition(), []).append(m.offset())
            self.keys[m.key()] = self.keys.get(m.key(), 0) + 1
            last[m.partition()] = m.offset()
        if last:
            res = self.c.commit(offsets=[TopicPartition(self.topic, p, o + 1) for p, o in last.items()],
                                asynchronous=False)
            bad = [tp for tp in res if tp.error is not None]
            assert not bad, f"{self.name}: commit errors {bad}"
        return len(last)


def _consume_until(members, want_keys, timeout=CONSUME_WAIT):
    deadline = time.monotonic() + timeout
    while True:
        seen = set()
        for m in members:
            seen.update(k for k in m.keys if k in want_keys)
        if len(seen) == len(want_keys):
            return
        assert time.monotonic() < deadline, \
            f"timed out: {len(want_keys) - len(seen)} of {len(want_keys)} messages never processed"
        for m in members:
            m.poll_once()


def _committed(c, topic):
    res = c.committed([TopicPartition(topic, p) for p in range(NUM_PARTITIONS)], timeout=T)
    bad = [tp for tp in res if tp.error is not None]
    assert not bad, f"committed() errors: {bad}"
    return {tp.partition: tp.offset for tp in res}


def _high_watermarks(c, topic):
    return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=T, cached=False)[1]
            for p in range(NUM_PARTITIONS)}


def test_subscribe_rebalance_manual_commit(bootstrap):
    adm = AdminClient({"bootstrap.servers": bootstrap, "client.id": CLIENT_ID})
    topic = unique_topic("compat-confluent-groups")
    group = unique_topic("compat-confluent-group")
    _create_topic(adm, topic)
    msgs = make_messages(GROUP_MESSAGES, base_timestamp())
    half = GROUP_MESSAGES // 2
    first = {m.key for m in msgs[:half]}
    everything = {m.key for m in msgs}
    members = []
    try:
        # --- one member: subscribe, gets all partitions, processes and commits ---
        t0 = time.monotonic()
        _produce(bootstrap, topic, msgs[:half])
        a = Member(bootstrap, group, topic, "a")
        members.append(a)
        _consume_until([a], first)
        print(f"member a processed {half} messages in {time.monotonic() - t0:.2f}s")
        assert a.assignment() == list(range(NUM_PARTITIONS))
        assert a.events and a.events[0] == ("assign", list(range(NUM_PARTITIONS))), a.events
        high = _high_watermarks(a.c, topic)
        assert sum(high.values()) == half
        assert _committed(a.c, topic) == high, "committed offsets differ from the high watermarks"

        # --- a second member joins: the group rebalances, callbacks fire on both,
        # the partitions split between them ---
        t0 = time.monotonic()
        b = Member(bootstrap, group, topic, "b")
        members.append(b)
        deadline = time.monotonic() + CONSUME_WAIT
        while True:
            pa, pb = a.assignment(), b.assignment()
            if pa and pb and sorted(pa + pb) == list(range(NUM_PARTITIONS)):
                break
            assert time.monotonic() < deadline, f"no split after the second member joined: a={pa} b={pb} " \
                                                f"a events={a.events} b events={b.events}"
            a.poll_once(0.1)
            b.poll_once(0.1)
        print(f"rebalance to two members took {time.monotonic() - t0:.2f}s: a={pa} b={pb}")
        assert len(pa) == len(pb) == NUM_PARTITIONS // 2, f"uneven split a={pa} b={pb}"
        assert ("revoke", list(range(NUM_PARTITIONS))) in a.events, f"a was never revoked: {a.events}"
        assert a.events[-1] == ("assign", pa), f"a's last callback {a.events[-1]}, assignment {pa}"
        assert b.events == [("assign", pb)], f"b callbacks {b.events}"

        # --- both consume the second half and commit ---
        t0 = time.monotonic()
        _produce(bootstrap, topic, msgs[half:])
        _consume_until([a, b], everything)
        print(f"two members processed {GROUP_MESSAGES - half} more in {time.monotonic() - t0:.2f}s")
        assert sorted(b.processed) == pb, f"b processed partitions {sorted(b.processed)}, owns {pb}"
        # b starts every partition where a's commits left it: nothing twice.
        for p in pb:
            assert b.processed[p][0] == high[p], f"b started p{p} at {b.processed[p][0]}, committed was {high[p]}"
        dups = sum(n - 1 for m in (a, b) for n in m.keys.values()) + len(set(a.keys) & set(b.keys))
        assert dups == 0, f"{dups} messages processed more than once"

        # --- committed() matches the end of every partition, seen from either member ---
        high = _high_watermarks(a.c, topic)
        assert sum(high.values()) == GROUP_MESSAGES
        assert _committed(a.c, topic) == high
        assert _committed(b.c, topic) == high

        # --- the group through AdminClient: listed, described with both members ---
        listed = adm.list_consumer_groups(request_timeout=T).result(timeout=T)
        assert not listed.errors, listed.errors
        mine = [g for g in listed.valid if g.group_id == group]
        assert len(mine) == 1, f"list_consumer_groups lacks {group}"
        assert mine[0].state == ConsumerGroupState.STABLE, mine[0].state
        desc = adm.describe_consumer_groups([group], request_timeout=T)[group].result(timeout=T)
        assert desc.state == ConsumerGroupState.STABLE, desc.state
        assert desc.partition_assignor in ("range", "roundrobin"), desc.partition_assignor
        assert len(desc.members) == 2, desc.members
        owned = {}
        for mem in desc.members:
            owned[mem.client_id] = sorted(tp.partition for tp in mem.assignment.topic_partitions)
        assert owned == {f"{CLIENT_ID}-a": pa, f"{CLIENT_ID}-b": pb}, owned
        res = adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                              request_timeout=T)[group].result(timeout=T)
        got = {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == topic}
        assert got == high, f"list_consumer_group_offsets {got}, want {high}"
    finally:
        for m in members:
            m.c.close()  # LeaveGroup

    # --- both left: the group is Empty and keeps its offsets; then delete it ---
    def empty():
        d = adm.describe_consumer_groups([group], request_timeout=T)[group].result(timeout=T)
        if d.state != ConsumerGroupState.EMPTY or d.members:
            return f"state {d.state} with {len(d.members)} members"
        return None

    wait_for(empty, timeout=20)
    res = adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                          request_timeout=T)[group].result(timeout=T)
    assert {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == topic} == high
    adm.delete_consumer_groups([group], request_timeout=T)[group].result(timeout=T)
    listed = adm.list_consumer_groups(request_timeout=T).result(timeout=T)
    assert group not in [g.group_id for g in listed.valid], "group still listed after delete_consumer_groups"
    adm.delete_topics([topic], operation_timeout=10)[topic].result(timeout=T)
