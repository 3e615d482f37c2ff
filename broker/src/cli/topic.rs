//! `sluice topic ...`: CreateTopics, Metadata, DescribeConfigs, DeleteTopics,
//! IncrementalAlterConfigs, CreatePartitions, and a console producer and consumer.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, IsTerminal};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use clap::Subcommand;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, FetchRequest, IncrementalAlterConfigsRequest, ProduceRequest,
};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use serde_json::json;

use super::client::{
    check, is_transient, leader_of, name, str_bytes, CliError, Client, Result, BROKER_TIMEOUT_MS,
    CONSUMER_REPLICA_ID, EARLIEST, LATEST, TRANSIENT_ATTEMPTS_MAX, TRANSIENT_BACKOFF,
};
use super::output::{self, Progress};
use super::{group, parse_key_value, Format, StartAt};

/// Records buffered per produce request; bounds memory and the size of what one failure loses.
const PRODUCE_BATCH_RECORDS_MAX: usize = 1_000;
/// Bytes of keys and values buffered per produce request; under Kafka's default
/// `max.message.bytes` (1 MiB) so a full batch is never refused for its size.
const PRODUCE_BATCH_BYTES_MAX: usize = 512 << 10;
/// How long a fetch may wait at the broker for new records; also bounds how late a
/// following consumer notices new data on a second leader.
const FETCH_MAX_WAIT_MS: i32 = 500;
/// A fetch answers as soon as there is anything to read.
const FETCH_MIN_BYTES: i32 = 1;
/// Bytes one fetch response may carry in all.
const FETCH_MAX_BYTES: i32 = 8 << 20;
/// Bytes one fetch response may carry per partition.
const FETCH_PARTITION_MAX_BYTES: i32 = 1 << 20;
/// Consecutive retriable fetch errors (leader moving, broker loading) tolerated before the
/// consumer gives up and names the error.
const FETCH_RETRIES_MAX: u32 = 10;
/// Pause before retrying after a retriable fetch error.
const FETCH_RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// Produce's acks for "every in-sync replica has it" (on one node: it is on disk).
const ACKS_ALL: i16 = -1;
/// IncrementalAlterConfigs operation codes.
const CONFIG_OP_SET: i8 = 0;
const CONFIG_OP_DELETE: i8 = 1;
/// DescribeConfigs / IncrementalAlterConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// CreateTopics' "use the broker's default" for partitions and replicas.
const BROKER_DEFAULT: i32 = -1;

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions [default: the broker's num.partitions].
        #[arg(short = 'p', long, default_value_t = BROKER_DEFAULT, hide_default_value = true)]
        partitions: i32,
        /// Replication factor [default: the broker's default.replication.factor].
        #[arg(short = 'r', long, default_value_t = BROKER_DEFAULT as i16, hide_default_value = true)]
        replicas: i16,
        /// A topic config, key=value; repeat for more.
        #[arg(short = 'c', long = "config", value_parser = parse_key_value, value_name = "KEY=VALUE")]
        configs: Vec<(String, String)>,
        /// Succeed without changing anything if the topic already exists (as
        /// kafka-topics.sh --if-not-exists), so a job can be re-run.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics (internal ones, like __consumer_offsets, are left out).
    List,
    /// A topic's partitions (leader, replicas, ISR, offsets) and configs.
    Describe { name: String },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set or remove topic configs.
    AlterConfig {
        name: String,
        /// key=value to set.
        #[arg(long, num_args = 1.., value_parser = parse_key_value, value_name = "KEY=VALUE", required_unless_present = "delete")]
        set: Vec<(String, String)>,
        /// Keys to remove (back to the broker default).
        #[arg(long, num_args = 1.., value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Add partitions to a topic.
    AddPartitions {
        name: String,
        /// How many partitions to add.
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        num: i32,
    },
    /// Produce one record per line of stdin, or of --input (acks=all).
    ///
    /// Without -p, keyed records go to murmur2(key) % partitions, as Kafka's Java producer
    /// places them, and keyless ones to one partition per request, in turn.
    Produce {
        name: String,
        /// The partition every record goes to.
        #[arg(short = 'p', long)]
        partition: Option<i32>,
        /// One key for every record.
        #[arg(short = 'k', long, conflicts_with = "key_delim")]
        key: Option<String>,
        /// Split each line at the first D into key and value.
        #[arg(long, value_name = "D")]
        key_delim: Option<String>,
        /// Read the lines from this file instead of stdin (for containers without a shell,
        /// such as the Helm chart's test pods).
        #[arg(long, value_name = "FILE")]
        input: Option<std::path::PathBuf>,
    },
    /// Print records; follows new ones until interrupted unless -n is given.
    ///
    /// Text output is one line per record: partition, offset, timestamp (ms), key, value,
    /// separated by tabs. With -g the consumer commits what it printed for that group after
    /// each fetch, outside any group generation (generation -1, as Kafka's tools do for a
    /// standalone consumer), and by default resumes from the group's committed offsets.
    Consume {
        name: String,
        /// Only this partition [default: all].
        #[arg(short = 'p', long)]
        partition: Option<i32>,
        /// start, end, an offset, or @UNIX_MS (the first record at or after that time)
        /// [default: the group's committed offset with -g, else start].
        #[arg(short = 'o', long)]
        offset: Option<StartAt>,
        /// Stop after this many records.
        #[arg(short = 'n', long)]
        count: Option<u64>,
        /// Commit consumed offsets for this group.
        #[arg(short = 'g', long)]
        group: Option<String>,
    },
}

pub fn run(client: &mut Client, format: Format, cmd: TopicCommand) -> Result<()> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replicas,
            configs,
            if_not_exists,
        } => create(
            client,
            format,
            &name,
            partitions,
            replicas,
            configs,
            if_not_exists,
        ),
        TopicCommand::List => list(client, format),
        TopicCommand::Describe { name } => describe(client, format, &name),
        TopicCommand::Delete { names } => delete(client, format, &names),
        TopicCommand::AlterConfig { name, set, delete } => {
            alter_config(client, format, &name, set, delete)
        }
        TopicCommand::AddPartitions { name, num } => add_partitions(client, format, &name, num),
        TopicCommand::Produce {
            name,
            partition,
            key,
            key_delim,
            input,
        } => produce(client, format, &name, partition, key, key_delim, input),
        TopicCommand::Consume {
            name,
            partition,
            offset,
            count,
            group,
        } => consume(client, format, &name, partition, offset, count, group),
    }
}

fn create(
    client: &mut Client,
    format: Format,
    topic: &str,
    partitions: i32,
    replicas: i16,
    configs: Vec<(String, String)>,
    if_not_exists: bool,
) -> Result<()> {
    let conn = client.any()?;
    let v = conn.version::<CreateTopicsRequest>()?;
    let mut t = CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(replicas);
    t.configs = configs
        .iter()
        .map(|(k, val)| {
            CreatableTopicConfig::default()
                .with_name(str_bytes(k))
                .with_value(Some(str_bytes(val)))
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_topics(vec![t])
        .with_timeout_ms(BROKER_TIMEOUT_MS);
    let resp = conn.send(&req, v)?;
    let r = resp.topics.first().ok_or_else(|| CliError::Protocol {
        addr: conn.addr.clone(),
        detail: "CreateTopics answered no topic".into(),
    })?;
    if if_not_exists && r.error_code == ResponseError::TopicAlreadyExists.code() {
        return match format {
            Format::Text => output::print(&format!("topic {topic} already exists\n")),
            Format::Json => output::json(&json!({ "name": topic, "existed": true })),
        };
    }
    check(
        r.error_code,
        || format!("create topic {topic}"),
        r.error_message.as_ref(),
    )?;
    // CreateTopics v5+ reports what was created; older brokers only say it was.
    let (p, rf) = if v >= 5 {
        (r.num_partitions, r.replication_factor)
    } else {
        (partitions, replicas)
    };
    match format {
        Format::Text => output::print(&format!(
            "created topic {topic}: {p} partitions, replication factor {rf}\n"
        )),
        Format::Json => output::json(&json!({
            "name": topic,
            "topic_id": r.topic_id.to_string(),
            "partitions": p,
            "replication_factor": rf,
        })),
    }
}

fn list(client: &mut Client, format: Format) -> Result<()> {
    let md = client.metadata(None)?;
    let mut topics: Vec<&MetadataResponseTopic> =
        md.topics.iter().filter(|t| !t.is_internal).collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let tname = |t: &MetadataResponseTopic| t.name.as_ref().map(|n| n.to_string());
    let replicas = |t: &MetadataResponseTopic| {
        t.partitions
            .first()
            .map_or(0, |p| p.replica_nodes.len() as i64)
    };
    match format {
        Format::Text => {
            let rows: Vec<Vec<String>> = topics
                .iter()
                .map(|t| {
                    vec![
                        tname(t).unwrap_or_default(),
                        t.partitions.len().to_string(),
                        replicas(t).to_string(),
                    ]
                })
                .collect();
            output::table(&["NAME", "PARTITIONS", "REPLICAS"], &rows)
        }
        Format::Json => output::json(&json!(topics
            .iter()
            .map(|t| json!({
                "name": tname(t),
                "partitions": t.partitions.len(),
                "replicas": replicas(t),
            }))
            .collect::<Vec<_>>())),
    }
}

/// Kafka's names for DescribeConfigs' `config_source`.
fn config_source(s: i8) -> &'static str {
    match s {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

/// A topic's configs: name → (value, source).
fn topic_configs(
    client: &mut Client,
    topic: &str,
) -> Result<BTreeMap<String, (Option<String>, &'static str)>> {
    let conn = client.any()?;
    let v = conn.version::<DescribeConfigsRequest>()?;
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(topic))]);
    let resp = conn.send(&req, v)?;
    let mut out = BTreeMap::new();
    for r in resp.results {
        check(
            r.error_code,
            || format!("describe configs of topic {topic}"),
            r.error_message.as_ref(),
        )?;
        for c in r.configs {
            let value = if c.is_sensitive {
                None
            } else {
                c.value.map(|v| v.to_string())
            };
            out.insert(c.name.to_string(), (value, config_source(c.config_source)));
        }
    }
    Ok(out)
}

fn describe(client: &mut Client, format: Format, topic: &str) -> Result<()> {
    let t = client.topic_metadata(topic)?;
    // A partition without a leader has no offsets to ask for, but is shown all the same.
    let led: Vec<i32> = t
        .partitions
        .iter()
        .filter(|p| p.leader_id.0 >= 0)
        .map(|p| p.partition_index)
        .collect();
    let starts = client.list_offsets(&t, &led, EARLIEST)?;
    let ends = client.list_offsets(&t, &led, LATEST)?;
    let offset_text = |o: Option<&i64>| o.map_or_else(|| "-".to_string(), |o| o.to_string());
    let configs = topic_configs(client, topic)?;
    let mut partitions = t.partitions.clone();
    partitions.sort_by_key(|p| p.partition_index);
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    match format {
        Format::Text => {
            let replicas = partitions.first().map_or(0, |p| p.replica_nodes.len());
            output::print(&format!(
                "NAME        {topic}\nID          {}\nPARTITIONS  {}\nREPLICAS    {replicas}\nINTERNAL    {}\n\n",
                t.topic_id,
                partitions.len(),
                t.is_internal
            ))?;
            let rows: Vec<Vec<String>> = configs
                .iter()
                .map(|(k, (v, src))| {
                    vec![k.clone(), v.clone().unwrap_or_default(), src.to_string()]
                })
                .collect();
            output::table(&["CONFIG", "VALUE", "SOURCE"], &rows)?;
            output::print("\n")?;
            let rows: Vec<Vec<String>> = partitions
                .iter()
                .map(|p| {
                    let i = p.partition_index;
                    vec![
                        i.to_string(),
                        p.leader_id.0.to_string(),
                        format!("{:?}", ids(&p.replica_nodes)),
                        format!("{:?}", ids(&p.isr_nodes)),
                        offset_text(starts.get(&i)),
                        offset_text(ends.get(&i)),
                    ]
                })
                .collect();
            output::table(
                &[
                    "PARTITION",
                    "LEADER",
                    "REPLICAS",
                    "ISR",
                    "LOG-START-OFFSET",
                    "HIGH-WATERMARK",
                ],
                &rows,
            )
        }
        Format::Json => {
            let configs: serde_json::Map<String, serde_json::Value> = configs
                .into_iter()
                .map(|(k, (v, src))| (k, json!({"value": v, "source": src})))
                .collect();
            output::json(&json!({
                "name": topic,
                "topic_id": t.topic_id.to_string(),
                "internal": t.is_internal,
                "configs": configs,
                "partitions": partitions.iter().map(|p| {
                    let i = p.partition_index;
                    json!({
                        "partition": i,
                        "leader": p.leader_id.0,
                        "replicas": ids(&p.replica_nodes),
                        "isr": ids(&p.isr_nodes),
                        "log_start_offset": starts.get(&i),
                        "high_watermark": ends.get(&i),
                    })
                }).collect::<Vec<_>>(),
            }))
        }
    }
}

fn delete(client: &mut Client, format: Format, topics: &[String]) -> Result<()> {
    let conn = client.any()?;
    let v = conn.version::<DeleteTopicsRequest>()?;
    let mut req = DeleteTopicsRequest::default().with_timeout_ms(BROKER_TIMEOUT_MS);
    // v6 names topics in a struct so they can be given by id instead.
    if v >= 6 {
        req.topics = topics
            .iter()
            .map(|t| DeleteTopicState::default().with_name(Some(name(t))))
            .collect();
    } else {
        req.topic_names = topics.iter().map(|t| name(t)).collect();
    }
    let mut results = conn.send(&req, v)?.responses;
    // Kafka answers in its own order; report in the user's.
    results.sort_by_key(|r| {
        let n = r.name.as_ref().map(|n| n.as_str());
        topics.iter().position(|t| Some(t.as_str()) == n)
    });
    let mut deleted = Vec::new();
    let mut first_err = None;
    for r in results {
        let t = r.name.map(|n| n.to_string()).unwrap_or_default();
        match check(
            r.error_code,
            || format!("delete topic {t}"),
            r.error_message.as_ref(),
        ) {
            Ok(()) => deleted.push(t),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match format {
        Format::Text => {
            for t in &deleted {
                output::print(&format!("deleted topic {t}\n"))?;
            }
        }
        Format::Json => output::json(&json!({ "deleted": deleted }))?,
    }
    first_err.map_or(Ok(()), Err)
}

fn alter_config(
    client: &mut Client,
    format: Format,
    topic: &str,
    set: Vec<(String, String)>,
    delete: Vec<String>,
) -> Result<()> {
    let conn = client.any()?;
    let v = conn.version::<IncrementalAlterConfigsRequest>()?;
    let mut configs: Vec<AlterableConfig> = set
        .iter()
        .map(|(k, val)| {
            AlterableConfig::default()
                .with_name(str_bytes(k))
                .with_config_operation(CONFIG_OP_SET)
                .with_value(Some(str_bytes(val)))
        })
        .collect();
    configs.extend(delete.iter().map(|k| {
        AlterableConfig::default()
            .with_name(str_bytes(k))
            .with_config_operation(CONFIG_OP_DELETE)
    }));
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(topic))
            .with_configs(configs),
    ]);
    let resp = conn.send(&req, v)?;
    for r in &resp.responses {
        check(
            r.error_code,
            || format!("alter configs of topic {topic}"),
            r.error_message.as_ref(),
        )?;
    }
    match format {
        Format::Text => {
            let mut out = String::new();
            for (k, val) in &set {
                out.push_str(&format!("topic {topic}: set {k}={val}\n"));
            }
            for k in &delete {
                out.push_str(&format!("topic {topic}: removed {k}\n"));
            }
            output::print(&out)
        }
        Format::Json => output::json(&json!({
            "name": topic,
            "set": set.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "deleted": delete,
        })),
    }
}

fn add_partitions(client: &mut Client, format: Format, topic: &str, num: i32) -> Result<()> {
    let before = client.topic_metadata(topic)?.partitions.len() as i32;
    let after = before + num;
    let conn = client.any()?;
    let v = conn.version::<kafka_protocol::messages::CreatePartitionsRequest>()?;
    let req = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name(topic))
            .with_count(after)
            // null, not empty: "let the broker place them"; an empty list is zero placements.
            .with_assignments(None)])
        .with_timeout_ms(BROKER_TIMEOUT_MS);
    let resp = conn.send(&req, v)?;
    for r in &resp.results {
        check(
            r.error_code,
            || format!("add partitions to topic {topic}"),
            r.error_message.as_ref(),
        )?;
    }
    match format {
        Format::Text => output::print(&format!("topic {topic}: {before} -> {after} partitions\n")),
        Format::Json => output::json(&json!({
            "name": topic,
            "partitions_before": before,
            "partitions": after,
        })),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), so keys land where Kafka's own
/// producers put them.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a keyed record, as Kafka's default partitioner picks it.
fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Offsets a produce run got, per partition.
#[derive(Default)]
struct Produced {
    records: u64,
    first: i64,
    last: i64,
}

/// Records waiting to be sent, per partition.
#[derive(Default)]
struct Pending {
    by_partition: BTreeMap<i32, Vec<Record>>,
    records: usize,
    bytes: usize,
}

fn produce(
    client: &mut Client,
    format: Format,
    topic: &str,
    partition: Option<i32>,
    key: Option<String>,
    key_delim: Option<String>,
    input_file: Option<std::path::PathBuf>,
) -> Result<()> {
    let mut meta = client.topic_led(topic, partition)?;
    let partitions = meta.partitions.len() as i32;
    if key_delim.as_deref() == Some("") {
        return Err(CliError::Usage("--key-delim must not be empty".into()));
    }
    // Typed lines go out one by one; piped input is batched.
    let interactive = input_file.is_none() && std::io::stdin().is_terminal();
    let source = match &input_file {
        Some(p) => p.display().to_string(),
        None => "stdin".to_string(),
    };
    let mut input: Box<dyn BufRead> = match &input_file {
        Some(p) => Box::new(std::io::BufReader::new(std::fs::File::open(p).map_err(
            |source| CliError::Local {
                what: format!("opening {}", p.display()),
                source,
            },
        )?)),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut pending = Pending::default();
    let mut produced: BTreeMap<i32, Produced> = BTreeMap::new();
    let mut next_keyless = 0i32;
    let mut keyless_partition = None;
    let mut progress = Progress::new("produced", None);
    let mut total = 0u64;
    let mut line = Vec::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|source| CliError::Local {
                what: format!("reading {source}"),
                source,
            })?;
        if n > 0 {
            line_no += 1;
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            let (k, v): (Option<Bytes>, Bytes) = match (&key, &key_delim) {
                (Some(k), _) => (Some(Bytes::from(k.clone())), Bytes::copy_from_slice(&line)),
                (None, Some(d)) => {
                    let d = d.as_bytes();
                    let at = line.windows(d.len()).position(|w| w == d).ok_or_else(|| {
                        CliError::Usage(format!(
                            "{source} line {line_no} has no key delimiter {:?}",
                            key_delim.as_deref().unwrap_or_default()
                        ))
                    })?;
                    (
                        Some(Bytes::copy_from_slice(&line[..at])),
                        Bytes::copy_from_slice(&line[at + d.len()..]),
                    )
                }
                (None, None) => (None, Bytes::copy_from_slice(&line)),
            };
            let p = match (partition, &k) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for_key(k, partitions),
                (None, None) => *keyless_partition.get_or_insert_with(|| {
                    next_keyless = (next_keyless + 1) % partitions;
                    next_keyless
                }),
            };
            pending.bytes += k.as_ref().map_or(0, |k| k.len()) + v.len();
            pending.records += 1;
            let batch = pending.by_partition.entry(p).or_default();
            batch.push(Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                offset: batch.len() as i64,
                // kafka-protocol starts a new batch wherever offset - sequence changes, and
                // takes the batch's base sequence from the first record: offset - 1 keeps one
                // batch with base sequence -1, "no sequence", as a non-idempotent producer sends.
                sequence: batch.len() as i32 - 1,
                timestamp: now_ms(),
                key: k,
                value: Some(v),
                headers: Default::default(),
            });
        }
        let full = pending.records >= PRODUCE_BATCH_RECORDS_MAX
            || pending.bytes >= PRODUCE_BATCH_BYTES_MAX;
        if pending.records > 0 && (n == 0 || full || interactive) {
            total += pending.records as u64;
            send_pending(
                client,
                &mut meta,
                std::mem::take(&mut pending),
                &mut produced,
            )?;
            keyless_partition = None;
            // Someone typing lines needs no counter drawn over them.
            if !interactive {
                progress.update(total);
            }
        }
        if n == 0 {
            break;
        }
    }
    progress.finish();
    match format {
        Format::Text => {
            let mut out = format!("produced {total} records to {topic}\n");
            for (p, r) in &produced {
                out.push_str(&format!(
                    "  partition {p}: {} records at offsets {}..={}\n",
                    r.records, r.first, r.last
                ));
            }
            output::print(&out)
        }
        Format::Json => output::json(&json!({
            "topic": topic,
            "records": total,
            "partitions": produced.iter().map(|(p, r)| json!({
                "partition": p,
                "records": r.records,
                "first_offset": r.first,
                "last_offset": r.last,
            })).collect::<Vec<_>>(),
        })),
    }
}

/// Sends what is pending, one Produce request per leader, and records the offsets given.
/// Partitions a broker refused because it is not (yet) their leader are sent again, to the
/// leader fresh metadata names; those errors mean nothing was written, so nothing doubles.
fn send_pending(
    client: &mut Client,
    meta: &mut MetadataResponseTopic,
    pending: Pending,
    produced: &mut BTreeMap<i32, Produced>,
) -> Result<()> {
    let topic = meta
        .name
        .as_ref()
        .map(|n| n.to_string())
        .unwrap_or_default();
    let opts = RecordEncodeOptions {
        version: RECORD_BATCH_VERSION,
        compression: Compression::None,
    };
    // (partition, encoded batch, record count), encoded once however often it is sent.
    let mut todo: Vec<(i32, Bytes, i64)> = pending
        .by_partition
        .into_iter()
        .map(|(p, records)| {
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(&mut buf, records.iter(), &opts)
                .unwrap_or_else(|e| panic!("encoding a batch of plain records: {e}"));
            (p, buf.freeze(), records.len() as i64)
        })
        .collect();
    let mut attempt = 1;
    loop {
        let mut by_leader: HashMap<BrokerId, Vec<(i32, Bytes, i64)>> = HashMap::new();
        for part in todo {
            by_leader
                .entry(leader_of(meta, part.0)?)
                .or_default()
                .push(part);
        }
        let mut again = Vec::new();
        for (leader, parts) in by_leader {
            let data = parts
                .iter()
                .map(|(p, batch, _)| {
                    PartitionProduceData::default()
                        .with_index(*p)
                        .with_records(Some(batch.clone()))
                })
                .collect();
            let conn = client.node(leader)?;
            let v = conn.version::<ProduceRequest>()?;
            let req = ProduceRequest::default()
                .with_acks(ACKS_ALL)
                .with_timeout_ms(BROKER_TIMEOUT_MS)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name(&topic))
                    .with_partition_data(data)]);
            let resp = conn.send(&req, v)?;
            for t in resp.responses {
                for r in t.partition_responses {
                    let p = r.index;
                    let Some(part) = parts.iter().find(|x| x.0 == p) else {
                        continue;
                    };
                    if is_transient(r.error_code) && attempt < TRANSIENT_ATTEMPTS_MAX {
                        again.push(part.clone());
                        continue;
                    }
                    check(
                        r.error_code,
                        || format!("produce to {topic}/{p}"),
                        r.error_message.as_ref(),
                    )?;
                    let n = part.2;
                    let e = produced.entry(p).or_insert(Produced {
                        records: 0,
                        first: r.base_offset,
                        last: r.base_offset,
                    });
                    e.records += n as u64;
                    e.first = e.first.min(r.base_offset);
                    e.last = e.last.max(r.base_offset + n - 1);
                }
            }
        }
        if again.is_empty() {
            return Ok(());
        }
        attempt += 1;
        std::thread::sleep(TRANSIENT_BACKOFF);
        *meta = client.topic_metadata(&topic)?;
        todo = again;
    }
}

/// The record batch format (magic) produce writes: v2, the only one Kafka 4 accepts.
const RECORD_BATCH_VERSION: i8 = 2;
/// Byte positions in a RecordBatch v2 header.
const BATCH_LENGTH_AT: usize = 8;
const BATCH_HEADER_PREFIX_BYTES: usize = 12;
const BATCH_LAST_OFFSET_DELTA_AT: usize = 23;

/// Splits a fetched records section into whole batches: (base offset + last offset delta + 1,
/// decoded records). A fetch may end in a partial batch, which is left for the next fetch.
fn decode_batches(mut data: Bytes, addr: &str) -> Result<Vec<(i64, Vec<Record>)>> {
    let mut out = Vec::new();
    while data.len() >= BATCH_HEADER_PREFIX_BYTES {
        let base = (&data[..8]).get_i64();
        let len = (&data[BATCH_LENGTH_AT..BATCH_HEADER_PREFIX_BYTES]).get_i32();
        let total = BATCH_HEADER_PREFIX_BYTES + len.max(0) as usize;
        if data.len() < total || total < BATCH_LAST_OFFSET_DELTA_AT + 4 {
            break;
        }
        let mut batch = data.split_to(total);
        let delta = (&batch[BATCH_LAST_OFFSET_DELTA_AT..BATCH_LAST_OFFSET_DELTA_AT + 4]).get_i32();
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| CliError::Protocol {
            addr: addr.to_string(),
            detail: format!("record batch at offset {base}: {e}"),
        })?;
        out.push((base + delta as i64 + 1, set.records));
    }
    Ok(out)
}

/// A record, as consume prints it.
fn render(format: Format, topic: &str, partition: i32, r: &Record, out: &mut String) {
    let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    match format {
        Format::Text => {
            out.push_str(&format!(
                "{partition}\t{}\t{}\t{}\t{}\n",
                r.offset,
                r.timestamp,
                text(&r.key).unwrap_or_default(),
                text(&r.value).unwrap_or_default()
            ));
        }
        Format::Json => {
            let headers: Vec<_> = r
                .headers
                .iter()
                .map(|(k, v)| json!({"key": k.to_string(), "value": text(v)}))
                .collect();
            let line = json!({
                "topic": topic,
                "partition": partition,
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key": text(&r.key),
                "value": text(&r.value),
                "headers": headers,
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
    }
}

/// Where each partition starts: `start_at` resolved against the log, or the group's
/// committed offsets (falling back to the log start) when only a group is given.
pub fn resolve_start(
    client: &mut Client,
    meta: &MetadataResponseTopic,
    partitions: &[i32],
    start_at: StartAt,
) -> Result<HashMap<i32, i64>> {
    Ok(match start_at {
        StartAt::Start => client.list_offsets(meta, partitions, EARLIEST)?,
        StartAt::End => client.list_offsets(meta, partitions, LATEST)?,
        StartAt::Offset(o) => {
            // Clamped to the log, as a reset of Kafka's tools does: before the start is
            // the start, past the end is the end.
            let starts = client.list_offsets(meta, partitions, EARLIEST)?;
            let ends = client.list_offsets(meta, partitions, LATEST)?;
            partitions
                .iter()
                .map(|p| (*p, o.clamp(starts[p], ends[p])))
                .collect()
        }
        StartAt::Time(ms) => {
            let at = client.list_offsets(meta, partitions, ms)?;
            let ends = client.list_offsets(meta, partitions, LATEST)?;
            // No record that new: start at the end, where the next one will be.
            partitions
                .iter()
                .map(|p| (*p, if at[p] < 0 { ends[p] } else { at[p] }))
                .collect()
        }
    })
}

fn consume(
    client: &mut Client,
    format: Format,
    topic: &str,
    partition: Option<i32>,
    offset: Option<StartAt>,
    count: Option<u64>,
    group: Option<String>,
) -> Result<()> {
    let mut meta = client.topic_led(topic, partition)?;
    let partitions: Vec<i32> = match partition {
        Some(p) => vec![p],
        None => {
            let mut ps: Vec<i32> = meta.partitions.iter().map(|p| p.partition_index).collect();
            ps.sort_unstable();
            ps
        }
    };
    let mut position = match (offset, &group) {
        (Some(at), _) => resolve_start(client, &meta, &partitions, at)?,
        (None, Some(g)) => {
            let committed = group::committed(client, g)?;
            let mut pos = resolve_start(client, &meta, &partitions, StartAt::Start)?;
            for (p, o) in pos.iter_mut() {
                if let Some(&c) = committed.get(&(topic.to_string(), *p)) {
                    *o = c.max(*o);
                }
            }
            pos
        }
        (None, None) => resolve_start(client, &meta, &partitions, StartAt::Start)?,
    };
    let mut progress = Progress::new("consumed", count);
    let mut emitted = 0u64;
    let mut retries = 0u32;
    while count.is_none_or(|c| emitted < c) {
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in &partitions {
            by_leader.entry(leader_of(&meta, p)?.0).or_default().push(p);
        }
        let mut retry = None;
        for (leader, ps) in by_leader {
            let mut advanced = Vec::new();
            let mut out = String::new();
            let conn = client.node(BrokerId(leader))?;
            let addr = conn.addr.clone();
            let v = conn.version::<FetchRequest>()?;
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(CONSUMER_REPLICA_ID))
                .with_max_wait_ms(FETCH_MAX_WAIT_MS)
                .with_min_bytes(FETCH_MIN_BYTES)
                .with_max_bytes(FETCH_MAX_BYTES)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(name(topic))
                    .with_partitions(
                        ps.iter()
                            .map(|&p| {
                                FetchPartition::default()
                                    .with_partition(p)
                                    .with_fetch_offset(position[&p])
                                    .with_partition_max_bytes(FETCH_PARTITION_MAX_BYTES)
                            })
                            .collect(),
                    )]);
            let resp = conn.send(&req, v)?;
            check(resp.error_code, || format!("fetch from {topic}"), None)?;
            'parts: for t in resp.responses {
                for pd in t.partitions {
                    let p = pd.partition_index;
                    match ResponseError::try_from_code(pd.error_code) {
                        None => {}
                        Some(ResponseError::OffsetOutOfRange) => {
                            // Retention moved the log start past us: carry on from there.
                            let start = client.list_offsets(&meta, &[p], EARLIEST)?[&p];
                            eprintln!(
                                "sluice: {topic}/{p}: offset {} is gone (OFFSET_OUT_OF_RANGE); \
                                 continuing at the log start {start}",
                                position[&p]
                            );
                            position.insert(p, start);
                            continue;
                        }
                        Some(e) if e.is_retriable() => {
                            retry = Some(pd.error_code);
                            continue;
                        }
                        Some(_) => {
                            check(pd.error_code, || format!("fetch from {topic}/{p}"), None)?
                        }
                    }
                    let Some(records) = pd.records else { continue };
                    for (next, batch) in decode_batches(records, &addr)? {
                        for r in batch {
                            if r.control || r.offset < position[&p] {
                                continue;
                            }
                            render(format, topic, p, &r, &mut out);
                            position.insert(p, r.offset + 1);
                            emitted += 1;
                            if count.is_some_and(|c| emitted >= c) {
                                advanced.push(p);
                                break 'parts;
                            }
                        }
                        // Past records compaction removed from the end of the batch too.
                        let pos = position[&p].max(next);
                        position.insert(p, pos);
                    }
                    advanced.push(p);
                }
            }
            if !out.is_empty() {
                // Records and the progress line may share a terminal: records first, then
                // the counter again below them.
                progress.finish();
                output::print(&out)?;
            }
            progress.update(emitted);
            if let Some(g) = &group {
                if !out.is_empty() {
                    let offsets: Vec<(i32, i64)> =
                        advanced.iter().map(|p| (*p, position[p])).collect();
                    group::commit(client, g, topic, &offsets)?;
                }
            }
            if count.is_some_and(|c| emitted >= c) {
                break;
            }
        }
        if let Some(code) = retry {
            retries += 1;
            if retries > FETCH_RETRIES_MAX {
                check(code, || format!("fetch from {topic}"), None)?;
            }
            std::thread::sleep(FETCH_RETRY_BACKOFF);
            meta = client.topic_metadata(topic)?;
        } else {
            retries = 0;
        }
    }
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_java_client() {
        // Values from Kafka's own partitioner tests (Utils.murmur2).
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn decode_batches_keeps_a_partial_batch_for_later() {
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: i as i32 - 1,
                timestamp: 1,
                key: None,
                value: Some(Bytes::from(format!("v{i}"))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let opts = RecordEncodeOptions {
            version: RECORD_BATCH_VERSION,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &opts).unwrap();
        let one = buf.freeze();
        let mut two = one.to_vec();
        two.extend_from_slice(&one[..one.len() - 5]);
        let batches = decode_batches(Bytes::from(two), "test").unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].0, 3);
        assert_eq!(batches[0].1.len(), 3);
    }
}
