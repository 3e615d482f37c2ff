//! Topic administration and cluster information over raw TCP, one request at a time with
//! kafka-protocol's client encoders: CreateTopics, DeleteTopics, CreatePartitions,
//! DeleteRecords, DescribeConfigs, AlterConfigs, IncrementalAlterConfigs, DescribeCluster,
//! DescribeTopicPartitions, OffsetForLeaderEpoch and DescribeLogDirs, each checked for its
//! per-topic (or per-resource, per-partition) error codes.
//!
//! Each test starts its own `sluice` on a free loopback port with a temporary data dir; the
//! small harness below is this file's own.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_topic_partitions_request::{
    Cursor as RequestCursor, TopicRequest,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    alter_configs_request, incremental_alter_configs_request, AlterConfigsRequest, ApiKey,
    ApiVersionsRequest, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    CreateTopicsResponse, DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest,
    DescribeConfigsRequest, DescribeLogDirsRequest, DescribeTopicPartitionsRequest,
    DescribeTopicPartitionsResponse, IncrementalAlterConfigsRequest, ListOffsetsRequest,
    OffsetForLeaderEpochRequest, ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, HeaderVersion, Request, StrBytes,
};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use uuid::Uuid;

/// Bound on every wait: broker start and stop, and each response.
const WAIT: Duration = Duration::from_secs(30);

const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_TOPIC_ID: i16 = 100;
const MISMATCHED_ENDPOINT_TYPE: i16 = 114;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC_CONFIG: i8 = 1;
const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
const SOURCE_DEFAULT_CONFIG: i8 = 5;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;

// ------------------------------------------------------------------------------ harness

/// One `sluice` process on a free port; killed when dropped.
struct Sluice {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Sluice {
    fn start() -> Sluice {
        let dir = tempfile::Builder::new()
            .prefix("sluice-admin-")
            .tempdir()
            .expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut s = Sluice {
            child: None,
            dir,
            port,
        };
        s.spawn();
        s
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("start")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--cores")
            .arg("2")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // The broker dies with the test even if the test process is killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("start sluice"));
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("sluice exited at start with {status}: {}", self.log());
            }
            if let Ok(mut c) = self.try_connect() {
                if c.try_call(&ApiVersionsRequest::default(), 0).is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "sluice not ready: {}",
                self.log()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (graceful stop) and start again on the same data dir and port.
    fn restart(&mut self) {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "sluice did not stop on SIGTERM");
            sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "graceful stop: {status}: {}", self.log());
        self.spawn();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    fn try_connect(&self) -> std::io::Result<Client> {
        let s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(WAIT))?;
        s.set_write_timeout(Some(WAIT))?;
        s.set_nodelay(true)?;
        Ok(Client { s, corr: 0 })
    }

    fn client(&self) -> Client {
        self.try_connect().expect("connect")
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Client {
    s: TcpStream,
    corr: i32,
}

impl Client {
    fn try_call<R: Request>(&mut self, req: &R, version: i16) -> std::io::Result<R::Response> {
        self.corr += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.corr)
            .with_client_id(Some(StrBytes::from_static_str("admin-api-test")));
        let mut body = BytesMut::new();
        encode_request_header_into_buffer(&mut body, &header).expect("encode header");
        req.encode(&mut body, version).expect("encode request");
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.s.write_all(&frame)?;
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len)?;
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut buf)?;
        let mut buf = Bytes::from(buf);
        let h = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .expect("response header");
        assert_eq!(h.correlation_id, self.corr, "correlation id");
        Ok(R::Response::decode(&mut buf, version).expect("response body"))
    }

    fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        self.try_call(req, version).expect("request round trip")
    }

    fn create(
        &mut self,
        topics: Vec<CreatableTopic>,
        validate_only: bool,
        version: i16,
    ) -> CreateTopicsResponse {
        let r = CreateTopicsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(30_000)
            .with_validate_only(validate_only);
        self.call(&r, version)
    }

    /// Creates topics that must succeed; returns their ids.
    fn create_ok(&mut self, topics: &[(&str, i32)]) -> Vec<Uuid> {
        let resp = self.create(
            topics.iter().map(|(n, p)| topic(n, *p, &[])).collect(),
            false,
            7,
        );
        resp.topics
            .iter()
            .map(|t| {
                assert_eq!(
                    t.error_code, NONE,
                    "create {:?}: {:?}",
                    t.name, t.error_message
                );
                t.topic_id
            })
            .collect()
    }

    /// Produces `n` records to one partition with acks=all; returns the base offset.
    fn produce(&mut self, topic: &str, partition: i32, n: usize) -> i64 {
        let r = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch(n)))])]);
        let resp = self.call(&r, 8);
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, NONE, "produce to {topic}-{partition}");
        p.base_offset
    }

    fn describe_configs(
        &mut self,
        resources: Vec<DescribeConfigsResource>,
        synonyms: bool,
    ) -> Vec<DescribeConfigsResult> {
        let r = DescribeConfigsRequest::default()
            .with_resources(resources)
            .with_include_synonyms(synonyms);
        self.call(&r, 4).results
    }

    /// `name -> (value, source)` of a topic's configs.
    fn topic_configs(&mut self, topic: &str) -> IndexMap<String, (String, i8)> {
        let res = self.describe_configs(vec![config_resource(RESOURCE_TOPIC, topic, None)], false);
        assert_eq!(res[0].error_code, NONE, "describe configs of {topic}");
        res[0]
            .configs
            .iter()
            .map(|c| {
                let v = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                (c.name.to_string(), (v, c.config_source))
            })
            .collect()
    }

    fn describe_partitions(
        &mut self,
        topics: &[&str],
        limit: i32,
        cursor: Option<(&str, i32)>,
    ) -> DescribeTopicPartitionsResponse {
        let r = DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| TopicRequest::default().with_name(name(t)))
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(t, p)| {
                RequestCursor::default()
                    .with_topic_name(name(t))
                    .with_partition_index(p)
            }));
        self.call(&r, 0)
    }

    fn partition_count(&mut self, topic: &str) -> usize {
        let resp = self.describe_partitions(&[topic], 2000, None);
        assert_eq!(resp.topics[0].error_code, NONE, "describe {topic}");
        resp.topics[0].partitions.len()
    }

    fn earliest_offset(&mut self, topic: &str, partition: i32) -> i64 {
        let r = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(-2)])]);
        let resp = self.call(&r, 7);
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.error_code, NONE);
        p.offset
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("{prefix}-{n:08x}")
}

fn topic(n: &str, partitions: i32, configs: &[(&str, &str)]) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(name(n))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        )
}

fn config_resource(kind: i8, n: &str, keys: Option<&[&str]>) -> DescribeConfigsResource {
    DescribeConfigsResource::default()
        .with_resource_type(kind)
        .with_resource_name(StrBytes::from_string(n.to_string()))
        .with_configuration_keys(keys.map(|k| {
            k.iter()
                .map(|k| StrBytes::from_string(k.to_string()))
                .collect()
        }))
}

fn batch(n: usize) -> Bytes {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Keeps all records in one batch with no idempotence (base sequence -1).
            sequence: i as i32 - 1,
            timestamp: ts,
            key: None,
            value: Some(Bytes::from(format!("value-{i}"))),
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

fn codes(resp: &CreateTopicsResponse) -> Vec<(String, i16)> {
    resp.topics
        .iter()
        .map(|t| (t.name.to_string(), t.error_code))
        .collect()
}

// -------------------------------------------------------------------------------- tests

#[test]
fn api_versions_advertise_the_admin_apis() {
    let b = Sluice::start();
    let resp = b.client().call(&ApiVersionsRequest::default(), 3);
    let range = |k: ApiKey| {
        resp.api_keys
            .iter()
            .find(|a| a.api_key == k as i16)
            .map(|a| (a.min_version, a.max_version))
    };
    // kafka-go's fixed versions (CreateTopics v2, DeleteTopics v1) must be in range.
    assert_eq!(range(ApiKey::CreateTopics), Some((2, 7)));
    assert_eq!(range(ApiKey::DeleteTopics), Some((1, 6)));
    assert_eq!(range(ApiKey::CreatePartitions), Some((0, 3)));
    assert_eq!(range(ApiKey::DeleteRecords), Some((0, 2)));
    assert_eq!(range(ApiKey::DescribeConfigs), Some((1, 4)));
    assert_eq!(range(ApiKey::AlterConfigs), Some((0, 2)));
    assert_eq!(range(ApiKey::IncrementalAlterConfigs), Some((0, 1)));
    assert_eq!(range(ApiKey::DescribeCluster), Some((0, 2)));
    assert_eq!(range(ApiKey::OffsetForLeaderEpoch), Some((2, 4)));
    assert_eq!(range(ApiKey::DescribeLogDirs), Some((1, 4)));
    assert_eq!(range(ApiKey::DescribeTopicPartitions), Some((0, 0)));
}

#[test]
fn create_topics_answers_each_topic() {
    let b = Sluice::start();
    let mut c = b.client();
    let good = unique("good");
    let dup = unique("dup");
    let defaults = unique("defaults");
    // Replica assignments: honoured when they name registered brokers, refused otherwise,
    // and never given together with a partition count.
    let assigned_to = |brokers: Vec<i32>| {
        topic(&unique("assigned"), -1, &[])
            .with_replication_factor(-1)
            .with_assignments(vec![CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(brokers.into_iter().map(BrokerId).collect())])
    };
    let assigned = assigned_to(vec![1]);
    let assigned_name = assigned.name.clone();
    let resp = c.create(
        vec![
            topic(&good, 3, &[("retention.ms", "3600000")]),
            topic("bad name!", 1, &[]),
            topic(&dup, 1, &[]),
            topic(&dup, 2, &[]),
            topic(&unique("badcfg"), 1, &[("retention.ms", "soon")]),
            topic(&unique("unknowncfg"), 1, &[("no.such.config", "1")]),
            topic(&unique("rf3"), 1, &[]).with_replication_factor(3),
            topic(&unique("zero"), 0, &[]),
            assigned,
            topic(&defaults, -1, &[]).with_replication_factor(-1),
            assigned_to(vec![7]),
            assigned_to(vec![1]).with_num_partitions(1),
        ],
        false,
        7,
    );
    let got: Vec<i16> = codes(&resp).into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        got,
        vec![
            NONE,
            INVALID_TOPIC_EXCEPTION,
            INVALID_REQUEST,
            INVALID_REQUEST,
            INVALID_CONFIG,
            INVALID_CONFIG,
            INVALID_REPLICATION_FACTOR,
            INVALID_PARTITIONS,
            NONE,
            NONE,
            INVALID_REPLICA_ASSIGNMENT,
            INVALID_REQUEST,
        ],
        "{:?}",
        resp.topics
            .iter()
            .map(|t| &t.error_message)
            .collect::<Vec<_>>()
    );
    for t in &resp.topics {
        assert_eq!(t.error_code == NONE, t.error_message.is_none(), "{t:?}");
    }
    // v5+ reports what was created; v7 the topic id.
    let g = &resp.topics[0];
    assert!(!g.topic_id.is_nil());
    assert_eq!((g.num_partitions, g.replication_factor), (3, 1));
    let cfgs = g.configs.as_ref().expect("configs");
    let retention = cfgs
        .iter()
        .find(|c| c.name.as_str() == "retention.ms")
        .expect("retention.ms");
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert_eq!(retention.config_source, SOURCE_DYNAMIC_TOPIC_CONFIG);
    let segment = cfgs
        .iter()
        .find(|c| c.name.as_str() == "segment.bytes")
        .expect("segment.bytes");
    assert_eq!(segment.config_source, SOURCE_DEFAULT_CONFIG);
    // -1 / -1: num.partitions (1) and replication factor 1.
    assert_eq!(
        (
            resp.topics[9].num_partitions,
            resp.topics[9].replication_factor
        ),
        (1, 1)
    );
    // The duplicate name created nothing.
    let d = c.describe_partitions(&[&dup], 100, None);
    assert_eq!(d.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(c.partition_count(&good), 3);
    assert_eq!(c.partition_count(&defaults), 1);
    assert_eq!(c.partition_count(assigned_name.as_str()), 1);

    // Again: already exists, in the newest and the oldest version.
    let again = c.create(vec![topic(&good, 3, &[])], false, 7);
    assert_eq!(again.topics[0].error_code, TOPIC_ALREADY_EXISTS);
    let again = c.create(vec![topic(&good, 3, &[])], false, 2);
    assert_eq!(again.topics[0].error_code, TOPIC_ALREADY_EXISTS);

    // kafka-go's v2.
    let old = unique("v2");
    let r = c.create(vec![topic(&old, 2, &[])], false, 2);
    assert_eq!(codes(&r), vec![(old.clone(), NONE)]);
    assert_eq!(c.partition_count(&old), 2);

    // validate_only checks everything and creates nothing.
    let vo = unique("validate");
    let r = c.create(
        vec![topic(&vo, 4, &[("cleanup.policy", "compact")])],
        true,
        7,
    );
    assert_eq!(r.topics[0].error_code, NONE);
    assert_eq!(r.topics[0].num_partitions, 4);
    let r = c.create(vec![topic(&good, 1, &[])], true, 7);
    assert_eq!(r.topics[0].error_code, TOPIC_ALREADY_EXISTS);
    let r = c.create(
        vec![topic(&unique("vbad"), 1, &[("segment.bytes", "-5")])],
        true,
        7,
    );
    assert_eq!(r.topics[0].error_code, INVALID_CONFIG);
    let d = c.describe_partitions(&[&vo], 100, None);
    assert_eq!(
        d.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION,
        "validate_only created it"
    );

    // A created topic is writable at once.
    assert_eq!(c.produce(&good, 2, 3), 0);
}

#[test]
fn delete_topics_by_name_and_by_id() {
    let b = Sluice::start();
    let mut c = b.client();
    let (t1, t2, t3) = (unique("del1"), unique("del2"), unique("del3"));
    let ids = c.create_ok(&[(&t1, 2), (&t2, 1), (&t3, 1)]);
    c.produce(&t1, 0, 5);
    assert!(b.data_dir().join(format!("{t1}-0")).exists());

    // v1 (kafka-go): by name.
    let r = DeleteTopicsRequest::default()
        .with_topic_names(vec![name(&t1), name("no-such-topic")])
        .with_timeout_ms(30_000);
    let resp = c.call(&r, 1);
    let got: Vec<_> = resp
        .responses
        .iter()
        .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.error_code))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some(t1.clone()), NONE),
            (
                Some("no-such-topic".to_string()),
                UNKNOWN_TOPIC_OR_PARTITION
            )
        ]
    );
    // Its partitions are gone from disk when the answer comes.
    assert!(!b.data_dir().join(format!("{t1}-0")).exists());
    assert!(!b.data_dir().join(format!("{t1}-1")).exists());
    let d = c.describe_partitions(&[&t1], 100, None);
    assert_eq!(d.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);

    // v6: by id, an unknown id, and both name and id.
    let r = DeleteTopicsRequest::default()
        .with_topics(vec![
            DeleteTopicState::default().with_topic_id(ids[1]),
            DeleteTopicState::default().with_topic_id(Uuid::new_v4()),
            DeleteTopicState::default()
                .with_name(Some(name(&t3)))
                .with_topic_id(ids[2]),
        ])
        .with_timeout_ms(30_000);
    let resp = c.call(&r, 6);
    let got: Vec<_> = resp
        .responses
        .iter()
        .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.error_code))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some(t2.clone()), NONE),
            (None, UNKNOWN_TOPIC_ID),
            (Some(t3.clone()), INVALID_REQUEST)
        ]
    );
    assert_eq!(resp.responses[0].topic_id, ids[1]);
    assert_eq!(c.partition_count(&t3), 1);

    // The name can be used again, and the new topic starts empty.
    c.create_ok(&[(&t1, 1)]);
    assert_eq!(c.produce(&t1, 0, 2), 0);
}

#[test]
fn create_partitions_grows_and_refuses_to_shrink() {
    let b = Sluice::start();
    let mut c = b.client();
    let t = unique("grow");
    c.create_ok(&[(&t, 2)]);
    let req = |count: i32, validate_only: bool| {
        CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name(&t))
                .with_count(count)])
            .with_timeout_ms(30_000)
            .with_validate_only(validate_only)
    };
    let code =
        |resp: kafka_protocol::messages::CreatePartitionsResponse| resp.results[0].error_code;

    assert_eq!(code(c.call(&req(4, false), 3)), NONE);
    assert_eq!(c.partition_count(&t), 4);
    // The new partitions take writes from offset 0.
    assert_eq!(c.produce(&t, 3, 4), 0);

    assert_eq!(code(c.call(&req(6, true), 3)), NONE);
    assert_eq!(c.partition_count(&t), 4, "validate_only changed nothing");
    assert_eq!(code(c.call(&req(3, false), 3)), INVALID_PARTITIONS);
    assert_eq!(code(c.call(&req(4, false), 1)), INVALID_PARTITIONS);
    assert_eq!(c.partition_count(&t), 4);

    let unknown = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name("no-such-topic"))
            .with_count(3)])
        .with_timeout_ms(30_000);
    assert_eq!(code(c.call(&unknown, 0)), UNKNOWN_TOPIC_OR_PARTITION);

    let assigned = |brokers: Vec<i32>| {
        CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name(&t))
                .with_count(5)
                .with_assignments(Some(vec![CreatePartitionsAssignment::default()
                    .with_broker_ids(brokers.into_iter().map(BrokerId).collect())]))])
            .with_timeout_ms(30_000)
    };
    assert_eq!(
        code(c.call(&assigned(vec![7]), 2)),
        INVALID_REPLICA_ASSIGNMENT
    );
    assert_eq!(code(c.call(&assigned(vec![1]), 2)), NONE);
    assert_eq!(c.partition_count(&t), 5);
}

#[test]
fn delete_records_moves_the_log_start() {
    let b = Sluice::start();
    let mut c = b.client();
    let t = unique("trim");
    c.create_ok(&[(&t, 2)]);
    c.produce(&t, 0, 10);
    let delete = |c: &mut Client, partition: i32, offset: i64| {
        let r = DeleteRecordsRequest::default()
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(name(&t))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(partition)
                    .with_offset(offset)])])
            .with_timeout_ms(30_000);
        let resp = c.call(&r, 2);
        let p = &resp.topics[0].partitions[0];
        (p.error_code, p.low_watermark)
    };
    assert_eq!(delete(&mut c, 0, 4), (NONE, 4));
    assert_eq!(c.earliest_offset(&t, 0), 4);
    // Below the start: nothing moves back.
    assert_eq!(delete(&mut c, 0, 2), (NONE, 4));
    assert_eq!(delete(&mut c, 0, 11).0, OFFSET_OUT_OF_RANGE);
    assert_eq!(delete(&mut c, 0, -7).0, OFFSET_OUT_OF_RANGE);
    // -1: up to the high watermark.
    assert_eq!(delete(&mut c, 0, -1), (NONE, 10));
    assert_eq!(c.earliest_offset(&t, 0), 10);
    assert_eq!(delete(&mut c, 1, -1), (NONE, 0));
    assert_eq!(delete(&mut c, 2, 0).0, UNKNOWN_TOPIC_OR_PARTITION);
    // Appends continue after the trimmed offsets.
    assert_eq!(c.produce(&t, 0, 1), 10);
}

#[test]
fn configs_round_trip_and_survive_a_restart() {
    let mut b = Sluice::start();
    let mut c = b.client();
    let t = unique("cfg");
    let r = c.create(vec![topic(&t, 1, &[("retention.ms", "3600000")])], false, 7);
    assert_eq!(r.topics[0].error_code, NONE);

    let cfg = c.topic_configs(&t);
    assert_eq!(
        cfg["retention.ms"],
        ("3600000".into(), SOURCE_DYNAMIC_TOPIC_CONFIG)
    );
    for k in ["cleanup.policy", "segment.bytes", "max.message.bytes"] {
        assert_eq!(cfg[k].1, SOURCE_DEFAULT_CONFIG, "{k}");
    }
    assert_eq!(cfg["cleanup.policy"].0, "delete");

    // A key filter, and synonyms.
    let res = c.describe_configs(
        vec![config_resource(
            RESOURCE_TOPIC,
            &t,
            Some(&["retention.ms", "nope"]),
        )],
        true,
    );
    assert_eq!(res[0].configs.len(), 1);
    let syn: Vec<_> = res[0].configs[0]
        .synonyms
        .iter()
        .map(|s| (s.name.to_string(), s.source))
        .collect();
    assert_eq!(
        syn,
        vec![
            ("retention.ms".to_string(), SOURCE_DYNAMIC_TOPIC_CONFIG),
            ("log.retention.ms".to_string(), SOURCE_DEFAULT_CONFIG)
        ]
    );
    let res = c.describe_configs(
        vec![config_resource(RESOURCE_TOPIC, "no-such-topic", None)],
        false,
    );
    assert_eq!(res[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);

    // IncrementalAlterConfigs: SET, DELETE, APPEND to a list.
    let incremental = |ops: &[(&str, i8, Option<&str>)], validate_only: bool| {
        IncrementalAlterConfigsRequest::default()
            .with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(StrBytes::from_string(t.clone()))
                    .with_configs(
                        ops.iter()
                            .map(|(k, op, v)| {
                                incremental_alter_configs_request::AlterableConfig::default()
                                    .with_name(StrBytes::from_string(k.to_string()))
                                    .with_config_operation(*op)
                                    .with_value(v.map(|v| StrBytes::from_string(v.to_string())))
                            })
                            .collect(),
                    ),
            ])
            .with_validate_only(validate_only)
    };
    let resp = c.call(
        &incremental(
            &[
                ("segment.ms", OP_SET, Some("60000")),
                ("retention.ms", OP_DELETE, None),
                ("cleanup.policy", OP_APPEND, Some("compact")),
            ],
            false,
        ),
        1,
    );
    assert_eq!(
        resp.responses[0].error_code, NONE,
        "{:?}",
        resp.responses[0].error_message
    );
    assert!(resp.responses[0].error_message.is_none());
    let cfg = c.topic_configs(&t);
    assert_eq!(
        cfg["segment.ms"],
        ("60000".into(), SOURCE_DYNAMIC_TOPIC_CONFIG)
    );
    assert_eq!(cfg["retention.ms"].1, SOURCE_DEFAULT_CONFIG);
    assert_eq!(
        cfg["cleanup.policy"],
        ("delete,compact".into(), SOURCE_DYNAMIC_TOPIC_CONFIG)
    );

    let code = |c: &mut Client, ops: &[(&str, i8, Option<&str>)], validate_only: bool| {
        c.call(&incremental(ops, validate_only), 0).responses[0].error_code
    };
    assert_eq!(
        code(&mut c, &[("retention.ms", OP_APPEND, Some("5"))], false),
        INVALID_CONFIG
    );
    assert_eq!(
        code(&mut c, &[("no.such.config", OP_SET, Some("5"))], false),
        INVALID_CONFIG
    );
    assert_eq!(
        code(&mut c, &[("segment.bytes", OP_SET, Some("12"))], false),
        INVALID_CONFIG
    );
    assert_eq!(
        code(
            &mut c,
            &[
                ("segment.ms", OP_SET, Some("1")),
                ("segment.ms", OP_DELETE, None)
            ],
            false
        ),
        INVALID_REQUEST
    );
    assert_eq!(
        code(&mut c, &[("max.message.bytes", OP_SET, Some("2048"))], true),
        NONE
    );
    assert_eq!(
        c.topic_configs(&t)["max.message.bytes"].1,
        SOURCE_DEFAULT_CONFIG,
        "validate_only applied"
    );

    // AlterConfigs replaces the whole set of overrides.
    let alter = |resource_type: i8, n: &str, configs: &[(&str, &str)]| {
        AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(n.to_string()))
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            alter_configs_request::AlterableConfig::default()
                                .with_name(StrBytes::from_string(k.to_string()))
                                .with_value(Some(StrBytes::from_string(v.to_string())))
                        })
                        .collect(),
                ),
        ])
    };
    let resp = c.call(
        &alter(
            RESOURCE_TOPIC,
            &t,
            &[
                ("retention.bytes", "1000000"),
                ("cleanup.policy", "compact"),
            ],
        ),
        1,
    );
    assert_eq!(resp.responses[0].error_code, NONE);
    let cfg = c.topic_configs(&t);
    assert_eq!(
        cfg["retention.bytes"],
        ("1000000".into(), SOURCE_DYNAMIC_TOPIC_CONFIG)
    );
    assert_eq!(
        cfg["cleanup.policy"],
        ("compact".into(), SOURCE_DYNAMIC_TOPIC_CONFIG)
    );
    assert_eq!(cfg["segment.ms"].1, SOURCE_DEFAULT_CONFIG);
    let bad = c.call(
        &alter(RESOURCE_TOPIC, &t, &[("retention.bytes", "lots")]),
        0,
    );
    assert_eq!(bad.responses[0].error_code, INVALID_CONFIG);
    let missing = c.call(
        &alter(RESOURCE_TOPIC, "no-such-topic", &[("retention.ms", "1")]),
        2,
    );
    assert_eq!(missing.responses[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let broker = c.call(&alter(RESOURCE_BROKER, "1", &[("num.partitions", "3")]), 1);
    assert_eq!(broker.responses[0].error_code, INVALID_REQUEST);

    // Broker configs are described as static and read-only.
    let res = c.describe_configs(
        vec![
            config_resource(RESOURCE_BROKER, "1", None),
            config_resource(RESOURCE_BROKER, "7", None),
        ],
        false,
    );
    assert_eq!(res[0].error_code, NONE);
    for k in [
        "num.partitions",
        "auto.create.topics.enable",
        "message.max.bytes",
        "log.retention.ms",
        "log.segment.bytes",
    ] {
        let e = res[0]
            .configs
            .iter()
            .find(|e| e.name.as_str() == k)
            .unwrap_or_else(|| panic!("{k}"));
        assert_eq!(e.config_source, SOURCE_STATIC_BROKER_CONFIG, "{k}");
        assert!(e.read_only, "{k}");
    }
    assert_eq!(res[1].error_code, INVALID_REQUEST);

    // The overrides are durable: a graceful restart keeps them.
    drop(c);
    b.restart();
    let mut c = b.client();
    let cfg = c.topic_configs(&t);
    assert_eq!(
        cfg["retention.bytes"],
        ("1000000".into(), SOURCE_DYNAMIC_TOPIC_CONFIG)
    );
    assert_eq!(
        cfg["cleanup.policy"],
        ("compact".into(), SOURCE_DYNAMIC_TOPIC_CONFIG)
    );
    assert_eq!(cfg["retention.ms"].1, SOURCE_DEFAULT_CONFIG);
}

#[test]
fn describe_cluster_and_topic_partitions() {
    let b = Sluice::start();
    let mut c = b.client();
    for version in [0, 1, 2] {
        let resp = c.call(&DescribeClusterRequest::default(), version);
        assert_eq!(resp.error_code, NONE);
        assert!(!resp.cluster_id.is_empty());
        assert_eq!(resp.controller_id, BrokerId(1));
        assert_eq!(resp.brokers.len(), 1);
        let broker = &resp.brokers[0];
        assert_eq!(
            (broker.broker_id, broker.host.as_str(), broker.port),
            (BrokerId(1), "127.0.0.1", b.port as i32)
        );
    }
    let with_ops = c.call(
        &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
        2,
    );
    assert!(with_ops.cluster_authorized_operations > 0);
    let controllers = c.call(&DescribeClusterRequest::default().with_endpoint_type(2), 1);
    assert_eq!(controllers.error_code, MISMATCHED_ENDPOINT_TYPE);

    let (a, z) = (unique("dtp-a"), unique("dtp-z"));
    let ids = c.create_ok(&[(&a, 3), (&z, 2)]);
    let resp = c.describe_partitions(&[&z, &a, "no-such-topic"], 2000, None);
    let topics: Vec<_> = resp
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.to_string()),
                t.error_code,
                t.topic_id,
                t.partitions.len(),
            )
        })
        .collect();
    // In name order.
    assert_eq!(
        topics,
        vec![
            (Some(a.clone()), NONE, ids[0], 3),
            (Some(z.clone()), NONE, ids[1], 2),
            (
                Some("no-such-topic".to_string()),
                UNKNOWN_TOPIC_OR_PARTITION,
                Uuid::nil(),
                0
            ),
        ]
    );
    assert!(resp.next_cursor.is_none());
    let p = &resp.topics[0].partitions[1];
    assert_eq!(p.partition_index, 1);
    assert_eq!(p.leader_id, BrokerId(1));
    assert_eq!(p.replica_nodes, vec![BrokerId(1)]);
    assert_eq!(p.isr_nodes, vec![BrokerId(1)]);

    // Paging through with a cursor, two partitions at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<(String, i32)> = None;
    for _ in 0..10 {
        let resp =
            c.describe_partitions(&[&a, &z], 2, cursor.as_ref().map(|(t, p)| (t.as_str(), *p)));
        for t in &resp.topics {
            for p in &t.partitions {
                seen.push((
                    t.name.as_ref().expect("name").to_string(),
                    p.partition_index,
                ));
            }
        }
        match resp.next_cursor {
            Some(next) => cursor = Some((next.topic_name.to_string(), next.partition_index)),
            None => break,
        }
    }
    let want: Vec<_> = (0..3)
        .map(|i| (a.clone(), i))
        .chain((0..2).map(|i| (z.clone(), i)))
        .collect();
    assert_eq!(seen, want);
}

#[test]
fn offset_for_leader_epoch_and_log_dirs() {
    let b = Sluice::start();
    let mut c = b.client();
    let t = unique("epoch");
    c.create_ok(&[(&t, 2)]);
    c.produce(&t, 1, 5);

    let ask = |c: &mut Client, partition: i32, current: i32, epoch: i32| {
        let r = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(name(&t))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(current)
                    .with_leader_epoch(epoch)])]);
        let resp = c.call(&r, 4);
        let p = &resp.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    // The leader epoch is the partition's Raft term, as DescribeTopicPartitions reports it.
    let described = c.describe_partitions(&[&t], 10, None);
    let epoch = described.topics[0].partitions[1].leader_epoch;
    assert!(epoch >= 1, "a term starts at 1: {epoch}");
    assert_eq!(ask(&mut c, 1, epoch, epoch), (NONE, epoch, 5));
    assert_eq!(ask(&mut c, 0, -1, epoch), (NONE, epoch, 0));
    assert_eq!(ask(&mut c, 1, epoch, epoch + 2), (NONE, -1, -1));
    assert_eq!(ask(&mut c, 1, epoch + 4, 0).0, UNKNOWN_LEADER_EPOCH);
    assert_eq!(ask(&mut c, 1, epoch - 1, epoch).0, FENCED_LEADER_EPOCH);
    assert_eq!(ask(&mut c, 9, 0, 0).0, UNKNOWN_TOPIC_OR_PARTITION);

    // Every partition, from both shards.
    let resp = c.call(&DescribeLogDirsRequest::default().with_topics(None), 4);
    assert_eq!(resp.error_code, NONE);
    assert_eq!(resp.results.len(), 1);
    let dir = &resp.results[0];
    assert!(!dir.log_dir.is_empty());
    let mine = dir
        .topics
        .iter()
        .find(|x| x.name.as_str() == t)
        .expect("topic in log dir");
    let sizes: Vec<_> = mine
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.partition_size))
        .collect();
    // Both hold their Raft group's first entries; only partition 1 holds records too.
    assert_eq!(sizes.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1]);
    assert!(sizes[1].1 > sizes[0].1, "{sizes:?}");
    // Only what was asked for.
    let r =
        DescribeLogDirsRequest::default()
            .with_topics(Some(vec![DescribableLogDirTopic::default()
                .with_topic(name(&t))
                .with_partitions(vec![1])]));
    let resp = c.call(&r, 1);
    let topics = &resp.results[0].topics;
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].partitions.len(), 1);
    assert_eq!(topics[0].partitions[0].partition_index, 1);
}
