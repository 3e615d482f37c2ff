//! Decoding a request frame body into its header and typed body.
//!
//! The order of checks follows what the broker must answer:
//!
//! 1. The first 8 bytes (API key, API version, correlation id) have the same layout in every
//!    header version, so they are read before anything can fail to decode. Every later error
//!    carries the correlation id, and an ApiVersions request of a version this broker has
//!    never heard of can still be answered (see [`DecodeError::UnsupportedVersion`]).
//! 2. The API key and version are checked against the broker's [`VersionTable`] *before*
//!    the body is decoded, so only registered (API, version) pairs ever reach a decoder.
//! 3. The header is decoded with the version its API and version call for (v2, with tagged
//!    fields, for flexible versions; v1 otherwise).
//! 4. The body is decoded through a guard that keeps hostile array lengths from reserving
//!    unbounded memory; see the `guard` module for what kafka-protocol does and why this is
//!    enough.
//!
//! Nothing here panics on any input; the `hostile_input` test feeds it random and truncated
//! requests for every API and version.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

use crate::apis;
use crate::framing::REQUEST_HEADER_FIXED_BYTES;
use crate::guard::GuardedBuf;
use crate::versions::VersionTable;

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The API, from the header.
    pub api_key: ApiKey,
    /// The API version the client used; the response must be encoded with the same one.
    pub api_version: i16,
    /// The full header, including `correlation_id` and `client_id`.
    pub header: RequestHeader,
    /// The body; its variant always matches `api_key`.
    pub body: RequestKind,
}

impl Request {
    /// The id the response must carry.
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// Why a request body could not be decoded.
///
/// What Kafka does with each: only an unsupported ApiVersions version gets an answer
/// ([`VersionTable::encode_unsupported_version_response`]); everything else closes the
/// connection, because the client and broker no longer agree on what the bytes mean.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is shorter than the fixed 8-byte start of every request header. (A frame
    /// checked by [`request_body_len`](crate::framing::request_body_len) never is.)
    #[error("request of {len} bytes has no room for a header")]
    TooShort {
        /// The body's length.
        len: usize,
    },
    /// The API key is not one kafka-protocol knows, or the broker has not registered it.
    #[error("unknown or unserved API key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey {
        /// The key as sent.
        api_key: i16,
        /// The request's correlation id.
        correlation_id: i32,
    },
    /// The API is served, but not at this version. If `api_key` is ApiVersions, answer with
    /// [`VersionTable::encode_unsupported_version_response`]: new clients open with the
    /// newest ApiVersions they know and retry with the broker's max from that answer.
    #[error("{api_key:?} v{version} is not supported (correlation id {correlation_id})")]
    UnsupportedVersion {
        /// The API.
        api_key: ApiKey,
        /// The version as sent.
        version: i16,
        /// The request's correlation id.
        correlation_id: i32,
    },
    /// A supported API and version whose header or body does not decode.
    #[error(
        "malformed {api_key:?} v{version} request (correlation id {correlation_id}): {reason}"
    )]
    Malformed {
        /// The API.
        api_key: ApiKey,
        /// The version.
        version: i16,
        /// The request's correlation id.
        correlation_id: i32,
        /// What was wrong.
        reason: MalformedReason,
    },
}

impl DecodeError {
    /// The correlation id, when the request was long enough to carry one.
    pub fn correlation_id(&self) -> Option<i32> {
        match *self {
            DecodeError::TooShort { .. } => None,
            DecodeError::UnknownApiKey { correlation_id, .. }
            | DecodeError::UnsupportedVersion { correlation_id, .. }
            | DecodeError::Malformed { correlation_id, .. } => Some(correlation_id),
        }
    }
}

/// What made a request malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedReason {
    /// The request header did not decode (kafka-protocol's explanation).
    #[error("bad header: {0}")]
    Header(String),
    /// The body did not decode (kafka-protocol's explanation).
    #[error("bad body: {0}")]
    Body(String),
    /// A declared length (array count, string or bytes length, tagged field) is larger than
    /// what is left of the frame; refused before kafka-protocol could reserve memory for it.
    #[error("declared length {declared} exceeds the {remaining_bytes} bytes left")]
    LengthExceedsFrame {
        /// The length as declared on the wire (for compact encodings, count + 1).
        declared: u32,
        /// Bytes left in the body after the length.
        remaining_bytes: usize,
    },
}

/// Decodes one request frame body (the bytes after the length prefix).
///
/// `versions` is the broker's table of served APIs; requests outside it are refused before
/// their body is read. The returned body shares `frame_body`'s memory: record batches in a
/// Produce request are slices of it, not copies.
pub fn decode_request(frame_body: Bytes, versions: &VersionTable) -> Result<Request, DecodeError> {
    let Some(fixed) = frame_body.first_chunk::<REQUEST_HEADER_FIXED_BYTES>() else {
        return Err(DecodeError::TooShort {
            len: frame_body.len(),
        });
    };
    let raw_api_key = i16::from_be_bytes([fixed[0], fixed[1]]);
    let api_version = i16::from_be_bytes([fixed[2], fixed[3]]);
    let correlation_id = i32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);

    let api_key = ApiKey::try_from(raw_api_key)
        .ok()
        .filter(|&api_key| versions.range(api_key).is_some())
        .ok_or(DecodeError::UnknownApiKey {
            api_key: raw_api_key,
            correlation_id,
        })?;
    if !versions.supports(api_key, api_version) {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            version: api_version,
            correlation_id,
        });
    }
    let malformed = |reason| DecodeError::Malformed {
        api_key,
        version: api_version,
        correlation_id,
        reason,
    };

    let header_version = api_key.request_header_version(api_version);
    let mut rest = frame_body;
    // The header has no arrays, so it needs no guard: its strings check their lengths.
    let header = RequestHeader::decode(&mut rest, header_version)
        .map_err(|error| malformed(MalformedReason::Header(format!("{error:#}"))))?;

    let flexible_version = header_version >= 2;
    let mut guarded = GuardedBuf::new(rest.clone(), flexible_version);
    let body = match apis::decode_request_body(api_key, &mut guarded, api_version) {
        Ok(body) if guarded.substituted_reads() == 0 => body,
        Ok(_) => {
            // The guard replaced some large `i32` values, and the decode still succeeded, so
            // none of them was a length: decoding the real bytes is now bounded. Only
            // non-flexible versions get here.
            RequestKind::decode(api_key, &mut rest, api_version)
                .map_err(|error| malformed(MalformedReason::Body(format!("{error:#}"))))?
        }
        Err(detail) => {
            return Err(malformed(match guarded.violation() {
                Some(violation) => MalformedReason::LengthExceedsFrame {
                    declared: violation.declared,
                    remaining_bytes: violation.remaining_bytes,
                },
                None => MalformedReason::Body(detail),
            }))
        }
    };
    Ok(Request {
        api_key,
        api_version,
        header,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::VersionRange;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiVersionsRequest, FetchRequest, MetadataRequest, ProduceRequest, TopicName,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn table() -> VersionTable {
        VersionTable::new([
            (ApiKey::ApiVersions, VersionRange::new(0, 4)),
            (ApiKey::Metadata, VersionRange::new(0, 12)),
            (ApiKey::Produce, VersionRange::new(3, 13)),
            (ApiKey::Fetch, VersionRange::new(4, 18)),
        ])
        .unwrap()
    }

    /// A request body as a client would send it, built with kafka-protocol's encoders.
    fn encode(api_key: ApiKey, version: i16, correlation_id: i32, body: &RequestKind) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("sluice-test")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, api_key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    fn produce(records: &'static [u8]) -> ProduceRequest {
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(3)
                    .with_records(Some(Bytes::from_static(records)))])])
    }

    fn fetch() -> FetchRequest {
        FetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(52_428_800)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(3)
                    .with_fetch_offset(1_000_000)
                    .with_partition_max_bytes(1_048_576)])])
    }

    fn check_round_trip(api_key: ApiKey, version: i16, body: RequestKind) {
        let frame = encode(api_key, version, 77, &body);
        let request = decode_request(frame, &table())
            .unwrap_or_else(|error| panic!("{api_key:?} v{version}: {error}"));
        assert_eq!(request.api_key, api_key);
        assert_eq!(request.api_version, version);
        assert_eq!(request.correlation_id(), 77);
        assert_eq!(request.header.request_api_key, api_key as i16);
        assert_eq!(request.header.client_id.as_deref(), Some("sluice-test"));
        assert_eq!(request.body, body, "{api_key:?} v{version}");
    }

    #[test]
    fn decodes_produce_at_every_version() {
        // v3..=8 are non-flexible: their large i32 fields (timeout 30000 in a short body)
        // take the guard's second pass and must still come out exact.
        for version in 3..=13 {
            let mut body = produce(b"not really a record batch");
            if version >= 13 {
                // v13 names topics by id only (a nil id is fine for the codec).
                body.topic_data[0].name = TopicName::default();
            }
            check_round_trip(ApiKey::Produce, version, RequestKind::Produce(body));
        }
    }

    #[test]
    fn non_flexible_requests_with_large_fields_take_an_exact_second_pass() {
        let frame = encode(ApiKey::Produce, 3, 1, &RequestKind::Produce(produce(b"x")));
        // Header v1: api key, version, correlation id, then the i16-length client id.
        let header_len = REQUEST_HEADER_FIXED_BYTES + 2 + "sluice-test".len();
        let mut guarded = GuardedBuf::new(frame.slice(header_len..), false);
        let first_pass = apis::decode_request_body(ApiKey::Produce, &mut guarded, 3).unwrap();
        // timeout_ms = 30000 is more than the bytes left after it, so the guard replaced it.
        assert!(guarded.substituted_reads() > 0);
        let RequestKind::Produce(first_pass) = first_pass else {
            panic!("not a produce request")
        };
        assert_ne!(first_pass.timeout_ms, 30_000);
        // decode_request then decodes the real bytes.
        let request = decode_request(frame, &table()).unwrap();
        let RequestKind::Produce(body) = request.body else {
            panic!("not a produce request")
        };
        assert_eq!(body.timeout_ms, 30_000);
    }

    #[test]
    fn produce_records_are_slices_of_the_frame() {
        let frame = encode(
            ApiKey::Produce,
            9,
            1,
            &RequestKind::Produce(produce(b"batch")),
        );
        let frame_range = frame.as_ptr_range();
        let request = decode_request(frame.clone(), &table()).unwrap();
        let RequestKind::Produce(body) = request.body else {
            panic!("not a produce request")
        };
        let records = body.topic_data[0].partition_data[0]
            .records
            .clone()
            .unwrap();
        assert_eq!(&records[..], b"batch");
        assert!(
            frame_range.contains(&records.as_ptr()),
            "records were copied"
        );
    }

    #[test]
    fn decodes_fetch_metadata_and_api_versions_across_header_versions() {
        for version in [4, 11, 12, 15, 18] {
            let mut body = fetch();
            if version >= 13 {
                // v13+ names topics by id; the name is not on the wire.
                body.topics[0].topic = TopicName::default();
            }
            check_round_trip(ApiKey::Fetch, version, RequestKind::Fetch(body));
        }
        for version in [0, 8, 9, 12] {
            check_round_trip(
                ApiKey::Metadata,
                version,
                RequestKind::Metadata(MetadataRequest::default()),
            );
        }
        let api_versions = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("librdkafka"))
            .with_client_software_version(StrBytes::from_static_str("2.12.1"));
        for version in 3..=4 {
            check_round_trip(
                ApiKey::ApiVersions,
                version,
                RequestKind::ApiVersions(api_versions.clone()),
            );
        }
        for version in 0..=2 {
            check_round_trip(
                ApiKey::ApiVersions,
                version,
                RequestKind::ApiVersions(ApiVersionsRequest::default()),
            );
        }
    }

    #[test]
    fn refuses_bodies_too_short_for_the_fixed_header() {
        for len in 0..REQUEST_HEADER_FIXED_BYTES {
            assert_eq!(
                decode_request(Bytes::from(vec![0; len]), &table()),
                Err(DecodeError::TooShort { len })
            );
        }
    }

    fn fixed_header(api_key: i16, version: i16, correlation_id: i32) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_i16(api_key);
        buf.put_i16(version);
        buf.put_i32(correlation_id);
        buf
    }

    #[test]
    fn refuses_unknown_and_unserved_api_keys_with_their_correlation_id() {
        for api_key in [-1, 4, 93, i16::MAX, ApiKey::CreateTopics as i16] {
            let frame = fixed_header(api_key, 0, 5).freeze();
            assert_eq!(
                decode_request(frame, &table()),
                Err(DecodeError::UnknownApiKey {
                    api_key,
                    correlation_id: 5
                })
            );
        }
    }

    #[test]
    fn unsupported_api_versions_keeps_what_is_needed_to_answer() {
        // A client from the future: ApiVersions v9 with a body this broker cannot read.
        let mut frame = fixed_header(ApiKey::ApiVersions as i16, 9, 31);
        frame.put_slice(&[0xff; 5]);
        let error = decode_request(frame.freeze(), &table()).unwrap_err();
        assert_eq!(
            error,
            DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                version: 9,
                correlation_id: 31
            }
        );
        assert_eq!(error.correlation_id(), Some(31));
        // Produce below the served range is refused the same way.
        let frame = encode(ApiKey::Produce, 3, 8, &RequestKind::Produce(produce(b"")));
        let narrow = VersionTable::new([(ApiKey::Produce, VersionRange::new(9, 13))]).unwrap();
        assert!(matches!(
            decode_request(frame, &narrow),
            Err(DecodeError::UnsupportedVersion { version: 3, .. })
        ));
    }

    #[test]
    fn truncated_requests_are_malformed_not_panics() {
        let frame = encode(ApiKey::Fetch, 12, 3, &RequestKind::Fetch(fetch()));
        for len in REQUEST_HEADER_FIXED_BYTES..frame.len() {
            match decode_request(frame.slice(..len), &table()) {
                Err(DecodeError::Malformed {
                    api_key: ApiKey::Fetch,
                    version: 12,
                    correlation_id: 3,
                    ..
                }) => {}
                other => panic!("prefix of {len} bytes: {other:?}"),
            }
        }
    }

    #[test]
    fn hostile_compact_array_length_is_refused_before_decoding() {
        // Metadata v12 body: topics = compact array of 2^32 - 2 elements, then nothing.
        let mut frame = BytesMut::from(
            &encode(
                ApiKey::Metadata,
                12,
                4,
                &RequestKind::Metadata(MetadataRequest::default()),
            )[..],
        );
        let header_len = frame.len() - MetadataRequest::default().compute_size(12).unwrap();
        frame.truncate(header_len);
        frame.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(
            decode_request(frame.freeze(), &table()),
            Err(DecodeError::Malformed {
                api_key: ApiKey::Metadata,
                version: 12,
                correlation_id: 4,
                reason: MalformedReason::LengthExceedsFrame {
                    declared: u32::MAX,
                    remaining_bytes: 0
                }
            })
        );
    }

    #[test]
    fn hostile_i32_array_length_fails_without_a_second_pass() {
        // Metadata v0 body: topics = array of i32::MAX elements, then nothing.
        let mut frame = fixed_header(ApiKey::Metadata as i16, 0, 6);
        frame.put_i16(-1); // null client_id
        frame.put_i32(i32::MAX);
        match decode_request(frame.freeze(), &table()) {
            Err(DecodeError::Malformed {
                reason: MalformedReason::Body(_),
                correlation_id: 6,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
}
