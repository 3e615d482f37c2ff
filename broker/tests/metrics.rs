//! `/metrics` on the admin port: traffic through a real broker, then a scrape over HTTP that
//! must parse as Prometheus text and whose numbers must match the traffic exactly — request
//! and error counters, bytes and records by topic, partition offsets, a group's lag, and
//! the storage fdatasync histogram.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::producer::BaseRecord;

const TEST_LIMIT: Duration = Duration::from_secs(120);
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// Raw Produce requests sent to the counted topic, each with one batch.
const PRODUCES: usize = 3;
const RECORDS_PER_BATCH: usize = 4;
/// Records the real client sends to the second topic.
const CLIENT_RECORDS: usize = 25;

/// One scrape: samples by name and labels (sorted `k="v"` pairs), summed over `shard`, and
/// each family's TYPE.
struct Scrape(
    HashMap<String, HashMap<String, f64>>,
    HashMap<String, String>,
);

impl Scrape {
    /// The sum of every series of `name` whose labels include all of `want`.
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let Some(series) = self.0.get(name) else {
            return 0.0;
        };
        series
            .iter()
            .filter(|(labels, _)| {
                want.iter()
                    .all(|(k, v)| labels.split(',').any(|l| l == format!("{k}=\"{v}\"")))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

fn scrape(admin_port: u16) -> Scrape {
    let body = http_get(admin_port, "/metrics");
    parse_exposition(&body)
}

fn http_get(port: u16, path: &str) -> String {
    let (status, body) = admin_get(port, path).expect("admin port answers");
    assert!(status.starts_with("HTTP/1.0 200"), "{path}: {status}");
    body
}

/// Parses the text format strictly: every line is a HELP or TYPE comment or a sample
/// `name{labels} value`; every sample belongs to a family with a TYPE line; histogram
/// families carry `_bucket` (with `le`), `_sum` and `_count`.
fn parse_exposition(text: &str) -> Scrape {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut out: HashMap<String, HashMap<String, f64>> = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().expect("metric name"));
            assert!(valid_name(name), "bad name in {line:?}");
            match kind {
                "TYPE" => {
                    let t = parts.next().expect("type");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line:?}"
                    );
                    assert!(
                        types.insert(name.to_string(), t.to_string()).is_none(),
                        "two TYPE lines for {name}"
                    );
                }
                "HELP" => assert!(parts.next().is_some(), "empty HELP: {line:?}"),
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("labels close")),
            None => (series, ""),
        };
        assert!(valid_name(name), "bad name in {line:?}");
        let mut kept = Vec::new();
        for l in labels.split(',').filter(|l| !l.is_empty()) {
            let (k, v) = l.split_once('=').expect("label is k=v");
            assert!(valid_name(k), "bad label name in {line:?}");
            assert!(
                v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                "{line:?}"
            );
            if k != "shard" {
                kept.push(l.to_string());
            }
        }
        kept.sort();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample without TYPE: {line:?}");
        if name.ends_with("_bucket") && family != name {
            assert!(labels.contains("le=\""), "bucket without le: {line:?}");
        }
        *out.entry(name.to_string())
            .or_default()
            .entry(kept.join(","))
            .or_default() += value;
    }
    Scrape(out, types)
}

/// The dashboard we ship must query only names this broker exports.
fn check_dashboard(scrape: &Scrape) {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/grafana/sluice.json")).expect("JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 10, "the dashboard has its queries");
    for e in exprs {
        let bytes = e.as_bytes();
        let mut i = 0;
        while let Some(at) = e[i..].find("sluice_") {
            let start = i + at;
            let end = bytes[start..]
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                .map_or(e.len(), |n| start + n);
            let name = &e[start..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| scrape.1.get(*f).is_some_and(|t| t == "histogram"))
                .unwrap_or(name);
            assert!(
                scrape.1.contains_key(family),
                "dashboard queries {name}, which the broker does not export"
            );
            i = end;
        }
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match x {
                    serde_json::Value::String(s) if k == "expr" => out.push(s.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

fn valid_name(n: &str) -> bool {
    let mut cs = n.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn batch(first: usize) -> Bytes {
    let recs: Vec<Record> = (0..RECORDS_PER_BATCH)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // One batch without idempotence (see bad_input.rs).
            sequence: i as i32 - 1,
            timestamp: now_ms(),
            key: None,
            value: Some(Bytes::from(format!("metrics-{}", first + i))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        recs.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

fn produce_request(topic: &str, partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

#[test]
fn metrics_match_the_traffic() {
    run_bounded("metrics_match_the_traffic", TEST_LIMIT, || {
        let broker = Broker::start();
        if !broker.is_sluice() {
            eprintln!("skipped: /metrics is Sluice's admin endpoint");
            return;
        }
        let bootstrap = broker.bootstrap().to_string();
        let admin = broker.admin_port();
        assert_eq!(http_get(admin, "/health"), "ok\n");
        let counted = unique_name("metrics-raw");
        let client = unique_name("metrics-client");
        create_topic(&bootstrap, &counted, 1, &[]);
        create_topic(&bootstrap, &client, 2, &[]);
        wait_topic_ready(&bootstrap, &counted, 1);
        wait_topic_ready(&bootstrap, &client, 2);

        // Raw produces: exact request counts and batch bytes, and one that fails.
        let before = scrape(admin);
        let mut s = connect(broker.addr(), CALL_TIMEOUT).expect("connect");
        let mut sent_bytes = 0;
        for i in 0..PRODUCES {
            let b = batch(i * RECORDS_PER_BATCH);
            sent_bytes += b.len();
            let resp = send_request(&mut s, &produce_request(&counted, 0, b), 9);
            assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
        }
        let resp = send_request(&mut s, &produce_request(&counted, 99, batch(0)), 9);
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code,
            UNKNOWN_TOPIC_OR_PARTITION
        );
        let after = scrape(admin);
        let delta = |name: &str, labels: &[(&str, &str)]| {
            after.sum(name, labels) - before.sum(name, labels)
        };
        let produce = [("api", "Produce")];
        assert_eq!(
            delta("sluice_requests_total", &produce),
            (PRODUCES + 1) as f64
        );
        assert_eq!(
            delta("sluice_request_duration_seconds_count", &produce),
            (PRODUCES + 1) as f64
        );
        let code = UNKNOWN_TOPIC_OR_PARTITION.to_string();
        assert_eq!(
            delta(
                "sluice_request_errors_total",
                &[("api", "Produce"), ("code", &code)]
            ),
            1.0
        );
        let topic = [("topic", counted.as_str())];
        let records = (PRODUCES * RECORDS_PER_BATCH) as f64;
        assert_eq!(
            after.sum("sluice_topic_bytes_in_total", &topic),
            sent_bytes as f64
        );
        assert_eq!(after.sum("sluice_topic_records_in_total", &topic), records);
        let p0 = [("topic", counted.as_str()), ("partition", "0")];
        assert_eq!(after.sum("sluice_partition_log_end_offset", &p0), records);
        assert_eq!(after.sum("sluice_partition_high_watermark", &p0), records);
        assert_eq!(after.sum("sluice_partition_log_start_offset", &p0), 0.0);
        assert!(after.sum("sluice_partition_size_bytes", &p0) >= sent_bytes as f64);
        assert!(after.sum("sluice_storage_fdatasync_seconds_count", &[]) > 0.0);
        assert!(after.sum("sluice_storage_written_bytes_total", &[]) >= sent_bytes as f64);
        assert!(after.sum("sluice_connections_open", &[]) >= 1.0);
        assert!(after.sum("sluice_connections_accepted_total", &[]) >= 1.0);
        assert!(after.0.contains_key("sluice_shard_utilisation_ratio"));

        // Consuming what was produced sends the same batches out, once each.
        let read = read_to_end(&bootstrap, &counted, 1, CALL_TIMEOUT);
        assert_eq!(read[&0].len(), PRODUCES * RECORDS_PER_BATCH);
        let after = scrape(admin);
        assert_eq!(
            after.sum("sluice_topic_bytes_out_total", &topic),
            sent_bytes as f64
        );
        assert_eq!(after.sum("sluice_topic_records_out_total", &topic), records);

        // A real client's traffic is counted by topic too.
        let (producer, log) = logged_producer(&producer_config(&bootstrap));
        let deadline = Instant::now() + CALL_TIMEOUT;
        for i in 0..CLIENT_RECORDS {
            let value = format!("client-{i}");
            let key = format!("k{i}");
            send_retrying(
                &producer,
                BaseRecord::with_opaque_to(&client, i)
                    .key(key.as_bytes())
                    .payload(value.as_bytes()),
                deadline,
            );
        }
        rdkafka::producer::Producer::flush(&producer, CALL_TIMEOUT).expect("flush");
        assert_eq!(log.acked(), CLIENT_RECORDS as u64);
        let read = read_to_end(&bootstrap, &client, 2, CALL_TIMEOUT);
        assert_eq!(read.values().map(Vec::len).sum::<usize>(), CLIENT_RECORDS);
        let after = scrape(admin);
        let ct = [("topic", client.as_str())];
        let n = CLIENT_RECORDS as f64;
        assert_eq!(after.sum("sluice_topic_records_in_total", &ct), n);
        assert_eq!(after.sum("sluice_topic_records_out_total", &ct), n);
        assert_eq!(
            after.sum("sluice_topic_bytes_out_total", &ct),
            after.sum("sluice_topic_bytes_in_total", &ct)
        );
        assert_eq!(after.sum("sluice_partition_high_watermark", &ct), n);

        // A group's lag is the high watermark minus its committed offset.
        let group = unique_name("metrics-group");
        let committed = 5;
        let resp = send_request(&mut s, &commit_request(&group, &counted, committed), 8);
        assert_eq!(resp.topics[0].partitions[0].error_code, 0);
        let after = scrape(admin);
        let lag = [
            ("group", group.as_str()),
            ("topic", counted.as_str()),
            ("partition", "0"),
        ];
        assert_eq!(
            after.sum("sluice_group_lag", &lag),
            records - committed as f64
        );
        check_dashboard(&after);
        assert_eq!(http_get(admin, "/ready"), "ok\n");
    });
}
