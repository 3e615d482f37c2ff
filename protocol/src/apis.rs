//! Every Kafka API kafka-protocol 0.18.0 knows, with its request and response types, in one
//! list, and the few functions that need to name those types per API key.
//!
//! `RequestKind::decode` in kafka-protocol only accepts a plain `Bytes` buffer, and nothing in
//! it maps an `ApiKey` to its message types' version ranges or a `ResponseKind` back to its
//! key. Those are generated here from the list, so a new kafka-protocol release that adds an
//! API shows up as a non-exhaustive `match` instead of a silent gap.

use bytes::Bytes;
use kafka_protocol::messages::{self, ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::buf::ByteBuf;
use kafka_protocol::protocol::{Decodable, Message};

use crate::response::{encode_response_message, EncodeError};
use crate::versions::VersionRange;

/// Calls `$then!` with `ApiKey variant => request type, response type;` for every API.
/// The `RequestKind`/`ResponseKind` variants have the same names as the `ApiKey` variants.
macro_rules! with_every_api {
    ($then:ident) => {
        $then! {
            Produce => ProduceRequest, ProduceResponse;
            Fetch => FetchRequest, FetchResponse;
            ListOffsets => ListOffsetsRequest, ListOffsetsResponse;
            Metadata => MetadataRequest, MetadataResponse;
            OffsetCommit => OffsetCommitRequest, OffsetCommitResponse;
            OffsetFetch => OffsetFetchRequest, OffsetFetchResponse;
            FindCoordinator => FindCoordinatorRequest, FindCoordinatorResponse;
            JoinGroup => JoinGroupRequest, JoinGroupResponse;
            Heartbeat => HeartbeatRequest, HeartbeatResponse;
            LeaveGroup => LeaveGroupRequest, LeaveGroupResponse;
            SyncGroup => SyncGroupRequest, SyncGroupResponse;
            DescribeGroups => DescribeGroupsRequest, DescribeGroupsResponse;
            ListGroups => ListGroupsRequest, ListGroupsResponse;
            SaslHandshake => SaslHandshakeRequest, SaslHandshakeResponse;
            ApiVersions => ApiVersionsRequest, ApiVersionsResponse;
            CreateTopics => CreateTopicsRequest, CreateTopicsResponse;
            DeleteTopics => DeleteTopicsRequest, DeleteTopicsResponse;
            DeleteRecords => DeleteRecordsRequest, DeleteRecordsResponse;
            InitProducerId => InitProducerIdRequest, InitProducerIdResponse;
            OffsetForLeaderEpoch => OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse;
            AddPartitionsToTxn => AddPartitionsToTxnRequest, AddPartitionsToTxnResponse;
            AddOffsetsToTxn => AddOffsetsToTxnRequest, AddOffsetsToTxnResponse;
            EndTxn => EndTxnRequest, EndTxnResponse;
            WriteTxnMarkers => WriteTxnMarkersRequest, WriteTxnMarkersResponse;
            TxnOffsetCommit => TxnOffsetCommitRequest, TxnOffsetCommitResponse;
            DescribeAcls => DescribeAclsRequest, DescribeAclsResponse;
            CreateAcls => CreateAclsRequest, CreateAclsResponse;
            DeleteAcls => DeleteAclsRequest, DeleteAclsResponse;
            DescribeConfigs => DescribeConfigsRequest, DescribeConfigsResponse;
            AlterConfigs => AlterConfigsRequest, AlterConfigsResponse;
            AlterReplicaLogDirs => AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse;
            DescribeLogDirs => DescribeLogDirsRequest, DescribeLogDirsResponse;
            SaslAuthenticate => SaslAuthenticateRequest, SaslAuthenticateResponse;
            CreatePartitions => CreatePartitionsRequest, CreatePartitionsResponse;
            CreateDelegationToken => CreateDelegationTokenRequest, CreateDelegationTokenResponse;
            RenewDelegationToken => RenewDelegationTokenRequest, RenewDelegationTokenResponse;
            ExpireDelegationToken => ExpireDelegationTokenRequest, ExpireDelegationTokenResponse;
            DescribeDelegationToken => DescribeDelegationTokenRequest, DescribeDelegationTokenResponse;
            DeleteGroups => DeleteGroupsRequest, DeleteGroupsResponse;
            ElectLeaders => ElectLeadersRequest, ElectLeadersResponse;
            IncrementalAlterConfigs => IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse;
            AlterPartitionReassignments => AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse;
            ListPartitionReassignments => ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse;
            OffsetDelete => OffsetDeleteRequest, OffsetDeleteResponse;
            DescribeClientQuotas => DescribeClientQuotasRequest, DescribeClientQuotasResponse;
            AlterClientQuotas => AlterClientQuotasRequest, AlterClientQuotasResponse;
            DescribeUserScramCredentials => DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse;
            AlterUserScramCredentials => AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse;
            Vote => VoteRequest, VoteResponse;
            BeginQuorumEpoch => BeginQuorumEpochRequest, BeginQuorumEpochResponse;
            EndQuorumEpoch => EndQuorumEpochRequest, EndQuorumEpochResponse;
            DescribeQuorum => DescribeQuorumRequest, DescribeQuorumResponse;
            AlterPartition => AlterPartitionRequest, AlterPartitionResponse;
            UpdateFeatures => UpdateFeaturesRequest, UpdateFeaturesResponse;
            Envelope => EnvelopeRequest, EnvelopeResponse;
            FetchSnapshot => FetchSnapshotRequest, FetchSnapshotResponse;
            DescribeCluster => DescribeClusterRequest, DescribeClusterResponse;
            DescribeProducers => DescribeProducersRequest, DescribeProducersResponse;
            BrokerRegistration => BrokerRegistrationRequest, BrokerRegistrationResponse;
            BrokerHeartbeat => BrokerHeartbeatRequest, BrokerHeartbeatResponse;
            UnregisterBroker => UnregisterBrokerRequest, UnregisterBrokerResponse;
            DescribeTransactions => DescribeTransactionsRequest, DescribeTransactionsResponse;
            ListTransactions => ListTransactionsRequest, ListTransactionsResponse;
            AllocateProducerIds => AllocateProducerIdsRequest, AllocateProducerIdsResponse;
            ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse;
            ConsumerGroupDescribe => ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse;
            ControllerRegistration => ControllerRegistrationRequest, ControllerRegistrationResponse;
            GetTelemetrySubscriptions => GetTelemetrySubscriptionsRequest, GetTelemetrySubscriptionsResponse;
            PushTelemetry => PushTelemetryRequest, PushTelemetryResponse;
            AssignReplicasToDirs => AssignReplicasToDirsRequest, AssignReplicasToDirsResponse;
            ListConfigResources => ListConfigResourcesRequest, ListConfigResourcesResponse;
            DescribeTopicPartitions => DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse;
            ShareGroupHeartbeat => ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse;
            ShareGroupDescribe => ShareGroupDescribeRequest, ShareGroupDescribeResponse;
            ShareFetch => ShareFetchRequest, ShareFetchResponse;
            ShareAcknowledge => ShareAcknowledgeRequest, ShareAcknowledgeResponse;
            AddRaftVoter => AddRaftVoterRequest, AddRaftVoterResponse;
            RemoveRaftVoter => RemoveRaftVoterRequest, RemoveRaftVoterResponse;
            UpdateRaftVoter => UpdateRaftVoterRequest, UpdateRaftVoterResponse;
            InitializeShareGroupState => InitializeShareGroupStateRequest, InitializeShareGroupStateResponse;
            ReadShareGroupState => ReadShareGroupStateRequest, ReadShareGroupStateResponse;
            WriteShareGroupState => WriteShareGroupStateRequest, WriteShareGroupStateResponse;
            DeleteShareGroupState => DeleteShareGroupStateRequest, DeleteShareGroupStateResponse;
            ReadShareGroupStateSummary => ReadShareGroupStateSummaryRequest, ReadShareGroupStateSummaryResponse;
            DescribeShareGroupOffsets => DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse;
            AlterShareGroupOffsets => AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse;
            DeleteShareGroupOffsets => DeleteShareGroupOffsetsRequest, DeleteShareGroupOffsetsResponse;
        }
    };
}

macro_rules! define_per_api_functions {
    ($($key:ident => $request:ident, $response:ident;)*) => {
        /// The versions kafka-protocol can both decode as a request and encode as a
        /// response.
        ///
        /// Not `ApiKey::valid_versions()`: in 0.18.0 that reports the response's range, which
        /// is wider than the request decoder's for OffsetCommit (10 vs 9), OffsetFetch (10 vs
        /// 9) and InitProducerId (6 vs 5). Advertising those would invite requests that can
        /// never decode.
        pub(crate) fn codec_versions(api_key: ApiKey) -> VersionRange {
            let (request, response) = match api_key {
                $(ApiKey::$key => (
                    <messages::$request as Message>::VERSIONS,
                    <messages::$response as Message>::VERSIONS,
                ),)*
            };
            VersionRange {
                min: request.min.max(response.min),
                max: request.max.min(response.max),
            }
        }

        /// Decodes a request body of `api_key` from any buffer; the caller has checked the
        /// version. Errors are rendered to text, since kafka-protocol's are `anyhow` errors
        /// that carry nothing a caller could act on.
        pub(crate) fn decode_request_body<B: ByteBuf>(
            api_key: ApiKey,
            buf: &mut B,
            version: i16,
        ) -> Result<RequestKind, String> {
            let decoded = match api_key {
                $(ApiKey::$key => {
                    <messages::$request as Decodable>::decode(buf, version).map(RequestKind::$key)
                })*
            };
            decoded.map_err(|error| format!("{error:#}"))
        }

        /// Encodes whichever response `body` holds, with the header version of its own type.
        pub(crate) fn encode_response_kind(
            api_version: i16,
            correlation_id: i32,
            body: &ResponseKind,
        ) -> Result<Bytes, EncodeError> {
            match body {
                $(ResponseKind::$key(message) => {
                    encode_response_message(api_version, correlation_id, message)
                })*
                // `ResponseKind` is non-exhaustive; a variant added by a kafka-protocol upgrade
                // lands here until it is added to the list above.
                _ => Err(EncodeError::UnknownResponseKind),
            }
        }
    };
}

with_every_api!(define_per_api_functions);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_versions_never_exceed_what_api_key_reports() {
        for api_key in ApiKey::iter() {
            let codec = codec_versions(api_key);
            let reported = api_key.valid_versions();
            assert!(codec.min <= codec.max, "{api_key:?}: empty codec range");
            assert!(
                codec.min >= reported.min && codec.max <= reported.max,
                "{api_key:?}"
            );
        }
    }

    #[test]
    fn codec_versions_clip_the_known_request_response_mismatches() {
        assert_eq!(
            codec_versions(ApiKey::OffsetCommit),
            VersionRange::new(2, 9)
        );
        assert_eq!(codec_versions(ApiKey::OffsetFetch), VersionRange::new(1, 9));
        assert_eq!(
            codec_versions(ApiKey::InitProducerId),
            VersionRange::new(0, 5)
        );
        assert_eq!(codec_versions(ApiKey::Produce), VersionRange::new(3, 13));
        assert_eq!(codec_versions(ApiKey::Fetch), VersionRange::new(4, 18));
        assert_eq!(codec_versions(ApiKey::ApiVersions), VersionRange::new(0, 4));
    }
}
