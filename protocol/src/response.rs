//! Encoding responses into complete frames: length prefix, response header, body.
//!
//! The response header version depends on the API and version (v1, with tagged fields, for
//! flexible versions; v0 otherwise), except that ApiVersions responses always use v0 so a
//! client that has not yet learned the broker's versions can read them. kafka-protocol's
//! `HeaderVersion` for each response type already encodes both rules (including the
//! ApiVersions exception), so the header version is taken from the body's own type and
//! cannot disagree with it.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Encodable, HeaderVersion};

use crate::apis;
use crate::framing::{begin_frame, finish_frame, FrameError, FRAME_LENGTH_PREFIX_BYTES};

/// Why a response could not be encoded. Each is a broker bug (a field set that the version
/// cannot carry, a version the type does not have), never the client's doing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// kafka-protocol refused the header or body, e.g. a non-default field that does not
    /// exist in `api_version`, or a version outside the message's range.
    #[error("cannot encode response v{api_version}: {detail}")]
    Codec {
        /// The version asked for.
        api_version: i16,
        /// kafka-protocol's explanation.
        detail: String,
    },
    /// The encoded response does not fit a Kafka frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A `ResponseKind` variant newer than this crate's API list.
    #[error("response kind not known to sluice-protocol")]
    UnknownResponseKind,
}

/// Encodes `body` as the response to a request with `correlation_id`, as version
/// `api_version` (the request's version), and returns the whole frame including its length
/// prefix.
///
/// The API key is the body's own: a `ResponseKind::Fetch` is always framed as a Fetch
/// response, so the header version cannot be taken from the wrong API.
pub fn encode_response(
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    apis::encode_response_kind(api_version, correlation_id, body)
}

/// [`encode_response`] for a concrete response type, e.g. `ProduceResponse`, without
/// wrapping it in a `ResponseKind`.
pub fn encode_response_message<M: Encodable + HeaderVersion>(
    api_version: i16,
    correlation_id: i32,
    body: &M,
) -> Result<Bytes, EncodeError> {
    let codec = |error: &dyn std::fmt::Display| EncodeError::Codec {
        api_version,
        detail: error.to_string(),
    };
    let header_version = M::header_version(api_version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_bytes = header
        .compute_size(header_version)
        .map_err(|error| codec(&error))?;
    let body_bytes = body
        .compute_size(api_version)
        .map_err(|error| codec(&error))?;
    // Sized up front: a Fetch response can carry megabytes of records, and growing the
    // buffer would copy them again.
    let mut buf = BytesMut::with_capacity(FRAME_LENGTH_PREFIX_BYTES + header_bytes + body_bytes);
    let start = begin_frame(&mut buf);
    header
        .encode(&mut buf, header_version)
        .map_err(|error| codec(&error))?;
    body.encode(&mut buf, api_version)
        .map_err(|error| codec(&error))?;
    finish_frame(&mut buf, start)?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use kafka_protocol::messages::add_partitions_to_txn_response::AddPartitionsToTxnResult;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{
        AddPartitionsToTxnResponse, ApiKey, ApiVersionsResponse, MetadataResponse, ProduceResponse,
        TopicName,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};

    /// Splits a frame into its prefix value, header and body, checking the prefix.
    fn unframe(frame: &Bytes, header_version: i16) -> (ResponseHeader, Bytes) {
        let mut rest = frame.clone();
        let length = rest.get_i32();
        assert_eq!(length as usize, rest.len(), "length prefix");
        let header = ResponseHeader::decode(&mut rest, header_version).unwrap();
        (header, rest)
    }

    fn produce_response() -> ProduceResponse {
        ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("orders")))
            .with_partition_responses(vec![PartitionProduceResponse::default()
                .with_index(2)
                .with_base_offset(41)])])
    }

    #[test]
    fn produce_responses_round_trip_at_both_header_versions() {
        // Produce v8 is the last non-flexible version (header v0); v9+ use header v1.
        for (version, header_version) in [(8, 0), (9, 1), (11, 1)] {
            assert_eq!(
                ApiKey::Produce.response_header_version(version),
                header_version
            );
            let body = ResponseKind::Produce(produce_response());
            let frame = encode_response(version, 99, &body).unwrap();
            let (header, mut rest) = unframe(&frame, header_version);
            assert_eq!(header.correlation_id, 99);
            let decoded = ResponseKind::decode(ApiKey::Produce, &mut rest, version).unwrap();
            assert_eq!(rest.remaining(), 0, "v{version}: trailing bytes");
            assert_eq!(decoded, body, "v{version}");
        }
    }

    #[test]
    fn concrete_and_kind_encodings_are_identical() {
        let response = MetadataResponse::default().with_throttle_time_ms(5);
        for version in [0, 9, 12] {
            assert_eq!(
                encode_response_message(version, 1, &response).unwrap(),
                encode_response(version, 1, &ResponseKind::Metadata(response.clone())).unwrap(),
            );
        }
    }

    #[test]
    fn api_versions_uses_header_v0_even_when_flexible() {
        let frame = encode_response(
            3,
            12,
            &ResponseKind::ApiVersions(ApiVersionsResponse::default()),
        )
        .unwrap();
        let (header, mut rest) = unframe(&frame, 0);
        assert_eq!(header.correlation_id, 12);
        ResponseKind::decode(ApiKey::ApiVersions, &mut rest, 3).unwrap();
        assert_eq!(rest.remaining(), 0);
    }

    #[test]
    fn refuses_versions_and_fields_the_codec_cannot_encode() {
        // Produce has no version 2 in kafka-protocol 0.18.0.
        assert!(matches!(
            encode_response_message(2, 1, &produce_response()),
            Err(EncodeError::Codec { api_version: 2, .. })
        ));
        // AddPartitionsToTxn answers per transaction from v4 and per topic before: setting
        // the wrong one is refused rather than dropped.
        let per_transaction = AddPartitionsToTxnResponse::default()
            .with_results_by_transaction(vec![AddPartitionsToTxnResult::default()]);
        assert!(matches!(
            encode_response_message(3, 1, &per_transaction),
            Err(EncodeError::Codec { api_version: 3, .. })
        ));
        assert!(encode_response_message(4, 1, &per_transaction).is_ok());
        // Fields Kafka marks ignorable are dropped silently instead: Metadata v0 has no
        // throttle_time_ms, and the response still encodes.
        let throttled = MetadataResponse::default().with_throttle_time_ms(5);
        assert_eq!(
            encode_response_message(0, 1, &throttled).unwrap(),
            encode_response_message(0, 1, &MetadataResponse::default()).unwrap()
        );
    }
}
