//! A small blocking Kafka client for the CLI: one `TcpStream` per broker, versions
//! negotiated with ApiVersions, requests routed to partition leaders (from Metadata) and
//! group coordinators (from FindCoordinator). Short-lived by design: no background threads,
//! no glommio, no retries beyond what a human would do by running the command again.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, FindCoordinatorRequest, ListOffsetsRequest,
    MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, HeaderVersion, Request, StrBytes,
};

/// How long to wait for a TCP connection to a broker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may wait for its response; longer than any `max_wait_ms` or
/// `timeout_ms` the CLI sends, so a slow broker answers before we give up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response frame accepted; a fetch asks for at most `FETCH_MAX_BYTES`, so this
/// only trips on a corrupt length prefix.
const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// `timeout_ms` given to brokers for admin operations and acks=all produce.
pub const BROKER_TIMEOUT_MS: i32 = 30_000;
/// The client id brokers see in logs and group descriptions.
const CLIENT_ID: &str = "sluice-cli";

/// Everything that can make a CLI command fail; each renders as one line naming the cause.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach broker {addr}: {source}")]
    Unreachable { addr: String, source: io::Error },
    #[error("broker {addr} closed or broke the connection: {source}")]
    Connection { addr: String, source: io::Error },
    #[error("{what}: refused by the broker: {}{}", error_name(*.code), .message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Refused {
        what: String,
        code: i16,
        message: Option<String>,
    },
    /// What the client found missing in the broker's answers (a partition Metadata does not
    /// list), named with the Kafka error a broker would give for it.
    #[error("{what}: {}", error_name(*.code))]
    Missing { what: String, code: i16 },
    #[error("broker {addr} does not support {api:?} in any version this client speaks")]
    Unsupported { addr: String, api: ApiKey },
    #[error("broker {addr} sent a response this client cannot decode: {detail}")]
    Protocol { addr: String, detail: String },
    #[error("{0}")]
    Usage(String),
    #[error("cluster is unhealthy: {0}")]
    Unhealthy(String),
    #[error("{what}: {source}")]
    Local { what: String, source: io::Error },
}

pub type Result<T> = std::result::Result<T, CliError>;

/// Kafka's name for an error code (`UNKNOWN_TOPIC_OR_PARTITION`), as its tools print it.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("error code {c}"),
        Some(e) => {
            // kafka-protocol names errors in CamelCase; Kafka's wire docs use SCREAMING_SNAKE.
            let camel = e.to_string();
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}

/// `Err(Refused)` unless `code` is 0.
pub fn check(code: i16, what: impl FnOnce() -> String, message: Option<&StrBytes>) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    Err(CliError::Refused {
        what: what(),
        code,
        message: message.map(|m| m.to_string()).filter(|m| !m.is_empty()),
    })
}

/// A topic name for a request.
pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A string field for a request.
pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The highest version of each API this client can build requests for: what kafka-protocol
/// knows, except Produce and Fetch stay at v12, the last versions that name topics (v13
/// uses topic ids), and OffsetFetch at v7, the last with one group per request (v8 batches
/// groups). Kafka 3.x and 4.x and Sluice all serve those versions.
fn client_max(api: ApiKey, codec_max: i16) -> i16 {
    match api {
        ApiKey::Produce | ApiKey::Fetch => TOPIC_NAME_VERSION_MAX,
        ApiKey::OffsetFetch => OFFSET_FETCH_ONE_GROUP_VERSION_MAX,
        _ => codec_max,
    }
}
const TOPIC_NAME_VERSION_MAX: i16 = 12;
const OFFSET_FETCH_ONE_GROUP_VERSION_MAX: i16 = 7;

/// One connection to one broker, with the versions it advertised.
pub struct Conn {
    pub addr: String,
    stream: TcpStream,
    versions: HashMap<i16, (i16, i16)>,
    correlation_id: i32,
}

impl Conn {
    /// Connects to `addr` (`host:port`) and asks for its API versions.
    pub fn connect(addr: &str) -> Result<Conn> {
        let unreachable = |source| CliError::Unreachable {
            addr: addr.to_string(),
            source,
        };
        let sockaddrs: Vec<_> = addr.to_socket_addrs().map_err(unreachable)?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to nothing");
        let mut stream = None;
        for a in sockaddrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| unreachable(last))?;
        let setup = stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .and_then(|_| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
            .and_then(|_| stream.set_nodelay(true));
        setup.map_err(unreachable)?;
        let mut conn = Conn {
            addr: addr.to_string(),
            stream,
            versions: HashMap::new(),
            correlation_id: 0,
        };
        // v0 because every broker answers it whatever it supports; its answer lists the rest.
        let resp = conn.send(&ApiVersionsRequest::default(), 0)?;
        check(resp.error_code, || format!("ApiVersions to {addr}"), None)?;
        conn.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// The highest version of `R` both this client and the broker support.
    pub fn version<R: Request>(&self) -> Result<i16> {
        let api = ApiKey::try_from(R::KEY).expect("kafka-protocol requests have known keys");
        let unsupported = || CliError::Unsupported {
            addr: self.addr.clone(),
            api,
        };
        let (bmin, bmax) = *self.versions.get(&R::KEY).ok_or_else(unsupported)?;
        let v = bmax.min(client_max(api, R::VERSIONS.max));
        if v < bmin.max(R::VERSIONS.min) {
            return Err(unsupported());
        }
        Ok(v)
    }

    /// Sends `req` at `version` and waits for its response.
    pub fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut body = BytesMut::new();
        let encoded = encode_request_header_into_buffer(&mut body, &header)
            .and_then(|_| req.encode(&mut body, version));
        // Only a bug here builds a request its own version cannot carry.
        encoded.unwrap_or_else(|e| panic!("encoding {:?} v{version}: {e}", R::KEY));
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(&body);
        let broken = |source| CliError::Connection {
            addr: self.addr.clone(),
            source,
        };
        self.stream.write_all(&frame).map_err(broken)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(broken)?;
        let len = i32::from_be_bytes(len);
        if len < 0 || len as usize > RESPONSE_BYTES_MAX {
            return Err(self.protocol(format!("response length {len}")));
        }
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf).map_err(broken)?;
        let mut buf = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .map_err(|e| self.protocol(e.to_string()))?;
        if header.correlation_id != self.correlation_id {
            return Err(self.protocol(format!(
                "correlation id {} for request {}",
                header.correlation_id, self.correlation_id
            )));
        }
        R::Response::decode(&mut buf, version).map_err(|e| self.protocol(e.to_string()))
    }

    fn protocol(&self, detail: String) -> CliError {
        CliError::Protocol {
            addr: self.addr.clone(),
            detail,
        }
    }
}

/// Connections to the brokers of one cluster, opened on first use.
pub struct Client {
    bootstrap: Vec<String>,
    /// By `host:port`.
    conns: HashMap<String, Conn>,
    /// Node id to `host:port`, from the last Metadata answer.
    nodes: HashMap<BrokerId, String>,
}

impl Client {
    pub fn new(bootstrap: Vec<String>) -> Client {
        Client {
            bootstrap,
            conns: HashMap::new(),
            nodes: HashMap::new(),
        }
    }

    /// A connection to `addr`, opened if need be.
    pub fn conn_to(&mut self, addr: &str) -> Result<&mut Conn> {
        if !self.conns.contains_key(addr) {
            let c = Conn::connect(addr)?;
            self.conns.insert(addr.to_string(), c);
        }
        Ok(self.conns.get_mut(addr).expect("inserted above"))
    }

    /// A connection to any bootstrap broker: the first that answers.
    pub fn any(&mut self) -> Result<&mut Conn> {
        if let Some(addr) = self.bootstrap.iter().find(|a| self.conns.contains_key(*a)) {
            let addr = addr.clone();
            return self.conn_to(&addr);
        }
        let mut first_err = None;
        for addr in self.bootstrap.clone() {
            match Conn::connect(&addr) {
                Ok(c) => {
                    self.conns.insert(addr.clone(), c);
                    return self.conn_to(&addr);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| CliError::Usage("--brokers lists no broker".into())))
    }

    /// A connection to broker `node` (known from an earlier `metadata` call).
    pub fn node(&mut self, node: BrokerId) -> Result<&mut Conn> {
        let addr = self
            .nodes
            .get(&node)
            .cloned()
            .ok_or_else(|| CliError::Protocol {
                addr: self.bootstrap.join(","),
                detail: format!("Metadata does not list broker {}", node.0),
            })?;
        self.conn_to(&addr)
    }

    /// Node ids and addresses of every broker, from the last Metadata answer.
    pub fn node_addrs(&self) -> &HashMap<BrokerId, String> {
        &self.nodes
    }

    /// Metadata for `topics` (all topics if `None`); remembers the brokers it lists.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        let conn = self.any()?;
        let v = conn.version::<MetadataRequest>()?;
        let mut req = MetadataRequest::default();
        req.topics = match topics {
            Some(ts) => Some(
                ts.iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
                    .collect(),
            ),
            // v0 has no null: an empty list means every topic there.
            None if v == 0 => Some(Vec::new()),
            None => None,
        };
        if v >= 4 {
            // An admin tool must not create the topics it looks at.
            req.allow_auto_topic_creation = false;
        }
        let resp = conn.send(&req, v)?;
        self.nodes = resp
            .brokers
            .iter()
            .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
            .collect();
        Ok(resp)
    }

    /// Metadata of one topic, failing with the broker's error (UNKNOWN_TOPIC_OR_PARTITION for
    /// a topic that does not exist).
    pub fn topic_metadata(&mut self, topic: &str) -> Result<MetadataResponseTopic> {
        retrying(|| self.topic_metadata_once(topic))
    }

    /// Metadata of a topic whose partitions (or partition `only`) all have a leader, waiting
    /// (bounded) for a new topic's leaders; for commands that must reach them.
    pub fn topic_led(&mut self, topic: &str, only: Option<i32>) -> Result<MetadataResponseTopic> {
        retrying(|| {
            let t = self.topic_metadata_once(topic)?;
            match only {
                Some(p) => leader_of(&t, p).map(|_| ())?,
                None => {
                    for p in &t.partitions {
                        leader_of(&t, p.partition_index)?;
                    }
                }
            }
            Ok(t)
        })
    }

    fn topic_metadata_once(&mut self, topic: &str) -> Result<MetadataResponseTopic> {
        let resp = self.metadata(Some(&[topic.to_string()]))?;
        let t = resp
            .topics
            .into_iter()
            .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(topic))
            .ok_or_else(|| CliError::Missing {
                what: format!("topic {topic} does not exist"),
                code: ResponseError::UnknownTopicOrPartition.code(),
            })?;
        check(t.error_code, || format!("topic {topic}"), None)?;
        Ok(t)
    }

    /// The coordinator of `group`, via FindCoordinator, waiting (bounded) while the broker
    /// is still electing or loading it.
    pub fn coordinator(&mut self, group: &str) -> Result<&mut Conn> {
        let addr = retrying(|| self.find_coordinator(group))?;
        self.conn_to(&addr)
    }

    fn find_coordinator(&mut self, group: &str) -> Result<String> {
        let conn = self.any()?;
        let v = conn.version::<FindCoordinatorRequest>()?;
        let mut req = FindCoordinatorRequest::default();
        // v4 batched the keys; the answer's shape follows.
        if v >= 4 {
            req.coordinator_keys = vec![str_bytes(group)];
        } else {
            req.key = str_bytes(group);
        }
        let resp = conn.send(&req, v)?;
        let what = || format!("find the coordinator of group {group}");
        let addr = if v >= 4 {
            let c = resp
                .coordinators
                .first()
                .ok_or_else(|| CliError::Protocol {
                    addr: conn.addr.clone(),
                    detail: "FindCoordinator answered no coordinator".into(),
                })?;
            check(c.error_code, what, c.error_message.as_ref())?;
            format!("{}:{}", c.host, c.port)
        } else {
            check(resp.error_code, what, resp.error_message.as_ref())?;
            format!("{}:{}", resp.host, resp.port)
        };
        Ok(addr)
    }
}

/// Errors that only mean "not yet": Kafka answers the first FindCoordinator with
/// COORDINATOR_NOT_AVAILABLE while it creates `__consumer_offsets`, a coordinator loads its
/// groups after a restart, and a new topic's leaders take a moment to appear.
const TRANSIENT_ERRORS: &[ResponseError] = &[
    ResponseError::LeaderNotAvailable,
    ResponseError::NotLeaderOrFollower,
    ResponseError::CoordinatorLoadInProgress,
    ResponseError::CoordinatorNotAvailable,
    ResponseError::NotCoordinator,
];
/// Attempts of an operation that keeps failing with a transient error, and the pause
/// between them: 20 × 250 ms gives a cluster 5 s to settle before the error is shown.
pub const TRANSIENT_ATTEMPTS_MAX: u32 = 20;
pub const TRANSIENT_BACKOFF: Duration = Duration::from_millis(250);

/// True for an error code in `TRANSIENT_ERRORS`.
pub fn is_transient(code: i16) -> bool {
    TRANSIENT_ERRORS.iter().any(|e| e.code() == code)
}

impl CliError {
    fn is_transient(&self) -> bool {
        match self {
            CliError::Refused { code, .. } | CliError::Missing { code, .. } => is_transient(*code),
            _ => false,
        }
    }
}

/// Runs `op` until it succeeds or fails with something other than a transient error, at
/// most `TRANSIENT_ATTEMPTS_MAX` times.
pub fn retrying<T>(mut op: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 1;
    loop {
        match op() {
            Err(e) if e.is_transient() && attempt < TRANSIENT_ATTEMPTS_MAX => {
                attempt += 1;
                std::thread::sleep(TRANSIENT_BACKOFF);
            }
            r => return r,
        }
    }
}

/// ListOffsets' query for the earliest offset (the log start).
pub const EARLIEST: i64 = -2;
/// ListOffsets' query for the latest offset (the high watermark).
pub const LATEST: i64 = -1;

impl Client {
    /// The offset each partition of `topic` has for `query` (`EARLIEST`, `LATEST`, or a
    /// timestamp in ms, which gives -1 where no record is that new), asking each leader once.
    /// A leader that is not ready yet (Kafka, just after add-partitions) is asked again, as
    /// fresh metadata names it, within the transient-error bound.
    pub fn list_offsets(
        &mut self,
        topic: &MetadataResponseTopic,
        partitions: &[i32],
        query: i64,
    ) -> Result<HashMap<i32, i64>> {
        let mut attempt = 1;
        let mut fresh = None;
        loop {
            let meta = fresh.as_ref().unwrap_or(topic);
            match self.list_offsets_once(meta, partitions, query) {
                Err(e) if e.is_transient() && attempt < TRANSIENT_ATTEMPTS_MAX => {
                    attempt += 1;
                    std::thread::sleep(TRANSIENT_BACKOFF);
                    let tname = topic.name.as_ref().map(|n| n.to_string());
                    fresh = Some(self.topic_metadata(&tname.unwrap_or_default())?);
                }
                r => return r,
            }
        }
    }

    fn list_offsets_once(
        &mut self,
        topic: &MetadataResponseTopic,
        partitions: &[i32],
        query: i64,
    ) -> Result<HashMap<i32, i64>> {
        let tname = topic
            .name
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_default();
        let mut by_leader: HashMap<BrokerId, Vec<i32>> = HashMap::new();
        for &p in partitions {
            by_leader.entry(leader_of(topic, p)?).or_default().push(p);
        }
        let mut out = HashMap::new();
        for (leader, ps) in by_leader {
            let conn = self.node(leader)?;
            let v = conn.version::<ListOffsetsRequest>()?;
            let mut t = ListOffsetsTopic::default().with_name(name(&tname));
            t.partitions = ps
                .iter()
                .map(|&p| {
                    ListOffsetsPartition::default()
                        .with_partition_index(p)
                        .with_timestamp(query)
                })
                .collect();
            let mut req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(CONSUMER_REPLICA_ID))
                .with_topics(vec![t]);
            if v >= 10 {
                req.timeout_ms = BROKER_TIMEOUT_MS;
            }
            let resp = conn.send(&req, v)?;
            for rt in resp.topics {
                for rp in rt.partitions {
                    let p = rp.partition_index;
                    check(
                        rp.error_code,
                        || format!("list offsets of {tname}/{p}"),
                        None,
                    )?;
                    out.insert(p, rp.offset);
                }
            }
        }
        Ok(out)
    }
}

/// The replica id of a consumer (not a follower) in Fetch and ListOffsets.
pub const CONSUMER_REPLICA_ID: i32 = -1;

/// The leader of partition `p` of `topic`, or the error that names why there is none.
pub fn leader_of(topic: &MetadataResponseTopic, p: i32) -> Result<BrokerId> {
    let tname = topic
        .name
        .as_ref()
        .map(|n| n.to_string())
        .unwrap_or_default();
    let part = topic
        .partitions
        .iter()
        .find(|x| x.partition_index == p)
        .ok_or_else(|| CliError::Missing {
            what: format!("topic {tname} has no partition {p}"),
            code: ResponseError::UnknownTopicOrPartition.code(),
        })?;
    if part.leader_id.0 < 0 {
        return Err(CliError::Missing {
            what: format!("topic {tname} partition {p} has no leader"),
            code: ResponseError::LeaderNotAvailable.code(),
        });
    }
    Ok(part.leader_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(9999), "error code 9999");
    }
}
