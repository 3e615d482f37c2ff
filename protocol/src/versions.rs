//! Which API versions the broker speaks, and the ApiVersions answers built from that.
//!
//! The broker registers each handler with its version range beside it and builds one
//! [`VersionTable`] from those pairs; this crate never knows the handlers. The table is then
//! the single source for three things that must agree: which requests
//! [`decode_request`](crate::request::decode_request) accepts, what ApiVersions advertises,
//! and what the UNSUPPORTED_VERSION answer lists.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use crate::apis;
use crate::errors::{ResponseError, NONE};
use crate::response::{encode_response_message, EncodeError};

/// An inclusive range of versions of one API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionRange {
    /// Lowest supported version.
    pub min: i16,
    /// Highest supported version.
    pub max: i16,
}

impl VersionRange {
    /// The versions `min..=max`.
    pub const fn new(min: i16, max: i16) -> Self {
        Self { min, max }
    }

    /// Whether `version` is in the range.
    pub const fn contains(self, version: i16) -> bool {
        self.min <= version && version <= self.max
    }

    /// The versions in both ranges, if any.
    pub fn intersect(self, other: VersionRange) -> Option<VersionRange> {
        let both = VersionRange::new(self.min.max(other.min), self.max.min(other.max));
        (both.min <= both.max).then_some(both)
    }
}

/// The versions kafka-protocol 0.18.0 can decode as a request *and* encode as a response
/// for `api_key`; every range in a [`VersionTable`] is clipped to this.
///
/// Use this rather than `ApiKey::valid_versions()`, which over-reports OffsetCommit,
/// OffsetFetch and InitProducerId by one version (the response codec knows a version the
/// request codec does not).
pub fn codec_versions(api_key: ApiKey) -> VersionRange {
    apis::codec_versions(api_key)
}

/// A registration the table refused; each one is a bug in the broker's handler list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VersionTableError {
    /// Two handlers claim the same API.
    #[error("{api_key:?} is registered twice")]
    Duplicate {
        /// The API registered twice.
        api_key: ApiKey,
    },
    /// The registered range has `min > max`.
    #[error("{api_key:?} is registered with an empty range {registered:?}")]
    EmptyRange {
        /// The API.
        api_key: ApiKey,
        /// The range as registered.
        registered: VersionRange,
    },
    /// None of the registered versions can be decoded and encoded by kafka-protocol.
    #[error(
        "{api_key:?} range {registered:?} has no version in common with the codec's {codec:?}"
    )]
    OutsideCodec {
        /// The API.
        api_key: ApiKey,
        /// The range as registered.
        registered: VersionRange,
        /// What kafka-protocol supports, see [`codec_versions`].
        codec: VersionRange,
    },
}

/// The supported version range of every API the broker serves.
///
/// Looking up a key is an index into a small array, since it happens for every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionTable {
    /// Indexed by API key.
    by_api_key: Vec<Option<VersionRange>>,
}

impl VersionTable {
    /// Builds the table from the handlers' `(api key, range)` pairs.
    ///
    /// Each range is clipped to [`codec_versions`], so a handler that claims more than
    /// kafka-protocol can decode and encode advertises only what works; [`Self::range`]
    /// returns the clipped range. An API whose range does not overlap the codec's at all is
    /// an error, as is a duplicate.
    pub fn new(
        entries: impl IntoIterator<Item = (ApiKey, VersionRange)>,
    ) -> Result<Self, VersionTableError> {
        let mut by_api_key = Vec::new();
        for (api_key, registered) in entries {
            if registered.min > registered.max {
                return Err(VersionTableError::EmptyRange {
                    api_key,
                    registered,
                });
            }
            let codec = codec_versions(api_key);
            let Some(effective) = registered.intersect(codec) else {
                return Err(VersionTableError::OutsideCodec {
                    api_key,
                    registered,
                    codec,
                });
            };
            let slot = api_key_index(api_key);
            if by_api_key.len() <= slot {
                by_api_key.resize(slot + 1, None);
            }
            if by_api_key[slot].replace(effective).is_some() {
                return Err(VersionTableError::Duplicate { api_key });
            }
        }
        Ok(Self { by_api_key })
    }

    /// The (clipped) range registered for `api_key`, if the broker serves it.
    pub fn range(&self, api_key: ApiKey) -> Option<VersionRange> {
        self.by_api_key
            .get(api_key_index(api_key))
            .copied()
            .flatten()
    }

    /// Whether the broker serves `version` of `api_key`.
    pub fn supports(&self, api_key: ApiKey, version: i16) -> bool {
        self.range(api_key)
            .is_some_and(|range| range.contains(version))
    }

    /// Every registered API with its range, in API key order.
    pub fn entries(&self) -> impl Iterator<Item = (ApiKey, VersionRange)> + '_ {
        ApiKey::iter().filter_map(|api_key| Some((api_key, self.range(api_key)?)))
    }

    /// The ApiVersions response advertising exactly this table, with no error.
    ///
    /// The same value encodes at every ApiVersions version (0 to 4): `throttle_time_ms` (v1+)
    /// is 0 and the v3+ feature fields keep their defaults (no supported or finalized
    /// features, epoch -1), which clients read as "no feature flags".
    pub fn api_versions_response(&self) -> ApiVersionsResponse {
        ApiVersionsResponse::default()
            .with_error_code(NONE)
            .with_api_keys(
                self.entries()
                    .map(|(api_key, range)| {
                        ApiVersion::default()
                            .with_api_key(api_key as i16)
                            .with_min_version(range.min)
                            .with_max_version(range.max)
                    })
                    .collect(),
            )
    }

    /// The answer to an ApiVersions request whose version this table does not support:
    /// UNSUPPORTED_VERSION (35) with the supported ranges, so the client can retry with a
    /// version it shares with the broker (KIP-511).
    ///
    /// Kafka itself lists only the ApiVersions entry here; listing the whole table is
    /// equally valid for clients, which look up the ApiVersions entry, and saves nothing to
    /// drop. It must be encoded as version 0, the one version every client can read; use
    /// [`Self::encode_unsupported_version_response`].
    pub fn unsupported_version_response(&self) -> ApiVersionsResponse {
        self.api_versions_response()
            .with_error_code(ResponseError::UnsupportedVersion.code())
    }

    /// [`Self::unsupported_version_response`] as a complete frame, ready for the socket:
    /// ApiVersions v0 body behind a v0 response header.
    pub fn encode_unsupported_version_response(
        &self,
        correlation_id: i32,
    ) -> Result<Bytes, EncodeError> {
        encode_response_message(0, correlation_id, &self.unsupported_version_response())
    }
}

/// API keys are small non-negative numbers (0..=92 in kafka-protocol 0.18.0).
fn api_key_index(api_key: ApiKey) -> usize {
    api_key as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use kafka_protocol::messages::{ResponseHeader, ResponseKind};
    use kafka_protocol::protocol::Decodable;

    fn table() -> VersionTable {
        VersionTable::new([
            (ApiKey::ApiVersions, VersionRange::new(0, 4)),
            (ApiKey::Metadata, VersionRange::new(0, 12)),
            (ApiKey::Produce, VersionRange::new(3, 11)),
        ])
        .unwrap()
    }

    #[test]
    fn answers_supports_from_the_registered_ranges() {
        let table = table();
        assert!(table.supports(ApiKey::Produce, 3));
        assert!(table.supports(ApiKey::Produce, 11));
        assert!(!table.supports(ApiKey::Produce, 2));
        assert!(!table.supports(ApiKey::Produce, 12));
        assert!(!table.supports(ApiKey::Fetch, 12));
        assert_eq!(table.range(ApiKey::Fetch), None);
        let keys: Vec<ApiKey> = table.entries().map(|(key, _)| key).collect();
        assert_eq!(
            keys,
            [ApiKey::Produce, ApiKey::Metadata, ApiKey::ApiVersions]
        );
    }

    #[test]
    fn clips_every_range_to_the_codec() {
        // A broker claiming everything up to i16::MAX gets exactly what kafka-protocol can do.
        let everything = VersionTable::new(
            ApiKey::iter().map(|api_key| (api_key, VersionRange::new(0, i16::MAX))),
        )
        .unwrap();
        for api_key in ApiKey::iter() {
            let range = everything.range(api_key).unwrap();
            let codec = codec_versions(api_key);
            assert_eq!(range, codec, "{api_key:?}");
            assert!(range.min >= api_key.valid_versions().min, "{api_key:?}");
            assert!(range.max <= api_key.valid_versions().max, "{api_key:?}");
        }
        assert_eq!(
            everything.range(ApiKey::OffsetCommit),
            Some(VersionRange::new(2, 9))
        );
    }

    #[test]
    fn refuses_bad_registrations() {
        assert_eq!(
            VersionTable::new([
                (ApiKey::Fetch, VersionRange::new(4, 12)),
                (ApiKey::Fetch, VersionRange::new(4, 18)),
            ]),
            Err(VersionTableError::Duplicate {
                api_key: ApiKey::Fetch
            })
        );
        assert_eq!(
            VersionTable::new([(ApiKey::Fetch, VersionRange::new(5, 4))]),
            Err(VersionTableError::EmptyRange {
                api_key: ApiKey::Fetch,
                registered: VersionRange::new(5, 4)
            })
        );
        assert_eq!(
            VersionTable::new([(ApiKey::Produce, VersionRange::new(0, 2))]),
            Err(VersionTableError::OutsideCodec {
                api_key: ApiKey::Produce,
                registered: VersionRange::new(0, 2),
                codec: VersionRange::new(3, 13)
            })
        );
    }

    fn advertised(response: &ApiVersionsResponse) -> Vec<(i16, i16, i16)> {
        response
            .api_keys
            .iter()
            .map(|entry| (entry.api_key, entry.min_version, entry.max_version))
            .collect()
    }

    #[test]
    fn api_versions_response_advertises_exactly_the_table_at_every_version() {
        let table = table();
        let response = table.api_versions_response();
        let expected = vec![(0, 3, 11), (3, 0, 12), (18, 0, 4)];
        assert_eq!(advertised(&response), expected);
        for version in 0..=4 {
            let frame = crate::response::encode_response_message(version, 7, &response).unwrap();
            let mut body = frame.slice(4..);
            // ApiVersions responses always have a v0 header, even for flexible versions.
            let header = ResponseHeader::decode(&mut body, 0).unwrap();
            assert_eq!(header.correlation_id, 7);
            let decoded = match ResponseKind::decode(ApiKey::ApiVersions, &mut body, version) {
                Ok(ResponseKind::ApiVersions(decoded)) => decoded,
                other => panic!("v{version}: {other:?}"),
            };
            assert_eq!(body.remaining(), 0, "v{version}: trailing bytes");
            assert_eq!(decoded.error_code, NONE);
            assert_eq!(advertised(&decoded), expected, "v{version}");
        }
    }

    #[test]
    fn unsupported_version_answer_is_a_v0_error_with_the_table() {
        let table = table();
        let frame = table.encode_unsupported_version_response(42).unwrap();
        assert_eq!(
            frame.slice(..4),
            Bytes::from((frame.len() as i32 - 4).to_be_bytes().to_vec())
        );
        let mut body = frame.slice(4..);
        assert_eq!(body.get_i32(), 42, "v0 header: correlation id only");
        let decoded = match ResponseKind::decode(ApiKey::ApiVersions, &mut body, 0) {
            Ok(ResponseKind::ApiVersions(decoded)) => decoded,
            other => panic!("{other:?}"),
        };
        assert_eq!(body.remaining(), 0);
        assert_eq!(decoded.error_code, 35);
        assert_eq!(
            advertised(&decoded),
            advertised(&table.api_versions_response())
        );
    }
}
