"""Compatibility suite for confluent-kafka (librdkafka)."""

import time

import pytest
from confluent_kafka import (
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from compat_helpers import (
    NUM_MESSAGES,
    NUM_PARTITIONS,
    REPLICATION_FACTOR,
    TOPIC_READY_S,
    base_timestamp,
    first_at_or_after,
    key_index,
    make_messages,
    unique_topic,
    wait_for,
)

CLIENT_ID = "sluice-compat-confluent-kafka"
T = 15  # seconds, per admin/metadata call


def _admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "client.id": CLIENT_ID})


def _create_topic(adm, topic, partitions, config=None):
    fs = adm.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=REPLICATION_FACTOR, config=config or {})],
        operation_timeout=10, request_timeout=T,
    )
    fs[topic].result(timeout=T)

    def ready():
        md = adm.list_topics(timeout=5).topics.get(topic)
        if md is None or md.error is not None:
            return f"{topic} not in metadata yet ({md and md.error})"
        if len(md.partitions) != partitions:
            return f"{topic} has {len(md.partitions)} partitions"
        for p in md.partitions.values():
            if p.leader < 0 or p.error is not None:
                return f"partition {p.id} leader {p.leader} error {p.error}"
            if len(p.replicas) != REPLICATION_FACTOR:
                return f"partition {p.id} replicas {p.replicas}, want {REPLICATION_FACTOR} of them"
            if p.leader != p.replicas[0]:
                return f"partition {p.id} led by {p.leader}, not yet by its preferred replica {p.replicas[0]}"
        return None

    wait_for(ready, timeout=TOPIC_READY_S)


def _produce(bootstrap, topic, msgs, **conf):
    """Produce msgs, return {index: (partition, offset)} from the delivery reports."""
    cfg = {
        "bootstrap.servers": bootstrap,
        "client.id": CLIENT_ID,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
    }
    cfg.update(conf)
    p = Producer(cfg)
    delivered = {}
    errors = []

    def on_delivery(err, m):
        if err is not None:
            errors.append(err)
        else:
            delivered[key_index(m.key())] = (m.partition(), m.offset(), m.timestamp())

    deadline = time.monotonic() + 60
    for m in msgs:
        for _ in range(1000):
            try:
                p.produce(topic, key=m.key, value=m.value, headers=m.headers, timestamp=m.ts,
                          on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        else:
            pytest.fail("producer queue stayed full")
        p.poll(0)
        assert time.monotonic() < deadline, "producing took too long"
    left = p.flush(30)
    assert left == 0, f"{left} messages not delivered after flush"
    assert not errors, f"delivery errors: {errors[:5]}"
    assert len(delivered) == len(msgs)
    return delivered


def _consumer(bootstrap, **conf):
    # The Python binding insists on group.id even for assign(); no offsets are committed.
    cfg = {
        "bootstrap.servers": bootstrap,
        "client.id": CLIENT_ID,
        "group.id": unique_topic("compat-confluent-unused-group"),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "fetch.wait.max.ms": 100,
    }
    cfg.update(conf)
    return Consumer(cfg)


def _consume(c, want_counts, timeout=60.0):
    """Consume until want_counts[p] messages arrived on every partition p."""
    got = {p: [] for p in want_counts}
    remaining = sum(want_counts.values())
    deadline = time.monotonic() + timeout
    while remaining > 0:
        assert time.monotonic() < deadline, f"timed out with {remaining} messages missing"
        for m in c.consume(num_messages=1000, timeout=0.5):
            if m.error() is not None:
                raise KafkaException(m.error())
            p = m.partition()
            assert p in got, f"message from unexpected partition {p}"
            if len(got[p]) < want_counts[p]:
                got[p].append(m)
                remaining -= 1
    return got


def _check(m, offset, want):
    assert m.offset() == offset, f"offset {m.offset()} want {offset} (message {want.index})"
    assert m.key() == want.key, f"offset {offset}: key"
    assert m.value() == want.value, f"offset {offset}: value"
    assert m.headers() == want.headers, f"offset {offset}: headers {m.headers()}"
    assert m.timestamp() == (TIMESTAMP_CREATE_TIME, want.ts), f"offset {offset}: timestamp {m.timestamp()}"


@pytest.fixture(scope="module")
def produced(bootstrap):
    """A 4-partition topic holding NUM_MESSAGES messages; yields (topic, per-partition msgs, base ts)."""
    adm = _admin(bootstrap)
    topic = unique_topic("compat-confluent")
    _create_topic(adm, topic, NUM_PARTITIONS, {"cleanup.policy": "delete"})
    base = base_timestamp()
    msgs = make_messages(NUM_MESSAGES, base)
    t0 = time.monotonic()
    delivered = _produce(bootstrap, topic, msgs)
    print(f"confluent-kafka produced {NUM_MESSAGES} in {time.monotonic() - t0:.2f}s")
    per_part = {p: [] for p in range(NUM_PARTITIONS)}
    for m in msgs:  # idempotent producer: per-partition order == send order
        part, off, ts = delivered[m.index]
        assert off == len(per_part[part]), f"message {m.index} at {part}/{off}, want offset {len(per_part[part])}"
        assert ts == (TIMESTAMP_CREATE_TIME, m.ts)
        per_part[part].append(m)
    assert all(per_part.values()), "some partition got no message"
    yield topic, per_part, base
    try:
        adm.delete_topics([topic], operation_timeout=10)[topic].result(timeout=T)
    except KafkaException:
        pass  # already deleted by test_partitions_records_and_delete


def test_consume_all_partitions_in_order(bootstrap, produced):
    topic, per_part, _ = produced
    c = _consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(NUM_PARTITIONS)])
        t0 = time.monotonic()
        got = _consume(c, {p: len(ms) for p, ms in per_part.items()})
        print(f"confluent-kafka consumed {NUM_MESSAGES} in {time.monotonic() - t0:.2f}s")
        for p, ms in got.items():
            for i, m in enumerate(ms):
                _check(m, i, per_part[p][i])

        # Replay: seek partition 0 back to 0 and partition 1 to its middle.
        mid = len(per_part[1]) // 2
        c.seek(TopicPartition(topic, 0, 0))
        c.seek(TopicPartition(topic, 1, mid))
        got = _consume(c, {0: len(per_part[0]), 1: len(per_part[1]) - mid})
        for i, m in enumerate(got[0]):
            _check(m, i, per_part[0][i])
        for i, m in enumerate(got[1]):
            _check(m, mid + i, per_part[1][mid + i])
    finally:
        c.close()

    # A brand-new consumer assigned at offset 0 sees the same log.
    c = _consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, 2, 0)])
        got = _consume(c, {2: len(per_part[2])})
        for i, m in enumerate(got[2]):
            _check(m, i, per_part[2][i])
    finally:
        c.close()


def test_offsets_for_times_and_watermarks(bootstrap, produced):
    topic, per_part, base = produced
    lookup = base + NUM_MESSAGES // 2 + 1
    c = _consumer(bootstrap)
    try:
        for p in range(NUM_PARTITIONS):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=T)
            assert (lo, hi) == (0, len(per_part[p])), f"p{p} watermarks"
        res = c.offsets_for_times([TopicPartition(topic, p, lookup) for p in range(NUM_PARTITIONS)], timeout=T)
        assert len(res) == NUM_PARTITIONS
        want_idx = {}
        for tp in res:
            assert tp.error is None, f"p{tp.partition}: {tp.error}"
            want_idx[tp.partition] = first_at_or_after(per_part[tp.partition], lookup)
            assert tp.offset == want_idx[tp.partition], f"p{tp.partition} offsets_for_times"
        c.assign(res)
        got = _consume(c, {p: 1 for p in range(NUM_PARTITIONS)})
        for p, ms in got.items():
            assert ms[0].timestamp()[1] >= lookup
            _check(ms[0], want_idx[p], per_part[p][want_idx[p]])

        # Before every message -> offset 0; after every message -> end (-1 from the broker).
        res = c.offsets_for_times([TopicPartition(topic, p, base - 60_000) for p in range(NUM_PARTITIONS)], timeout=T)
        assert [tp.offset for tp in res] == [0] * NUM_PARTITIONS
        res = c.offsets_for_times([TopicPartition(topic, p, base + NUM_MESSAGES + 60_000)
                                   for p in range(NUM_PARTITIONS)], timeout=T)
        assert [tp.offset for tp in res] == [OFFSET_END] * NUM_PARTITIONS
    finally:
        c.close()


def test_admin_list_offsets(bootstrap, produced):
    topic, per_part, base = produced
    adm = _admin(bootstrap)
    lookup = base + NUM_MESSAGES // 2 + 1
    for spec_name, spec in [("earliest", OffsetSpec.earliest()), ("latest", OffsetSpec.latest()),
                            ("for_timestamp", OffsetSpec.for_timestamp(lookup)),
                            ("max_timestamp", OffsetSpec.max_timestamp())]:
        fs = adm.list_offsets({TopicPartition(topic, p): spec for p in range(NUM_PARTITIONS)}, request_timeout=T)
        for tp, f in fs.items():
            r = f.result(timeout=T)
            ms = per_part[tp.partition]
            if spec_name == "earliest":
                assert r.offset == 0
            elif spec_name == "latest":
                assert r.offset == len(ms)
            elif spec_name == "for_timestamp":
                i = first_at_or_after(ms, lookup)
                assert (r.offset, r.timestamp) == (i, ms[i].ts), f"p{tp.partition} for_timestamp"
            else:  # the record with the largest timestamp: the last one here
                assert (r.offset, r.timestamp) == (len(ms) - 1, ms[-1].ts), f"p{tp.partition} max_timestamp"


def _topic_configs(adm, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    return adm.describe_configs([res], request_timeout=T)[res].result(timeout=T)


def test_admin_topics_and_configs(bootstrap, produced):
    topic, _, _ = produced
    adm = _admin(bootstrap)

    # Metadata / list
    md = adm.list_topics(timeout=T)
    assert topic in md.topics and len(md.topics[topic].partitions) == NUM_PARTITIONS
    assert md.brokers, "no brokers in metadata"
    cluster = adm.describe_cluster(request_timeout=T).result(timeout=T)
    assert cluster.nodes and cluster.controller is not None
    desc = adm.describe_topics(TopicCollection([topic]), request_timeout=T)[topic].result(timeout=T)
    assert desc.name == topic and len(desc.partitions) == NUM_PARTITIONS
    assert desc.topic_id is not None and not desc.is_internal
    assert sorted(p.id for p in desc.partitions) == list(range(NUM_PARTITIONS))
    assert all(p.leader is not None for p in desc.partitions)
    assert all(len(p.replicas) == REPLICATION_FACTOR for p in desc.partitions), \
        [(p.id, [n.id for n in p.replicas]) for p in desc.partitions]
    assert all(p.isr for p in desc.partitions)

    # Creating it again fails with TOPIC_ALREADY_EXISTS.
    with pytest.raises(KafkaException) as ei:
        adm.create_topics([NewTopic(topic, num_partitions=NUM_PARTITIONS, replication_factor=REPLICATION_FACTOR)],
                          request_timeout=T)[topic].result(timeout=T)
    assert ei.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    # Describe, incremental alter, describe.
    cfg = _topic_configs(adm, topic)
    assert cfg["cleanup.policy"].value == "delete"
    assert cfg["cleanup.policy"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert "retention.ms" in cfg and "segment.bytes" in cfg
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", "2097152", incremental_operation=AlterConfigOpType.SET),
    ])
    adm.incremental_alter_configs([res], request_timeout=T)[res].result(timeout=T)

    def altered():
        c = _topic_configs(adm, topic)
        if c["retention.ms"].value != "86400000":
            return f"retention.ms = {c['retention.ms'].value}"
        if c["retention.ms"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value:
            return f"retention.ms source = {c['retention.ms'].source}"
        if c["max.message.bytes"].value != "2097152":
            return f"max.message.bytes = {c['max.message.bytes'].value}"
        return None

    wait_for(altered, timeout=10)

    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    adm.incremental_alter_configs([res], request_timeout=T)[res].result(timeout=T)
    wait_for(lambda: None if _topic_configs(adm, topic)["max.message.bytes"].source
             != ConfigSource.DYNAMIC_TOPIC_CONFIG.value else "max.message.bytes still dynamic", timeout=10)


def test_partitions_records_and_delete(bootstrap, produced):
    topic, per_part, _ = produced
    adm = _admin(bootstrap)

    # DeleteRecords moves partition 3's log start.
    cut = len(per_part[3]) // 3
    fs = adm.delete_records([TopicPartition(topic, 3, cut)], request_timeout=T)
    (f,) = fs.values()
    assert f.result(timeout=T).low_watermark == cut
    c = _consumer(bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 3), timeout=T) == (cut, len(per_part[3]))
        assert c.get_watermark_offsets(TopicPartition(topic, 2), timeout=T) == (0, len(per_part[2]))
    finally:
        c.close()

    # CreatePartitions 4 -> 6.
    adm.create_partitions([NewPartitions(topic, NUM_PARTITIONS + 2)], request_timeout=T)[topic].result(timeout=T)
    wait_for(lambda: None if len(adm.list_topics(timeout=5).topics[topic].partitions) == NUM_PARTITIONS + 2
             else "partition count not updated")

    # DeleteTopics.
    adm.delete_topics([topic], operation_timeout=10, request_timeout=T)[topic].result(timeout=T)
    wait_for(lambda: None if topic not in adm.list_topics(timeout=5).topics else f"{topic} still listed")


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_round_trip(bootstrap, codec):
    adm = _admin(bootstrap)
    topic = unique_topic(f"compat-confluent-{codec}")
    _create_topic(adm, topic, 2)
    try:
        msgs = make_messages(2000, base_timestamp(), tag=f" {codec} compressible compressible compressible")
        delivered = _produce(bootstrap, topic, msgs, **{"compression.type": codec, "linger.ms": 20})
        per_part = {0: [], 1: []}
        for m in msgs:
            part, off, _ = delivered[m.index]
            assert off == len(per_part[part])
            per_part[part].append(m)
        c = _consumer(bootstrap)
        try:
            c.assign([TopicPartition(topic, p, 0) for p in per_part])
            got = _consume(c, {p: len(ms) for p, ms in per_part.items()})
            for p, ms in got.items():
                for i, m in enumerate(ms):
                    _check(m, i, per_part[p][i])
        finally:
            c.close()
    finally:
        adm.delete_topics([topic], operation_timeout=10)[topic].result(timeout=T)
