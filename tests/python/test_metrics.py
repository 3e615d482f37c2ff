"""/metrics parsed by the official Prometheus client's text parser after confluent-kafka
traffic: records in and out, partition offsets and a group's lag match what was sent and
committed. (broker/tests/metrics.rs checks the exact request, error and byte counts.)"""

import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from compat_helpers import REPLICATION_FACTOR, unique_topic, wait_for

RECORDS = 40
COMMITTED = 15
T = 15  # seconds, per client call


def _scrape(admin):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=T) as r:
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "shard"))
            samples[(s.name, labels)] = samples.get((s.name, labels), 0.0) + s.value
    return samples


def _value(samples, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def _total(scrapes, name, **labels):
    """A counter over the cluster: each broker counts what it served."""
    return sum(_value(s, name, **labels) for s in scrapes)


def _most(scrapes, name, **labels):
    """A gauge every replica reports: the leader's is the newest."""
    return max(_value(s, name, **labels) for s in scrapes)


def test_metrics_parse_and_match(bootstrap, admin_addrs):
    topic = unique_topic("py-metrics")
    adm = AdminClient({"bootstrap.servers": bootstrap})
    adm.create_topics([NewTopic(topic, num_partitions=1, replication_factor=REPLICATION_FACTOR)])[topic].result(timeout=T)
    wait_for(lambda: None if topic in adm.list_topics(timeout=5).topics else f"{topic} not yet in metadata")

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(RECORDS):
        p.produce(topic, value=f"m-{i}".encode(), partition=0)
    assert p.flush(T) == 0

    group = unique_topic("py-metrics-group")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    while got < RECORDS:
        m = c.poll(T)
        assert m is not None and m.error() is None, m and m.error()
        got += 1
    c.commit(offsets=[TopicPartition(topic, 0, COMMITTED)], asynchronous=False)
    c.close()

    s = [_scrape(a) for a in admin_addrs]
    assert _total(s, "sluice_topic_records_in_total", topic=topic) == RECORDS
    assert _total(s, "sluice_topic_records_out_total", topic=topic) == RECORDS
    assert _most(s, "sluice_partition_high_watermark", topic=topic, partition="0") == RECORDS
    assert _most(s, "sluice_partition_log_end_offset", topic=topic, partition="0") == RECORDS
    assert _most(s, "sluice_group_lag", group=group, topic=topic, partition="0") == RECORDS - COMMITTED
    assert _total(s, "sluice_requests_total", api="Produce") >= 1
    assert _total(s, "sluice_storage_fdatasync_seconds_count") > 0
