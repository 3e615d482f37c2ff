//! Hostile, random and damaged requests against `decode_request`: it must never panic, and
//! never reserve memory out of proportion to the frame.
//!
//! This is an integration test (its own binary) because it installs a global allocator that
//! records the largest single allocation each thread asks for: the failure it looks for is an
//! up-front `Vec::with_capacity` from a declared length, which succeeds (virtually) on a big
//! machine and aborts the process on a small one, so "did not crash here" proves nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use sluice_protocol::kafka_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig,
};
use sluice_protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_protocol::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use sluice_protocol::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use sluice_protocol::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use sluice_protocol::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use sluice_protocol::kafka_protocol::messages::{
    ApiVersionsRequest, CreateTopicsRequest, FetchRequest, JoinGroupRequest, MetadataRequest,
    OffsetCommitRequest, ProduceRequest, TopicName,
};
use sluice_protocol::kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_protocol::{
    decode_request, ApiKey, DecodeError, RequestHeader, RequestKind, VersionRange, VersionTable,
};

/// The most any single allocation may take while decoding the small (< 1 KiB) requests of
/// these tests. Far above what they legitimately need, and far below what an unguarded
/// declared length reserves (gigabytes).
const DECODE_ALLOCATION_MAX_BYTES: usize = 4 * 1024 * 1024;

struct LargestAllocation;

thread_local! {
    static LARGEST_ALLOCATION_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(size: usize) {
    // `try_with`: allocations during thread teardown have nowhere to be noted.
    let _ = LARGEST_ALLOCATION_BYTES.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: forwards every call unchanged to the system allocator; the bookkeeping touches only
// a const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Runs `f` and returns its result with the largest single allocation it made.
fn largest_allocation_in<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST_ALLOCATION_BYTES.with(|largest| largest.set(0));
    let result = f();
    (result, LARGEST_ALLOCATION_BYTES.with(Cell::get))
}

/// Every API kafka-protocol knows, at every version it can decode.
fn every_api() -> VersionTable {
    VersionTable::new(ApiKey::iter().map(|api_key| (api_key, VersionRange::new(0, i16::MAX))))
        .expect("a table of every API")
}

/// Decodes `frame` with every API served and checks the allocation bound.
fn decode_bounded(frame: Bytes) -> Result<RequestKind, DecodeError> {
    let table = every_api();
    let (result, largest_bytes) = largest_allocation_in(|| decode_request(frame, &table));
    assert!(
        largest_bytes <= DECODE_ALLOCATION_MAX_BYTES,
        "decoding reserved {largest_bytes} bytes at once: {result:?}"
    );
    result.map(|request| request.body)
}

fn header(api_key: ApiKey, version: i16) -> BytesMut {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut buf, api_key.request_header_version(version))
        .expect("header encodes");
    buf
}

fn frame(api_key: ApiKey, version: i16, body: &RequestKind) -> Bytes {
    let mut buf = header(api_key, version);
    body.encode(&mut buf, version).expect("request encodes");
    buf.freeze()
}

fn name(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

/// Real requests, as clients encode them, with a few elements in each array, across
/// flexible and non-flexible versions.
fn real_requests() -> Vec<Bytes> {
    let produce = |version: i16| {
        let mut topic = TopicProduceData::default().with_partition_data(vec![
            PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from_static(&[0xab; 70]))),
            PartitionProduceData::default()
                .with_index(1)
                .with_records(None),
        ]);
        if version < 13 {
            topic = topic.with_name(name("orders"));
        }
        RequestKind::Produce(
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![topic]),
        )
    };
    let fetch = |version: i16| {
        let mut topic = FetchTopic::default().with_partitions(vec![
            FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(1 << 40)
                .with_partition_max_bytes(1 << 20),
            FetchPartition::default().with_partition(7),
        ]);
        if version < 13 {
            topic = topic.with_topic(name("orders"));
        }
        RequestKind::Fetch(
            FetchRequest::default()
                .with_max_wait_ms(500)
                .with_max_bytes(50 << 20)
                .with_topics(vec![topic]),
        )
    };
    let metadata = RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name("a"))),
        MetadataRequestTopic::default().with_name(Some(name("bb"))),
    ])));
    let create_topics = RequestKind::CreateTopics(
        CreateTopicsRequest::default()
            .with_timeout_ms(60_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name("new"))
                .with_num_partitions(3)
                .with_replication_factor(1)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("1000")))])]),
    );
    let join_group = RequestKind::JoinGroup(
        JoinGroupRequest::default()
            .with_session_timeout_ms(45_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(&[0, 3, 0, 0, 0, 1]))]),
    );
    let offset_commit = RequestKind::OffsetCommit(
        OffsetCommitRequest::default()
            .with_generation_id_or_member_epoch(3)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(name("orders"))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(1 << 33)])]),
    );
    let api_versions = RequestKind::ApiVersions(
        ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-fuzz"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    );
    let mut requests = Vec::new();
    for version in [3, 8, 9, 12, 13] {
        requests.push(frame(ApiKey::Produce, version, &produce(version)));
    }
    for version in [4, 11, 12, 13, 18] {
        requests.push(frame(ApiKey::Fetch, version, &fetch(version)));
    }
    for version in [1, 8, 9, 12] {
        requests.push(frame(ApiKey::Metadata, version, &metadata));
    }
    for version in [2, 4, 5, 7] {
        requests.push(frame(ApiKey::CreateTopics, version, &create_topics));
    }
    for version in [5, 6, 9] {
        requests.push(frame(ApiKey::JoinGroup, version, &join_group));
    }
    for version in [2, 7, 8, 9] {
        requests.push(frame(ApiKey::OffsetCommit, version, &offset_commit));
    }
    requests.push(frame(ApiKey::ApiVersions, 3, &api_versions));
    requests
}

#[test]
fn real_requests_decode() {
    for request in real_requests() {
        if let Err(error) = decode_bounded(request) {
            panic!("a real request failed: {error}");
        }
    }
}

#[test]
fn every_truncation_of_a_real_request_is_refused_without_panicking() {
    for request in real_requests() {
        for len in 0..request.len() {
            // Some prefixes are themselves valid (e.g. cut after a complete tagged-field
            // section); the point is that none panics or over-reserves.
            let _ = decode_bounded(request.slice(..len));
        }
    }
}

/// The failure the guard exists for, shown on kafka-protocol alone: an 8-byte Metadata v0
/// body (null client id aside) declaring 2^20 topics makes the decoder reserve room for all
/// of them before it notices there are none. (2^20, not 2^31, so the test itself cannot
/// abort.) If an upgrade makes this fail, kafka-protocol bounds its own pre-allocation and
/// the guard may be retired.
#[test]
fn unguarded_kafka_protocol_reserves_for_declared_lengths() {
    let declared_topics: i32 = 1 << 20;
    let mut body = BytesMut::new();
    body.put_i32(declared_topics);
    let mut body = body.freeze();
    let (result, largest_bytes) =
        largest_allocation_in(|| RequestKind::decode(ApiKey::Metadata, &mut body, 0));
    assert!(result.is_err());
    let reserved_bytes = declared_topics as usize * std::mem::size_of::<MetadataRequestTopic>();
    assert!(
        largest_bytes >= reserved_bytes,
        "kafka-protocol reserved only {largest_bytes} bytes for {declared_topics} topics"
    );
}

/// Frames whose only fault is one enormous declared length, in each encoding.
fn hostile_frames() -> Vec<(&'static str, Bytes)> {
    let mut frames = Vec::new();
    let mut add = |what: &'static str, api_key: ApiKey, version: i16, body: &[u8]| {
        let mut buf = header(api_key, version);
        buf.put_slice(body);
        frames.push((what, buf.freeze()));
    };
    let max_i32 = i32::MAX.to_be_bytes();
    let max_varint = [0xff, 0xff, 0xff, 0xff, 0x0f];

    add("Metadata v0 topics: i32", ApiKey::Metadata, 0, &max_i32);
    let mut produce_v3 = vec![0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30]; // null txn id, acks, timeout
    produce_v3.extend_from_slice(&max_i32);
    add("Produce v3 topics: i32", ApiKey::Produce, 3, &produce_v3);
    let mut produce_v3_nested = vec![0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30, 0, 0, 0, 1, 0, 1, b't'];
    produce_v3_nested.extend_from_slice(&max_i32);
    add(
        "Produce v3 partitions: i32",
        ApiKey::Produce,
        3,
        &produce_v3_nested,
    );
    let mut fetch_v4 = vec![
        0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0xf4, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff, 0,
    ];
    fetch_v4.extend_from_slice(&max_i32);
    add("Fetch v4 topics: i32", ApiKey::Fetch, 4, &fetch_v4);

    add(
        "Metadata v12 topics: varint",
        ApiKey::Metadata,
        12,
        &max_varint,
    );
    let mut produce_v9 = vec![0x00, 0, 1, 0, 0, 0x75, 0x30]; // null compact txn id
    produce_v9.extend_from_slice(&max_varint);
    add("Produce v9 topics: varint", ApiKey::Produce, 9, &produce_v9);
    let mut produce_v9_nested = vec![0x00, 0, 1, 0, 0, 0x75, 0x30, 0x02, 0x02, b't'];
    produce_v9_nested.extend_from_slice(&max_varint);
    add(
        "Produce v9 partitions: varint",
        ApiKey::Produce,
        9,
        &produce_v9_nested,
    );
    let mut create_topics_v5 = vec![0x02, 0x02, b't', 0, 0, 0, 1, 0, 1, 0x01];
    create_topics_v5.extend_from_slice(&max_varint);
    add(
        "CreateTopics v5 configs: varint",
        ApiKey::CreateTopics,
        5,
        &create_topics_v5,
    );
    // Tagged fields: a count, then a size, each far beyond the frame.
    add(
        "ApiVersions v3 tagged count",
        ApiKey::ApiVersions,
        3,
        &[0x01, 0x01, 0xff, 0xff, 0xff, 0x7f],
    );
    add(
        "ApiVersions v3 tagged size",
        ApiKey::ApiVersions,
        3,
        &[0x01, 0x01, 0x01, 0x09, 0xff, 0xff, 0xff, 0x7f],
    );
    frames
}

#[test]
fn hostile_declared_lengths_are_refused_within_bounds() {
    for (what, frame) in hostile_frames() {
        match decode_bounded(frame) {
            Err(DecodeError::Malformed { .. }) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
}

fn api_keys() -> Vec<ApiKey> {
    ApiKey::iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Random bytes behind a random 8-byte start: reaches the header decoder with garbage.
    #[test]
    fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_bounded(Bytes::from(bytes));
    }

    /// A valid header for every API and version, then random bytes: reaches every body
    /// decoder with garbage, in flexible and non-flexible versions.
    #[test]
    fn random_bodies_never_panic(
        key_index in 0..api_keys().len(),
        version_offset in 0i16..20,
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let api_key = api_keys()[key_index];
        let range = api_key.valid_versions();
        let version = range.min + version_offset % (range.max - range.min + 1);
        let mut buf = header(api_key, version);
        buf.put_slice(&body);
        let _ = decode_bounded(buf.freeze());
    }

    /// Real requests with bytes overwritten, inserted and cut: garbage that mostly looks
    /// like Kafka, which is what reaches deep into nested arrays.
    #[test]
    fn damaged_real_requests_never_panic(
        request_index in 0..real_requests().len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = real_requests()[request_index].to_vec();
        for (at, byte, kind) in edits {
            let at = at.index(bytes.len() + 1);
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => { bytes.remove(at); }
                _ => {}
            }
        }
        let keep = cut.index(bytes.len() + 1).max(bytes.len() / 2);
        bytes.truncate(keep);
        let _ = decode_bounded(Bytes::from(bytes));
    }
}
