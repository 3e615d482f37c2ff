//! Differential conformance: the same raw Kafka requests go to a `sluice` and to Apache
//! Kafka (one of each for the whole run, Kafka through `benches/kafka/kafka.sh`), and the
//! answers must agree field by field once what legitimately differs between two brokers
//! (ids, hosts, ports, throttle times, message texts) is normalised away.
//!
//! Requests are built with kafka-protocol at every version Sluice advertises, so each
//! version's encoding is exercised. A response is flattened into `path = value` lines from
//! its `Debug` form, which covers every field of every API without a per-API comparator and
//! shows which optional fields are present; record sections become a summary (batches,
//! records, bytes, partial trailing bytes). A difference fails the test unless
//! `tests/differential/allow-list.txt` lists it with its reason.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use uuid::Uuid;

const ALLOW_LIST: &str = include_str!("../../tests/differential/allow-list.txt");
/// Kafka's default `message.max.bytes`, which both brokers run with.
const MESSAGE_MAX_BYTES: usize = 1_048_588;
/// Kafka 4's default `message.timestamp.after.max.ms`.
const TIMESTAMP_AFTER_MAX_MS: i64 = 3_600_000;
/// How long the whole corpus may take against both brokers.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// Fields whose values differ between any two brokers by design; their presence is still
/// compared.
const IGNORED_FIELDS: &[&str] = &[
    "throttle_time_ms",
    "node_id",
    "leader_id",
    "host",
    "port",
    "cluster_id",
    "controller_id",
    "topic_id",
    "member_id",
    "producer_id",
    "log_dir",
    "replica_nodes",
    "isr_nodes",
    "broker_id",
    "leader",
];

// ------------------------------------------------------------------------- flattening

/// `path = value` lines of a response's pretty `Debug` form: `a.b[2].c`.
fn flatten<T: Debug>(v: &T) -> Vec<(String, String)> {
    let text = format!("{v:#?}");
    let mut stack: Vec<(String, usize)> = vec![(String::new(), 0)];
    let mut out = Vec::new();
    for raw in text.lines() {
        let line = raw.trim().trim_end_matches(',');
        if line.is_empty() {
            continue;
        }
        if matches!(line, "}" | "]" | ")") {
            stack.pop();
            continue;
        }
        let top = stack.last_mut().expect("root frame");
        let (name, rest) = match field(line) {
            Some((n, r)) => (n.to_string(), r),
            None => {
                top.1 += 1;
                (format!("[{}]", top.1 - 1), line)
            }
        };
        let path = if top.0.is_empty() || name.starts_with('[') {
            format!("{}{name}", top.0)
        } else {
            format!("{}.{name}", top.0)
        };
        if rest.ends_with('{') || rest.ends_with('[') || rest.ends_with('(') {
            stack.push((path, 0));
        } else {
            out.push((path, rest.to_string()));
        }
    }
    out
}

/// Config entries keyed by name instead of position (`configs[3].name = x` becomes
/// `configs{x}.…`), since brokers list configs in their own order.
fn key_configs(lines: Outcome) -> Outcome {
    let mut names = BTreeMap::new();
    for (path, value) in &lines {
        if let Some(prefix) = path.strip_suffix(".name") {
            if prefix.contains("configs") {
                names.insert(prefix.to_string(), value.trim_matches('"').to_string());
            }
        }
    }
    lines
        .into_iter()
        .filter_map(|(path, value)| {
            let entry = names.iter().find(|(p, _)| {
                path.strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('.'))
            });
            let Some((prefix, name)) = entry else {
                return Some((path, value));
            };
            let at = prefix.rfind('[').expect("an element");
            let keyed = format!("{}{{{name}}}{}", &prefix[..at], &path[prefix.len()..]);
            SLUICE_TOPIC_CONFIGS
                .contains(&name.as_str())
                .then_some((keyed, value))
        })
        .chain(std::iter::once((
            "configs.count".to_string(),
            names.len().to_string(),
        )))
        .collect()
}

/// The topic configs Sluice implements; the others Kafka lists are not compared.
const SLUICE_TOPIC_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

/// `name: rest` when the line starts with a field name.
fn field(line: &str) -> Option<(&str, &str)> {
    let (name, rest) = line.split_once(": ")?;
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        .then_some((name, rest))
}

/// Drops the values of fields that differ by design and of message texts (keeping that
/// they are there), and the Debug type names of newtypes.
fn normalise(lines: Vec<(String, String)>) -> Vec<(String, String)> {
    lines
        .into_iter()
        .map(|(path, value)| {
            let segs: Vec<&str> = path
                .split('.')
                .map(|s| s.split('[').next().unwrap_or(s))
                .collect();
            let ignored = segs.iter().any(|s| IGNORED_FIELDS.contains(s));
            let message = segs.iter().any(|s| s.contains("message") || *s == "reason");
            let volume = segs
                .iter()
                .any(|s| matches!(*s, "total_bytes" | "usable_bytes"));
            let value = if ignored {
                "<id>".to_string()
            } else if volume && value != "-1" {
                // The brokers' temp dirs share a volume, whose free space moves meanwhile.
                "<bytes>".to_string()
            } else if message && value != "\"\"" {
                "<text>".to_string()
            } else {
                value
            };
            // `[0].` is the response itself.
            (path.trim_start_matches("[0].").to_string(), value)
        })
        .collect()
}

/// The record section of a Fetch partition: whole batches, their records and bytes, and
/// the bytes of a partial batch at the end (Kafka cuts a batch at the byte limit).
fn records_summary(b: &Option<Bytes>) -> Vec<(String, String)> {
    let Some(b) = b else {
        return vec![("records".into(), "None".into())];
    };
    let (mut batches, mut records, mut bytes, mut first) = (0, 0i64, 0usize, -1i64);
    let mut pos = 0;
    while pos + 61 <= b.len() {
        let len = i32::from_be_bytes(b[pos + 8..pos + 12].try_into().expect("4 bytes")) as usize;
        if pos + 12 + len > b.len() {
            break;
        }
        if first < 0 {
            first = i64::from_be_bytes(b[pos..pos + 8].try_into().expect("8 bytes"));
        }
        records += i32::from_be_bytes(b[pos + 57..pos + 61].try_into().expect("4 bytes")) as i64;
        batches += 1;
        bytes += 12 + len;
        pos += 12 + len;
    }
    vec![
        ("records.batches".into(), batches.to_string()),
        ("records.count".into(), records.to_string()),
        ("records.bytes".into(), bytes.to_string()),
        ("records.first_offset".into(), first.to_string()),
        ("records.partial_bytes".into(), (b.len() - pos).to_string()),
    ]
}

// ------------------------------------------------------------------------- peers

/// One broker of the pair, with what differs between them: topic ids and producer ids.
struct Peer {
    name: &'static str,
    broker: Broker,
    conn: TcpStream,
    topic_ids: BTreeMap<String, Uuid>,
    producer: (i64, i16),
}

/// A broker's answer: a response, or the connection closed instead.
type Outcome = Vec<(String, String)>;

impl Peer {
    fn new(name: &'static str, broker: Broker) -> Peer {
        let conn = connect(broker.addr(), Duration::from_secs(30)).expect("connect");
        Peer {
            name,
            broker,
            conn,
            topic_ids: BTreeMap::new(),
            producer: (-1, -1),
        }
    }

    /// Sends `req` at `version`; `None` if the broker closed the connection (a fresh one
    /// is opened for the next case).
    fn call<R: Request>(&mut self, req: &R, version: i16) -> Option<R::Response> {
        use kafka_protocol::protocol::encode_request_header_into_buffer;
        use std::io::Write;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(sb("sluice-differential")));
        let mut body = BytesMut::new();
        encode_request_header_into_buffer(&mut body, &header).expect("encode header");
        // A case that sets a field its version lacks is a harness bug: say which.
        req.encode(&mut body, version)
            .unwrap_or_else(|e| panic!("cannot encode API {} v{version}: {e}", R::KEY));
        let frame = frame(&body);
        let answer = self
            .conn
            .write_all(&frame)
            .and_then(|_| read_frame(&mut self.conn));
        match answer {
            Ok(f) => Some(decode_response::<R::Response>(f, version).1),
            Err(_) => {
                self.broker.assert_alive();
                self.conn =
                    connect(self.broker.addr(), Duration::from_secs(30)).expect("reconnect");
                None
            }
        }
    }

    fn id(&self, topic: &str) -> Uuid {
        *self
            .topic_ids
            .get(topic)
            .unwrap_or_else(|| panic!("{}: no id for topic {topic}", self.name))
    }
}

fn closed() -> Outcome {
    vec![("connection".into(), "closed".into())]
}

/// A Produce answer with partitions in index order (Kafka answers in its own order).
fn produce_outcome(r: Option<ProduceResponse>) -> Outcome {
    outcome(r.map(|mut r| {
        for t in &mut r.responses {
            t.partition_responses.sort_by_key(|p| p.index);
        }
        r
    }))
}

/// Flattens and normalises a response, or says the connection closed.
fn outcome<T: Debug>(r: Option<T>) -> Outcome {
    r.map_or_else(closed, |r| normalise(flatten(&r)))
}

// ------------------------------------------------------------------------- allow-list

struct Allowed {
    api: String,
    case: String,
    path: String,
    used: bool,
}

fn allow_list() -> Vec<Allowed> {
    ALLOW_LIST
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            assert!(
                f.len() == 4 && !f[3].is_empty(),
                "allow-list line needs `api | case | path | reason`: {l}"
            );
            Allowed {
                api: f[0].into(),
                case: f[1].into(),
                path: f[2].into(),
                used: false,
            }
        })
        .collect()
}

/// `*` matches any run of characters.
fn glob(pat: &str, s: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == s;
    }
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(at) => rest = &rest[at + p.len()..],
                None => return false,
            }
        }
    }
    true
}

// ------------------------------------------------------------------------- the run

struct Run {
    sluice: Peer,
    kafka: Peer,
    /// Sluice's advertised versions per API key.
    advertised: BTreeMap<i16, (i16, i16)>,
    cases: BTreeMap<&'static str, usize>,
    diffs: Vec<String>,
    allowed: Vec<Allowed>,
    /// Record timestamps of the run: close to now, identical for both brokers.
    ts: i64,
}

impl Run {
    /// Sends one case to both brokers and compares the normalised answers.
    fn case(&mut self, api: &'static str, label: &str, f: impl Fn(&mut Peer) -> Outcome) {
        *self.cases.entry(api).or_default() += 1;
        let a: BTreeMap<_, _> = f(&mut self.sluice).into_iter().collect();
        let b: BTreeMap<_, _> = f(&mut self.kafka).into_iter().collect();
        // SLUICE_DIFF_SHOW=text prints both answers of the cases whose label contains it.
        if let Ok(show) = std::env::var("SLUICE_DIFF_SHOW") {
            if format!("{api} {label}").contains(&show) {
                println!("== {api} [{label}]\n-- sluice: {a:#?}\n-- kafka: {b:#?}");
            }
        }
        let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for path in paths {
            let (x, y) = (a.get(path), b.get(path));
            if x == y {
                continue;
            }
            let hit = self
                .allowed
                .iter_mut()
                .find(|e| e.api == api && glob(&e.case, label) && glob(&e.path, path));
            match hit {
                Some(e) => e.used = true,
                None => self.diffs.push(format!(
                    "{api} [{label}] {path}: sluice={} kafka={}",
                    x.map_or("(absent)", |v| v.as_str()),
                    y.map_or("(absent)", |v| v.as_str())
                )),
            }
        }
    }

    /// The versions of `R` to exercise: all that Sluice advertises and the codec knows.
    fn versions<R: Request>(&self) -> Vec<i16> {
        let Some(&(lo, hi)) = self.advertised.get(&R::KEY) else {
            return Vec::new();
        };
        (lo.max(R::VERSIONS.min)..=hi.min(R::VERSIONS.max)).collect()
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

struct Rec {
    key: Option<&'static str>,
    value_len: usize,
    ts: i64,
}

/// One RecordBatch v2 of `recs`, uncompressed; idempotent when `producer` is set.
fn batch(recs: &[Rec], producer: Option<(i64, i16, i32)>) -> Bytes {
    let (pid, epoch, seq) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = recs
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol keeps one batch while offset - sequence is constant.
            sequence: if seq < 0 {
                i as i32 - 1
            } else {
                seq + i as i32
            },
            timestamp: r.ts,
            key: r.key.map(|k| Bytes::from(k.as_bytes().to_vec())),
            value: Some(Bytes::from(vec![b'v'; r.value_len])),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

/// A batch of one keyed record exactly `size` bytes long.
fn batch_of_size(size: usize, ts: i64) -> Bytes {
    let mut len = size.saturating_sub(80);
    loop {
        let b = batch(
            &[Rec {
                key: Some("k"),
                value_len: len,
                ts,
            }],
            None,
        );
        match b.len().cmp(&size) {
            std::cmp::Ordering::Equal => return b,
            std::cmp::Ordering::Less => len += size - b.len(),
            std::cmp::Ordering::Greater => len -= b.len() - size,
        }
    }
}

/// `b` with its attributes' compression bits set to `codec` and the CRC made valid again.
fn with_codec(b: &Bytes, codec: i16) -> Bytes {
    let mut v = b.to_vec();
    let attrs = (i16::from_be_bytes([v[21], v[22]]) & !0x07) | codec;
    v[21..23].copy_from_slice(&attrs.to_be_bytes());
    let crc = crc32c::crc32c(&v[21..]);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(v)
}

fn produce(
    p: &Peer,
    topic: &str,
    parts: Vec<(i32, Option<Bytes>)>,
    acks: i16,
    v: i16,
) -> ProduceRequest {
    let mut t = TopicProduceData::default().with_partition_data(
        parts
            .into_iter()
            .map(|(i, r)| {
                PartitionProduceData::default()
                    .with_index(i)
                    .with_records(r)
            })
            .collect(),
    );
    if v >= 13 {
        t = t.with_topic_id(p.topic_ids.get(topic).copied().unwrap_or_default());
    } else {
        t = t.with_name(name(topic));
    }
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![t])
}

fn fetch(p: &Peer, topic: &str, parts: &[(i32, i64, i32)], max_bytes: i32, v: i16) -> FetchRequest {
    let mut t = FetchTopic::default().with_partitions(
        parts
            .iter()
            .map(|&(i, offset, pmax)| {
                FetchPartition::default()
                    .with_partition(i)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(pmax)
                    .with_current_leader_epoch(-1)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(-1)
            })
            .collect(),
    );
    if v >= 13 {
        t = t.with_topic_id(p.topic_ids.get(topic).copied().unwrap_or_default());
    } else {
        t = t.with_topic(name(topic));
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(max_bytes)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![t])
}

/// A Fetch answer with each partition's records replaced by their summary.
fn fetch_outcome(r: Option<FetchResponse>) -> Outcome {
    let Some(mut r) = r else {
        return closed();
    };
    let mut extra = Vec::new();
    for (ti, t) in r.responses.iter_mut().enumerate() {
        for (pi, p) in t.partitions.iter_mut().enumerate() {
            for (k, v) in records_summary(&p.records) {
                extra.push((format!("responses[{ti}].partitions[{pi}].{k}"), v));
            }
            p.records = None;
        }
    }
    let mut out = normalise(flatten(&r));
    out.retain(|(k, _)| !k.ends_with(".records"));
    out.extend(extra);
    out
}

fn create_topic(topic: &str, partitions: i32, configs: &[(&str, &str)]) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(sb(k))
                        .with_value(Some(sb(v)))
                })
                .collect(),
        )
}

/// Creates the topics on both brokers (a compared case) and records their ids.
fn setup_topics(run: &mut Run, topics: &[(&'static str, i32, &'static [Config])]) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(
            topics
                .iter()
                .map(|(t, n, c)| create_topic(t, *n, c))
                .collect(),
        );
    for p in [&mut run.sluice, &mut run.kafka] {
        let r = p.call(&req, 7).expect("CreateTopics answered");
        for t in r.topics {
            assert_eq!(t.error_code, 0, "{}: creating {}", p.name, t.name.0);
            p.topic_ids.insert(t.name.0.to_string(), t.topic_id);
        }
    }
    // Kafka elects leaders asynchronously: wait until every partition has one.
    for p in [&mut run.sluice, &mut run.kafka] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let req = MetadataRequest::default().with_topics(Some(
                topics
                    .iter()
                    .map(|(t, _, _)| MetadataRequestTopic::default().with_name(Some(name(t))))
                    .collect(),
            ));
            let r = p.call(&req, 12).expect("Metadata answered");
            let ready = r.topics.iter().all(|t| {
                t.error_code == 0
                    && t.partitions
                        .iter()
                        .all(|x| x.error_code == 0 && x.leader_id.0 >= 0)
            });
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: topics never got leaders",
                p.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A topic config: (name, value).
type Config = (&'static str, &'static str);
/// A fetched partition: (index, fetch offset, partition_max_bytes).
type FetchPart = (i32, i64, i32);

const PLAIN: &str = "dt-plain";
const COMPACT: &str = "dt-compact";
const BIG: &str = "dt-big";
const OLD: &str = "dt-old";
const ALTER: &str = "dt-alter";
const GROUP: &str = "dt-group";

#[test]
fn sluice_answers_as_kafka_does() {
    let start = Instant::now();
    // Kafka first: its JVM start is the slow part, and Sluice must not idle-wait meanwhile.
    let kafka = Broker::start_reference_kafka();
    let sluice = Broker::start();
    let kafka_up = start.elapsed();
    let mut sluice = Peer::new("sluice", sluice);
    let mut kafka = Peer::new("kafka", kafka);
    let advertised = sluice
        .call(&api_versions_request(), 3)
        .expect("ApiVersions answered")
        .api_keys
        .iter()
        .map(|k| (k.api_key, (k.min_version, k.max_version)))
        .collect();
    let _ = kafka.call(&api_versions_request(), 3);
    let now = now_ms();
    let mut run = Run {
        sluice,
        kafka,
        advertised,
        cases: BTreeMap::new(),
        diffs: Vec::new(),
        allowed: allow_list(),
        ts: now,
    };
    setup_topics(
        &mut run,
        &[
            (PLAIN, 3, &[]),
            (COMPACT, 1, &[("cleanup.policy", "compact")]),
            (BIG, 4, &[]),
            (OLD, 1, &[("message.timestamp.before.max.ms", "3600000")]),
            (ALTER, 1, &[]),
        ],
    );
    *run.cases.entry("CreateTopics").or_default() += 1;

    api_versions_cases(&mut run);
    produce_cases(&mut run);
    fetch_cases(&mut run);
    list_offsets_cases(&mut run);
    metadata_cases(&mut run);
    topic_admin_cases(&mut run);
    config_cases(&mut run);
    group_cases(&mut run);
    misc_cases(&mut run);

    let total: usize = run.cases.values().sum();
    println!(
        "differential cases per API ({total} in all, Kafka up after {kafka_up:?}, run {:?}):",
        start.elapsed()
    );
    for (api, n) in &run.cases {
        println!("  {api:<28} {n}");
    }
    for e in run.allowed.iter().filter(|e| !e.used) {
        println!(
            "allow-list entry matched nothing: {} | {} | {}",
            e.api, e.case, e.path
        );
    }
    assert!(
        start.elapsed() < RUN_LIMIT,
        "the corpus took {:?}",
        start.elapsed()
    );
    assert!(
        run.diffs.is_empty(),
        "{} differences from Kafka not in tests/differential/allow-list.txt:\n{}",
        run.diffs.len(),
        run.diffs.join("\n")
    );
}

fn api_versions_cases(run: &mut Run) {
    for v in run.versions::<ApiVersionsRequest>() {
        run.case("ApiVersions", &format!("v{v}"), |p| {
            let Some(r) = p.call(&api_versions_request(), v) else {
                return closed();
            };
            // Keyed by API so one API more or less does not shift every line after it.
            let mut out = vec![("error_code".to_string(), r.error_code.to_string())];
            for k in &r.api_keys {
                let api =
                    ApiKey::try_from(k.api_key).map_or(k.api_key.to_string(), |a| format!("{a:?}"));
                out.push((
                    format!("api.{api}"),
                    format!("{}..={}", k.min_version, k.max_version),
                ));
            }
            out.push((
                "supported_features".into(),
                r.supported_features.len().to_string(),
            ));
            out.push((
                "finalized_features".into(),
                r.finalized_features.len().to_string(),
            ));
            out
        });
    }
    // An unsupported ApiVersions version: Kafka answers v0 with UNSUPPORTED_VERSION.
    run.case("ApiVersions", "v127", |p| {
        use std::io::Write;
        let body = BytesMut::new();
        let f = raw_request_frame(18, 127, 9, 2, &body);
        p.conn.write_all(&f).expect("write");
        match read_frame(&mut p.conn) {
            Ok(b) => {
                let (_, r) = decode_response::<ApiVersionsResponse>(b, 0);
                vec![("error_code".into(), r.error_code.to_string())]
            }
            Err(_) => closed(),
        }
    });
}

fn produce_cases(run: &mut Run) {
    let ts = run.ts;
    let plain = |n: usize| -> Vec<Rec> {
        (0..n)
            .map(|_| Rec {
                key: Some("k"),
                value_len: 10,
                ts,
            })
            .collect()
    };
    for v in run.versions::<ProduceRequest>() {
        let b = batch(&plain(5), None);
        run.case("Produce", &format!("v{v} ordinary"), |p| {
            produce_outcome(p.call(&produce(p, PLAIN, vec![(0, Some(b.clone()))], -1, v), v))
        });
        let b = batch(&plain(1), None);
        run.case("Produce", &format!("v{v} acks=1 two partitions"), |p| {
            let req = produce(
                p,
                PLAIN,
                vec![(1, Some(b.clone())), (2, Some(b.clone()))],
                1,
                v,
            );
            produce_outcome(p.call(&req, v))
        });
        run.case("Produce", &format!("v{v} unknown topic"), |p| {
            produce_outcome(p.call(
                &produce(p, "dt-missing", vec![(0, Some(b.clone()))], -1, v),
                v,
            ))
        });
        run.case("Produce", &format!("v{v} unknown partition"), |p| {
            produce_outcome(p.call(&produce(p, PLAIN, vec![(99, Some(b.clone()))], -1, v), v))
        });
        run.case("Produce", &format!("v{v} acks=2"), |p| {
            produce_outcome(p.call(&produce(p, PLAIN, vec![(0, Some(b.clone()))], 2, v), v))
        });
        // Defect 2 of issue #12: Sluice stored keyless records on compacted topics.
        let keyless = batch(
            &[
                Rec {
                    key: Some("a"),
                    value_len: 5,
                    ts,
                },
                Rec {
                    key: None,
                    value_len: 5,
                    ts,
                },
                Rec {
                    key: None,
                    value_len: 5,
                    ts,
                },
            ],
            None,
        );
        run.case(
            "Produce",
            &format!("v{v} keyless record on a compacted topic"),
            |p| {
                produce_outcome(p.call(
                    &produce(p, COMPACT, vec![(0, Some(keyless.clone()))], -1, v),
                    v,
                ))
            },
        );
        run.case(
            "Produce",
            &format!("v{v} keyed records on a compacted topic"),
            |p| produce_outcome(p.call(&produce(p, COMPACT, vec![(0, Some(b.clone()))], -1, v), v)),
        );
    }
    let v = 11;
    let one = |ts: i64, key: Option<&'static str>| {
        batch(
            &[Rec {
                key,
                value_len: 10,
                ts,
            }],
            None,
        )
    };
    let cases: Vec<(&str, &str, Bytes)> = vec![
        (
            "timestamp past message.timestamp.after.max.ms",
            PLAIN,
            one(ts + TIMESTAMP_AFTER_MAX_MS + 60_000, Some("k")),
        ),
        (
            "timestamp within message.timestamp.after.max.ms",
            PLAIN,
            one(ts + TIMESTAMP_AFTER_MAX_MS - 60_000, Some("k")),
        ),
        (
            "timestamp before message.timestamp.before.max.ms",
            OLD,
            one(ts - 2 * 3_600_000, Some("k")),
        ),
        (
            "timestamp within message.timestamp.before.max.ms",
            OLD,
            one(ts - 1_800_000, Some("k")),
        ),
        ("timestamp -1", OLD, one(-1, Some("k"))),
        (
            "future timestamp and no key on a compacted topic",
            COMPACT,
            batch(
                &[
                    Rec {
                        key: None,
                        value_len: 3,
                        ts,
                    },
                    Rec {
                        key: Some("k"),
                        value_len: 3,
                        ts: ts + 2 * TIMESTAMP_AFTER_MAX_MS,
                    },
                ],
                None,
            ),
        ),
        (
            "batch of message.max.bytes",
            BIG,
            batch_of_size(MESSAGE_MAX_BYTES, ts),
        ),
        (
            "batch one byte over message.max.bytes",
            BIG,
            batch_of_size(MESSAGE_MAX_BYTES + 1, ts),
        ),
        (
            "compression codec 5",
            PLAIN,
            with_codec(&one(ts, Some("k")), 5),
        ),
        (
            "compression codec 7",
            PLAIN,
            with_codec(&one(ts, Some("k")), 7),
        ),
    ];
    for (label, topic, b) in cases {
        // dt-big's partition 3, ahead of the batches the Fetch cases lay out there.
        let part = if topic == BIG { 3 } else { 0 };
        run.case("Produce", label, |p| {
            produce_outcome(p.call(&produce(p, topic, vec![(part, Some(b.clone()))], -1, v), v))
        });
    }
    let bad_crc = {
        let mut v = one(ts, Some("k")).to_vec();
        v[20] ^= 0xff;
        Bytes::from(v)
    };
    run.case("Produce", "bad CRC", |p| {
        produce_outcome(p.call(
            &produce(p, PLAIN, vec![(0, Some(bad_crc.clone()))], -1, v),
            v,
        ))
    });
    run.case("Produce", "null records", |p| {
        produce_outcome(p.call(&produce(p, PLAIN, vec![(0, None)], -1, v), v))
    });
    run.case("Produce", "truncated batch", |p| {
        let b = one(ts, Some("k"));
        produce_outcome(p.call(
            &produce(p, PLAIN, vec![(0, Some(b.slice(..b.len() - 3)))], -1, v),
            v,
        ))
    });

    // Idempotence: each broker's own producer id, the same sequence numbers. Kafka answers
    // COORDINATOR_LOAD_IN_PROGRESS until its producer-id manager is ready; clients retry.
    for p in [&mut run.sluice, &mut run.kafka] {
        let deadline = Instant::now() + Duration::from_secs(60);
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        while p.call(&req, 4).is_none_or(|r| r.error_code != 0) {
            assert!(
                Instant::now() < deadline,
                "{}: InitProducerId never succeeded",
                p.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for v in run.versions::<InitProducerIdRequest>() {
        run.case("InitProducerId", &format!("v{v}"), |p| {
            let r = p.call(
                &InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
                v,
            );
            if let Some(r) = &r {
                p.producer = (r.producer_id.0, r.producer_epoch);
            }
            outcome(r)
        });
    }
    run.case("InitProducerId", "empty transactional id", |p| {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(sb(""))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        outcome(p.call(&req, 4))
    });
    let seq_case = |run: &mut Run, label: &str, seq: i32, n: usize| {
        run.case("Produce", label, |p| {
            let (pid, epoch) = p.producer;
            let b = batch(&plain(n), Some((pid, epoch, seq)));
            produce_outcome(p.call(&produce(p, PLAIN, vec![(1, Some(b))], -1, v), v))
        });
    };
    seq_case(run, "idempotent sequence 0", 0, 2);
    seq_case(run, "idempotent next sequence", 2, 2);
    seq_case(run, "idempotent duplicate", 2, 2);
    seq_case(run, "idempotent sequence gap", 9, 1);
    seq_case(run, "idempotent sequence from the past", 1, 1);
    run.case("Produce", "idempotent unknown producer id", |p| {
        let b = batch(&plain(1), Some((987_654_321, 0, 0)));
        produce_outcome(p.call(&produce(p, PLAIN, vec![(1, Some(b))], -1, v), v))
    });
}

fn fetch_cases(run: &mut Run) {
    let ts = run.ts;
    // dt-big: p0 two 300 kB batches, p1 one 700 kB, p2 three 100 kB, p3 one 1 MB.
    let layout: [(i32, &[usize]); 4] = [
        (0, &[300_000, 300_000]),
        (1, &[700_000]),
        (2, &[100_000, 100_000, 100_000]),
        (3, &[1_000_000]),
    ];
    for (part, sizes) in layout {
        for &size in sizes {
            let b = batch_of_size(size, ts);
            run.case("Produce", &format!("dt-big p{part} {size} bytes"), |p| {
                produce_outcome(p.call(&produce(p, BIG, vec![(part, Some(b.clone()))], -1, 9), 9))
            });
        }
    }
    let all = |pmax: i32| -> Vec<FetchPart> { (0..4).map(|i| (i, 0, pmax)).collect() };
    let fetches: Vec<(String, Vec<FetchPart>, i32)> = vec![
        // Defect 1 of issue #12: librdkafka's fetch.max.bytes=1000000 over partitions of
        // large batches; Sluice answered with several of them, far past max_bytes.
        (
            "consumer defaults: max_bytes 1000000".into(),
            all(1_048_576),
            1_000_000,
        ),
        (
            "max_bytes smaller than the first batch".into(),
            all(1_048_576),
            1_000,
        ),
        (
            "partition_max_bytes smaller than every batch".into(),
            all(1_000),
            52_428_800,
        ),
        (
            "max_bytes at two batches".into(),
            vec![(0, 0, 1 << 20), (2, 0, 1 << 20)],
            600_000,
        ),
        (
            "max_bytes one under two batches".into(),
            vec![(0, 0, 1 << 20), (2, 0, 1 << 20)],
            599_999,
        ),
        (
            "max_bytes one over two batches".into(),
            vec![(0, 0, 1 << 20), (2, 0, 1 << 20)],
            600_001,
        ),
        (
            "partition_max_bytes at one batch".into(),
            vec![(2, 0, 100_000), (0, 0, 300_000)],
            1 << 20,
        ),
        (
            "partition_max_bytes one over one batch".into(),
            vec![(2, 0, 100_001), (0, 0, 300_001)],
            1 << 20,
        ),
        (
            "empty first partition".into(),
            vec![(1, 1, 1 << 20), (2, 0, 150_000), (3, 0, 1 << 20)],
            1 << 20,
        ),
        (
            "fetch from the middle".into(),
            vec![(2, 1, 1 << 20)],
            1 << 20,
        ),
        (
            "offset at the high watermark".into(),
            vec![(2, 3, 1 << 20)],
            1 << 20,
        ),
        (
            "offset past the high watermark".into(),
            vec![(2, 1_000, 1 << 20)],
            1 << 20,
        ),
        ("negative offset".into(), vec![(2, -5, 1 << 20)], 1 << 20),
        ("unknown partition".into(), vec![(9, 0, 1 << 20)], 1 << 20),
        ("max_bytes 0".into(), all(1 << 20), 0),
    ];
    for v in run.versions::<FetchRequest>() {
        for (label, parts, max_bytes) in &fetches {
            run.case("Fetch", &format!("v{v} {label}"), |p| {
                fetch_outcome(p.call(&fetch(p, BIG, parts, *max_bytes, v), v))
            });
        }
        run.case("Fetch", &format!("v{v} unknown topic"), |p| {
            fetch_outcome(p.call(&fetch(p, "dt-missing", &[(0, 0, 1 << 20)], 1 << 20, v), v))
        });
        run.case("Fetch", &format!("v{v} read_committed"), |p| {
            let req = fetch(p, PLAIN, &[(0, 0, 1 << 20)], 1 << 20, v).with_isolation_level(1);
            fetch_outcome(p.call(&req, v))
        });
    }
    let v = 12;
    run.case("Fetch", "unknown session id", |p| {
        let req = fetch(p, PLAIN, &[(0, 0, 1 << 20)], 1 << 20, v)
            .with_session_id(12345)
            .with_session_epoch(1);
        fetch_outcome(p.call(&req, v))
    });
    run.case("Fetch", "min_bytes unmet, short max_wait", |p| {
        let req = fetch(p, BIG, &[(2, 3, 1 << 20)], 1 << 20, v)
            .with_min_bytes(1)
            .with_max_wait_ms(50);
        fetch_outcome(p.call(&req, v))
    });
}

fn list_offsets_cases(run: &mut Run) {
    let ts = run.ts;
    let lo = |topic: &str, part: i32, timestamp: i64| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(part)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(timestamp)])])
    };
    for v in run.versions::<ListOffsetsRequest>() {
        let mut specs = vec![
            ("earliest", PLAIN, 0, -2),
            ("latest", PLAIN, 0, -1),
            ("by timestamp", BIG, 2, ts),
            (
                "by timestamp after every record",
                BIG,
                2,
                ts + 10 * TIMESTAMP_AFTER_MAX_MS,
            ),
            ("unknown partition", PLAIN, 7, -1),
            ("unknown topic", "dt-missing", 0, -1),
        ];
        if v >= 7 {
            specs.push(("max timestamp", BIG, 2, -3));
        }
        if v >= 8 {
            specs.push(("local log start", PLAIN, 0, -4));
        }
        if v >= 9 {
            specs.push(("tiered log end", PLAIN, 0, -5));
        }
        for (label, topic, part, t) in specs {
            run.case("ListOffsets", &format!("v{v} {label}"), |p| {
                outcome(p.call(&lo(topic, part, t), v))
            });
        }
    }
}

fn metadata_cases(run: &mut Run) {
    for v in run.versions::<MetadataRequest>() {
        let some = |names: &[&str]| {
            MetadataRequest::default().with_topics(Some(
                names
                    .iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
                    .collect(),
            ))
        };
        run.case("Metadata", &format!("v{v} two topics"), |p| {
            outcome(p.call(&some(&[PLAIN, COMPACT]), v))
        });
        if v >= 4 {
            run.case(
                "Metadata",
                &format!("v{v} unknown topic, no auto-create"),
                |p| {
                    outcome(p.call(
                        &some(&["dt-missing"]).with_allow_auto_topic_creation(false),
                        v,
                    ))
                },
            );
        }
        run.case("Metadata", &format!("v{v} invalid topic name"), |p| {
            outcome(p.call(
                &some(&["bad/name"]).with_allow_auto_topic_creation(v < 4),
                v,
            ))
        });
        if (8..=10).contains(&v) {
            run.case("Metadata", &format!("v{v} authorized operations"), |p| {
                outcome(p.call(
                    &some(&[PLAIN]).with_include_topic_authorized_operations(true),
                    v,
                ))
            });
        }
        if v >= 10 {
            run.case("Metadata", &format!("v{v} by topic id"), |p| {
                let req = MetadataRequest::default().with_topics(Some(vec![
                    MetadataRequestTopic::default()
                        .with_name(None)
                        .with_topic_id(p.id(PLAIN)),
                ]));
                outcome(p.call(&req, v))
            });
        }
    }
    for v in run.versions::<DescribeTopicPartitionsRequest>() {
        run.case("DescribeTopicPartitions", &format!("v{v}"), |p| {
            let req = DescribeTopicPartitionsRequest::default()
                .with_response_partition_limit(2000)
                .with_topics(vec![
                    TopicRequest::default().with_name(name(PLAIN)),
                    TopicRequest::default().with_name(name("dt-missing")),
                ]);
            outcome(p.call(&req, v))
        });
    }
    for v in run.versions::<ElectLeadersRequest>() {
        // A one-node cluster's partitions are led by their only, preferred, replica.
        for (label, kind) in [("preferred", 0), ("unclean", 1)] {
            if kind == 1 && v == 0 {
                continue;
            }
            run.case("ElectLeaders", &format!("v{v} {label}"), |p| {
                let req = ElectLeadersRequest::default()
                    .with_election_type(kind)
                    .with_timeout_ms(10_000)
                    .with_topic_partitions(Some(vec![
                        elect_leaders_request::TopicPartitions::default()
                            .with_topic(name(PLAIN))
                            .with_partitions(vec![0, 99]),
                        elect_leaders_request::TopicPartitions::default()
                            .with_topic(name("el-missing"))
                            .with_partitions(vec![0]),
                    ]));
                outcome(p.call(&req, v))
            });
        }
    }
    // Replica lists by position: `OWN` is the peer's own node id, found per peer.
    const OWN: i32 = -1;
    let moves: [(&str, Option<&[i32]>); 5] = [
        ("same replicas", Some(&[OWN])),
        ("unknown broker", Some(&[OWN, 99])),
        ("no replicas", Some(&[])),
        ("duplicate replicas", Some(&[OWN, OWN])),
        ("cancel with none in progress", None),
    ];
    for v in run.versions::<AlterPartitionReassignmentsRequest>() {
        for (label, replicas) in moves {
            run.case(
                "AlterPartitionReassignments",
                &format!("v{v} {label}"),
                |p| {
                    let own = p
                        .call(&MetadataRequest::default().with_topics(Some(vec![])), 12)
                        .expect("metadata")
                        .brokers[0]
                        .node_id
                        .0;
                    let ids = replicas.map(|r| {
                        r.iter()
                            .map(|&b| BrokerId(if b == OWN { own } else { b }))
                            .collect()
                    });
                    let partition = |i, ids| {
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_partition_index(i)
                            .with_replicas(ids)
                    };
                    let req = AlterPartitionReassignmentsRequest::default()
                        .with_timeout_ms(10_000)
                        .with_topics(vec![
                            alter_partition_reassignments_request::ReassignableTopic::default()
                                .with_name(name(PLAIN))
                                .with_partitions(vec![
                                    partition(0, ids.clone()),
                                    partition(99, ids),
                                ]),
                        ]);
                    outcome(p.call(&req, v))
                },
            );
        }
    }
    for v in run.versions::<ListPartitionReassignmentsRequest>() {
        for (label, topics) in [
            ("all", None),
            (
                "named",
                Some(vec![
                    list_partition_reassignments_request::ListPartitionReassignmentsTopics::default()
                        .with_name(name(PLAIN))
                        .with_partition_indexes(vec![0, 99]),
                    list_partition_reassignments_request::ListPartitionReassignmentsTopics::default()
                        .with_name(name("lr-missing"))
                        .with_partition_indexes(vec![0]),
                ]),
            ),
        ] {
            run.case("ListPartitionReassignments", &format!("v{v} {label}"), |p| {
                let req = ListPartitionReassignmentsRequest::default()
                    .with_timeout_ms(10_000)
                    .with_topics(topics.clone());
                outcome(p.call(&req, v))
            });
        }
    }
    for v in run.versions::<DescribeClusterRequest>() {
        run.case("DescribeCluster", &format!("v{v}"), |p| {
            let req = DescribeClusterRequest::default();
            outcome(p.call(&req, v))
        });
    }
}

fn topic_admin_cases(run: &mut Run) {
    for v in run.versions::<CreateTopicsRequest>() {
        let specs: Vec<(&str, CreatableTopic, bool)> = vec![
            ("new", create_topic(&format!("dt-new-{v}"), 2, &[]), false),
            (
                "validate only",
                create_topic(&format!("dt-validate-{v}"), 2, &[]),
                true,
            ),
            ("exists", create_topic(PLAIN, 1, &[]), false),
            ("zero partitions", create_topic("dt-zero", 0, &[]), false),
            (
                "replication factor 3",
                create_topic("dt-rf3", 1, &[]).with_replication_factor(3),
                false,
            ),
            ("invalid name", create_topic("bad/name", 1, &[]), false),
            (
                "unknown config",
                create_topic("dt-badconf", 1, &[("no.such.config", "1")]),
                false,
            ),
            (
                "bad config value",
                create_topic("dt-badval", 1, &[("retention.ms", "soon")]),
                false,
            ),
        ];
        for (label, t, validate_only) in specs {
            run.case("CreateTopics", &format!("v{v} {label}"), |p| {
                let req = CreateTopicsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_validate_only(validate_only)
                    .with_topics(vec![t.clone()]);
                let r = p.call(&req, v);
                if let Some(r) = &r {
                    for t in &r.topics {
                        p.topic_ids.insert(t.name.0.to_string(), t.topic_id);
                    }
                }
                key_configs(outcome(r))
            });
        }
    }
    for v in run.versions::<CreatePartitionsRequest>() {
        let topic = format!("dt-new-{}", run.versions::<CreateTopicsRequest>()[0]);
        for (label, count) in [
            ("grow", 3 + v as i32),
            ("same count", 3 + v as i32),
            ("shrink", 1),
        ] {
            run.case("CreatePartitions", &format!("v{v} {label}"), |p| {
                let req = CreatePartitionsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![CreatePartitionsTopic::default()
                        .with_name(name(&topic))
                        .with_count(count)
                        .with_assignments(None)]);
                outcome(p.call(&req, v))
            });
        }
        run.case("CreatePartitions", &format!("v{v} unknown topic"), |p| {
            let req = CreatePartitionsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(name("dt-missing"))
                    .with_count(2)
                    .with_assignments(None)]);
            outcome(p.call(&req, v))
        });
    }
    for v in run.versions::<DeleteRecordsRequest>() {
        for (label, part, offset) in [
            ("to offset 1", 0, 1 + v as i64),
            ("past the high watermark", 0, 1_000_000),
            ("to the end", 2, -1),
            ("unknown partition", 9, 0),
        ] {
            run.case("DeleteRecords", &format!("v{v} {label}"), |p| {
                let req = DeleteRecordsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![DeleteRecordsTopic::default()
                        .with_name(name(PLAIN))
                        .with_partitions(vec![DeleteRecordsPartition::default()
                            .with_partition_index(part)
                            .with_offset(offset)])]);
                outcome(p.call(&req, v))
            });
        }
    }
    let created = run.versions::<CreateTopicsRequest>();
    for (i, v) in run
        .versions::<DeleteTopicsRequest>()
        .into_iter()
        .enumerate()
    {
        let Some(cv) = created.get(i + 1) else { break };
        let topic = format!("dt-new-{cv}");
        run.case("DeleteTopics", &format!("v{v}"), |p| {
            let req = if v >= 6 {
                DeleteTopicsRequest::default().with_topics(vec![
                    DeleteTopicState::default().with_name(Some(name(&topic))),
                    DeleteTopicState::default().with_name(Some(name("dt-missing"))),
                ])
            } else {
                DeleteTopicsRequest::default()
                    .with_topic_names(vec![name(&topic), name("dt-missing")])
            };
            let mut r = p.call(&req.with_timeout_ms(30_000), v);
            // Kafka answers in its own order.
            if let Some(r) = &mut r {
                r.responses.sort_by(|a, b| a.name.cmp(&b.name));
            }
            outcome(r)
        });
    }
}

fn config_cases(run: &mut Run) {
    let keys = [
        "cleanup.policy",
        "retention.ms",
        "max.message.bytes",
        "message.timestamp.type",
        "message.timestamp.after.max.ms",
        "message.timestamp.before.max.ms",
    ];
    for v in run.versions::<DescribeConfigsRequest>() {
        for (label, topic) in [("topic", OLD), ("unknown topic", "dt-missing")] {
            run.case("DescribeConfigs", &format!("v{v} {label}"), |p| {
                let req = DescribeConfigsRequest::default().with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(sb(topic))
                        .with_configuration_keys(Some(keys.iter().map(|k| sb(k)).collect())),
                ]);
                key_configs(outcome(p.call(&req, v)))
            });
        }
    }
    for v in run.versions::<AlterConfigsRequest>() {
        for (label, topic, key, value) in [
            ("set", ALTER, "retention.ms", "86400000"),
            ("unknown key", ALTER, "no.such.config", "1"),
            ("bad value", ALTER, "retention.ms", "soon"),
            ("unknown topic", "dt-missing", "retention.ms", "1"),
        ] {
            run.case("AlterConfigs", &format!("v{v} {label}"), |p| {
                use kafka_protocol::messages::alter_configs_request as ac;
                let req = AlterConfigsRequest::default().with_resources(vec![
                    ac::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(sb(topic))
                        .with_configs(vec![ac::AlterableConfig::default()
                            .with_name(sb(key))
                            .with_value(Some(sb(value)))]),
                ]);
                outcome(p.call(&req, v))
            });
        }
    }
    for v in run.versions::<IncrementalAlterConfigsRequest>() {
        for (label, topic, key, op, value) in [
            ("set", ALTER, "segment.ms", 0, Some("3600000")),
            ("delete", ALTER, "segment.ms", 1, None),
            ("append to a non-list", ALTER, "retention.ms", 2, Some("1")),
            ("unknown key", ALTER, "no.such.config", 0, Some("1")),
            ("unknown topic", "dt-missing", "retention.ms", 0, Some("1")),
        ] {
            run.case("IncrementalAlterConfigs", &format!("v{v} {label}"), |p| {
                use kafka_protocol::messages::incremental_alter_configs_request as iac;
                let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
                    iac::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(sb(topic))
                        .with_configs(vec![iac::AlterableConfig::default()
                            .with_name(sb(key))
                            .with_config_operation(op)
                            .with_value(value.map(sb))]),
                ]);
                outcome(p.call(&req, v))
            });
        }
    }
}

/// Kafka creates `__consumer_offsets` on the first FindCoordinator and answers
/// COORDINATOR_NOT_AVAILABLE until it is ready; clients retry, and so does this, uncompared.
fn wait_for_coordinator(p: &mut Peer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = p.call(&FindCoordinatorRequest::default().with_key(sb(GROUP)), 3);
        if r.is_some_and(|r| r.error_code == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no group coordinator",
            p.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn group_cases(run: &mut Run) {
    wait_for_coordinator(&mut run.sluice);
    wait_for_coordinator(&mut run.kafka);
    let gid = || GroupId(sb(GROUP));
    for v in run.versions::<FindCoordinatorRequest>() {
        run.case("FindCoordinator", &format!("v{v}"), |p| {
            let req = if v >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![sb(GROUP)])
            } else {
                FindCoordinatorRequest::default().with_key(sb(GROUP))
            };
            outcome(p.call(&req, v))
        });
    }
    for v in run.versions::<OffsetCommitRequest>() {
        run.case("OffsetCommit", &format!("v{v} simple commit"), |p| {
            let mut req = commit_request(GROUP, PLAIN, 3);
            if v >= 10 {
                req.topics[0].topic_id = p.id(PLAIN);
            }
            outcome(p.call(&req, v))
        });
        run.case("OffsetCommit", &format!("v{v} unknown member"), |p| {
            let req = commit_request(GROUP, PLAIN, 3)
                .with_generation_id_or_member_epoch(5)
                .with_member_id(sb("nobody"));
            outcome(p.call(&req, v))
        });
    }
    for v in run.versions::<OffsetFetchRequest>() {
        run.case("OffsetFetch", &format!("v{v}"), |p| {
            use kafka_protocol::messages::offset_fetch_request as of;
            let req = if v >= 8 {
                OffsetFetchRequest::default().with_groups(vec![
                    of::OffsetFetchRequestGroup::default()
                        .with_group_id(gid())
                        .with_member_epoch(-1)
                        .with_topics(Some(vec![of::OffsetFetchRequestTopics::default()
                            .with_name(name(PLAIN))
                            .with_partition_indexes(vec![0, 1])])),
                ])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(gid())
                    .with_topics(Some(vec![of::OffsetFetchRequestTopic::default()
                        .with_name(name(PLAIN))
                        .with_partition_indexes(vec![0, 1])]))
            };
            outcome(p.call(&req, v))
        });
    }
    for v in run.versions::<JoinGroupRequest>() {
        run.case("JoinGroup", &format!("v{v} bad session timeout"), |p| {
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(sb("dt-join")))
                .with_session_timeout_ms(1)
                .with_rebalance_timeout_ms(1000)
                .with_protocol_type(sb("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(sb("range"))
                .with_metadata(Bytes::new())]);
            outcome(p.call(&req, v))
        });
    }
    for v in run.versions::<HeartbeatRequest>() {
        run.case("Heartbeat", &format!("v{v} unknown member"), |p| {
            outcome(
                p.call(
                    &HeartbeatRequest::default()
                        .with_group_id(gid())
                        .with_generation_id(1)
                        .with_member_id(sb("nobody")),
                    v,
                ),
            )
        });
    }
    for v in run.versions::<SyncGroupRequest>() {
        run.case("SyncGroup", &format!("v{v} unknown member"), |p| {
            let mut req = SyncGroupRequest::default()
                .with_group_id(gid())
                .with_generation_id(1)
                .with_member_id(sb("nobody"));
            if v >= 5 {
                req = req
                    .with_protocol_type(Some(sb("consumer")))
                    .with_protocol_name(Some(sb("range")));
            }
            outcome(p.call(&req, v))
        });
    }
    for v in run.versions::<LeaveGroupRequest>() {
        run.case("LeaveGroup", &format!("v{v} unknown member"), |p| {
            let req = if v >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(gid())
                    .with_members(vec![
                        leave_group_request::MemberIdentity::default().with_member_id(sb("nobody"))
                    ])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(gid())
                    .with_member_id(sb("nobody"))
            };
            outcome(p.call(&req, v))
        });
    }
    for v in run.versions::<DescribeGroupsRequest>() {
        run.case("DescribeGroups", &format!("v{v}"), |p| {
            let req = DescribeGroupsRequest::default()
                .with_groups(vec![gid(), GroupId(sb("dt-nogroup"))]);
            let mut r = p.call(&req, v);
            if let Some(r) = &mut r {
                r.groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
            }
            outcome(r)
        });
    }
    for v in run.versions::<ListGroupsRequest>() {
        run.case("ListGroups", &format!("v{v}"), |p| {
            let Some(mut r) = p.call(&ListGroupsRequest::default(), v) else {
                return closed();
            };
            // Only the harness's groups: the order of others is the broker's business.
            r.groups.retain(|g| g.group_id.0.starts_with("dt-"));
            r.groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
            outcome(Some(r))
        });
    }
    for v in run.versions::<OffsetDeleteRequest>() {
        run.case("OffsetDelete", &format!("v{v}"), |p| {
            use kafka_protocol::messages::offset_delete_request as od;
            let req = OffsetDeleteRequest::default()
                .with_group_id(gid())
                .with_topics(vec![od::OffsetDeleteRequestTopic::default()
                    .with_name(name(PLAIN))
                    .with_partitions(vec![
                        od::OffsetDeleteRequestPartition::default().with_partition_index(1)
                    ])]);
            outcome(p.call(&req, v))
        });
    }
    for v in run.versions::<DeleteGroupsRequest>() {
        run.case("DeleteGroups", &format!("v{v}"), |p| {
            outcome(
                p.call(
                    &DeleteGroupsRequest::default()
                        .with_groups_names(vec![GroupId(sb(&format!("dt-nogroup-{v}")))]),
                    v,
                ),
            )
        });
    }
    let last = run.versions::<DeleteGroupsRequest>().last().copied();
    if let Some(v) = last {
        run.case("DeleteGroups", "group with offsets", |p| {
            outcome(p.call(
                &DeleteGroupsRequest::default().with_groups_names(vec![gid()]),
                v,
            ))
        });
    }
}

fn misc_cases(run: &mut Run) {
    for v in run.versions::<OffsetForLeaderEpochRequest>() {
        for (label, part, epoch) in [
            ("current epoch", 0, 0),
            ("unknown partition", 9, 0),
            ("future epoch", 0, 5),
        ] {
            run.case("OffsetForLeaderEpoch", &format!("v{v} {label}"), |p| {
                let req = OffsetForLeaderEpochRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                            .with_topic(name(PLAIN))
                            .with_partitions(vec![
                                offset_for_leader_epoch_request::OffsetForLeaderPartition::default(
                                )
                                .with_partition(part)
                                .with_current_leader_epoch(-1)
                                .with_leader_epoch(epoch),
                            ]),
                    ]);
                outcome(p.call(&req, v))
            });
        }
    }
    for v in run.versions::<DescribeLogDirsRequest>() {
        run.case("DescribeLogDirs", &format!("v{v}"), |p| {
            let req = DescribeLogDirsRequest::default().with_topics(Some(vec![
                describe_log_dirs_request::DescribableLogDirTopic::default()
                    .with_topic(name(COMPACT))
                    .with_partitions(vec![0]),
            ]));
            outcome(p.call(&req, v))
        });
    }
}
