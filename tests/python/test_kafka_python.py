"""Compatibility suite for kafka-python (pure-Python client, 2.x)."""

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic
from kafka.errors import TopicAlreadyExistsError

from compat_helpers import (
    NUM_MESSAGES,
    NUM_PARTITIONS,
    REPLICATION_FACTOR,
    TOPIC_READY_S,
    base_timestamp,
    first_at_or_after,
    make_messages,
    unique_topic,
    wait_for,
)

CLIENT_ID = "sluice-compat-kafka-python"
TIMEOUT_MS = 15_000


def _admin(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id=CLIENT_ID,
                            request_timeout_ms=TIMEOUT_MS)


def _consumer(bootstrap):
    # No group: assign() + seek only, nothing committed.
    return KafkaConsumer(bootstrap_servers=bootstrap, client_id=CLIENT_ID, group_id=None,
                         enable_auto_commit=False, auto_offset_reset="none",
                         fetch_max_wait_ms=100, request_timeout_ms=TIMEOUT_MS + 5000)


def _topic_partitions(adm, topic):
    (d,) = adm.describe_topics([topic])
    return d


def _wait_topic(adm, topic, partitions):
    def ready():
        d = _topic_partitions(adm, topic)
        if d["error_code"] != 0:
            return f"{topic}: error {d['error_code']}"
        if len(d["partitions"]) != partitions:
            return f"{topic}: {len(d['partitions'])} partitions"
        if any(p["leader"] < 0 or p["error_code"] != 0 for p in d["partitions"]):
            return f"{topic}: partitions without a leader"
        if any(len(p["replicas"]) != REPLICATION_FACTOR for p in d["partitions"]):
            return f"{topic}: replicas {[p['replicas'] for p in d['partitions']]}, want {REPLICATION_FACTOR} each"
        if any(p["leader"] != p["replicas"][0] for p in d["partitions"]):
            return f"{topic}: a partition is not yet led by its preferred replica"
        return None

    wait_for(ready, timeout=TOPIC_READY_S)


def _consume(c, want_counts, timeout=60.0):
    got = {p: [] for p in want_counts}
    remaining = sum(want_counts.values())
    deadline = time.monotonic() + timeout
    while remaining > 0:
        assert time.monotonic() < deadline, f"timed out with {remaining} records missing"
        for tp, recs in c.poll(timeout_ms=500, max_records=2000).items():
            assert tp.partition in got, f"records from unexpected partition {tp}"
            for r in recs:
                if len(got[tp.partition]) < want_counts[tp.partition]:
                    got[tp.partition].append(r)
                    remaining -= 1
    return got


def _check(r, offset, want):
    assert r.offset == offset, f"offset {r.offset} want {offset} (message {want.index})"
    assert r.key == want.key, f"offset {offset}: key"
    assert r.value == want.value, f"offset {offset}: value"
    assert list(r.headers) == want.headers, f"offset {offset}: headers {r.headers}"
    assert r.timestamp == want.ts, f"offset {offset}: timestamp {r.timestamp}"
    assert r.timestamp_type == 0, f"offset {offset}: timestamp type {r.timestamp_type} (want CreateTime)"


def test_kafka_python_round_trip(bootstrap):
    adm = _admin(bootstrap)
    topic = unique_topic("compat-kafka-python")

    # --- admin: create, list, describe, create twice ---
    adm.create_topics([NewTopic(topic, num_partitions=NUM_PARTITIONS, replication_factor=REPLICATION_FACTOR,
                                topic_configs={"cleanup.policy": "delete"})], timeout_ms=TIMEOUT_MS)
    _wait_topic(adm, topic, NUM_PARTITIONS)
    assert topic in adm.list_topics()
    with pytest.raises(TopicAlreadyExistsError):
        adm.create_topics([NewTopic(topic, num_partitions=NUM_PARTITIONS, replication_factor=REPLICATION_FACTOR)],
                          timeout_ms=TIMEOUT_MS)
    cluster = adm.describe_cluster()
    assert cluster["brokers"] and cluster["controller_id"] >= 0

    # --- configs: describe, (non-incremental) alter, describe ---
    def topic_config():
        (resp,) = adm.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        (res,) = resp.resources
        assert res[0] == 0, f"DescribeConfigs error {res}"
        return {e[0]: e[1] for e in res[4]}

    cfg = topic_config()
    assert cfg["cleanup.policy"] == "delete"
    assert "retention.ms" in cfg
    (res,) = adm.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                               configs={"retention.ms": "86400000",
                                                        "cleanup.policy": "delete"})]).resources
    assert res[0] == 0, f"AlterConfigs error {res}"
    wait_for(lambda: None if topic_config()["retention.ms"] == "86400000" else "retention.ms not altered", timeout=10)

    # --- produce: acks=all, explicit timestamps, two headers ---
    base = base_timestamp()
    msgs = make_messages(NUM_MESSAGES, base)
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id=CLIENT_ID, acks="all",
                             linger_ms=5, batch_size=128 * 1024, max_in_flight_requests_per_connection=1,
                             retries=5, request_timeout_ms=TIMEOUT_MS)
    t0 = time.monotonic()
    futures = [producer.send(topic, key=m.key, value=m.value, headers=m.headers, timestamp_ms=m.ts)
               for m in msgs]
    producer.flush(timeout=60)
    producer.close(timeout=10)
    print(f"kafka-python produced {NUM_MESSAGES} in {time.monotonic() - t0:.2f}s")
    per_part = {p: [] for p in range(NUM_PARTITIONS)}
    for m, f in zip(msgs, futures):
        md = f.get(timeout=1)
        assert md.offset == len(per_part[md.partition]), \
            f"message {m.index} at {md.partition}/{md.offset}, want offset {len(per_part[md.partition])}"
        assert md.timestamp == m.ts
        per_part[md.partition].append(m)
    assert all(per_part.values()), "some partition got no message"

    # --- consume every partition (assign + seek_to_beginning) ---
    tps = [TopicPartition(topic, p) for p in range(NUM_PARTITIONS)]
    c = _consumer(bootstrap)
    try:
        c.assign(tps)
        c.seek_to_beginning()
        t0 = time.monotonic()
        got = _consume(c, {p: len(ms) for p, ms in per_part.items()})
        print(f"kafka-python consumed {NUM_MESSAGES} in {time.monotonic() - t0:.2f}s")
        for p, rs in got.items():
            for i, r in enumerate(rs):
                _check(r, i, per_part[p][i])

        # --- replay: seek(0) on partition 0, seek(mid) on partition 1 ---
        mid = len(per_part[1]) // 2
        c.seek(tps[0], 0)
        c.seek(tps[1], mid)
        got = _consume(c, {0: len(per_part[0]), 1: len(per_part[1]) - mid})
        for i, r in enumerate(got[0]):
            _check(r, i, per_part[0][i])
        for i, r in enumerate(got[1]):
            _check(r, mid + i, per_part[1][mid + i])

        # --- offsets: beginning/end, offsets_for_times ---
        assert c.beginning_offsets(tps) == {tp: 0 for tp in tps}
        assert c.end_offsets(tps) == {tp: len(per_part[tp.partition]) for tp in tps}
        lookup = base + NUM_MESSAGES // 2 + 1
        found = c.offsets_for_times({tp: lookup for tp in tps})
        for tp in tps:
            i = first_at_or_after(per_part[tp.partition], lookup)
            assert found[tp] is not None, f"{tp}: no offset for time"
            assert (found[tp].offset, found[tp].timestamp) == (i, per_part[tp.partition][i].ts), f"{tp}"
            c.seek(tp, found[tp].offset)
        got = _consume(c, {p: 1 for p in range(NUM_PARTITIONS)})
        for p, rs in got.items():
            i = first_at_or_after(per_part[p], lookup)
            assert rs[0].timestamp >= lookup
            _check(rs[0], i, per_part[p][i])
        # After every message: no offset (the broker answers -1).
        assert c.offsets_for_times({tp: base + NUM_MESSAGES + 60_000 for tp in tps}) == {tp: None for tp in tps}
    finally:
        c.close()

    # --- DeleteRecords, CreatePartitions, DeleteTopics ---
    cut = len(per_part[3]) // 3
    dr = adm.delete_records({tps[3]: cut}, timeout_ms=TIMEOUT_MS)
    assert dr[tps[3]]["error_code"] == 0 and dr[tps[3]]["low_watermark"] == cut
    c = _consumer(bootstrap)
    try:
        assert c.beginning_offsets(tps)[tps[3]] == cut
    finally:
        c.close()

    (err,) = adm.create_partitions({topic: NewPartitions(NUM_PARTITIONS + 2)}, timeout_ms=TIMEOUT_MS).topic_errors
    assert err[1] == 0, f"CreatePartitions error {err}"
    _wait_topic(adm, topic, NUM_PARTITIONS + 2)

    (err,) = adm.delete_topics([topic], timeout_ms=TIMEOUT_MS).topic_error_codes
    assert err[1] == 0, f"DeleteTopics error {err}"
    wait_for(lambda: None if topic not in adm.list_topics() else f"{topic} still listed")
    adm.close()


def test_kafka_python_gzip(bootstrap):
    """kafka-python's own gzip batches (the codec it supports without extra packages)."""
    adm = _admin(bootstrap)
    topic = unique_topic("compat-kafka-python-gzip")
    adm.create_topics([NewTopic(topic, num_partitions=1, replication_factor=REPLICATION_FACTOR)], timeout_ms=TIMEOUT_MS)
    _wait_topic(adm, topic, 1)
    try:
        msgs = make_messages(1000, base_timestamp(), tag=" gzip compressible compressible")
        producer = KafkaProducer(bootstrap_servers=bootstrap, client_id=CLIENT_ID, acks="all",
                                 compression_type="gzip", linger_ms=20, request_timeout_ms=TIMEOUT_MS)
        futures = [producer.send(topic, key=m.key, value=m.value, headers=m.headers, timestamp_ms=m.ts)
                   for m in msgs]
        producer.flush(timeout=30)
        producer.close(timeout=10)
        assert [f.get(timeout=1).offset for f in futures] == list(range(len(msgs)))
        c = _consumer(bootstrap)
        try:
            c.assign([TopicPartition(topic, 0)])
            c.seek(TopicPartition(topic, 0), 0)
            got = _consume(c, {0: len(msgs)})
            for i, r in enumerate(got[0]):
                _check(r, i, msgs[i])
        finally:
            c.close()
    finally:
        adm.delete_topics([topic], timeout_ms=TIMEOUT_MS)
        adm.close()
