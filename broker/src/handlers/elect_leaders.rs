//! ElectLeaders (`kafka-leader-election`): moves a partition's leadership to its preferred
//! replica, the first of its replicas. The broker leading the partition hands its Raft
//! leadership over (openraft's transfer: the target stands once its log holds all the
//! leader had), so a preferred election never loses a committed record. An unclean
//! election, Kafka's choice of an out-of-sync replica when none in sync is left, is refused:
//! a Raft group elects only a replica holding every committed record, and one that has a
//! leader needs no election.

use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_protocol::kafka_protocol::messages::elect_leaders_response::{
    PartitionResult, ReplicaElectionResult,
};
use sluice_protocol::kafka_protocol::messages::{
    ElectLeadersRequest, ElectLeadersResponse, TopicName,
};
use sluice_protocol::kafka_protocol::protocol::StrBytes;
use sluice_protocol::{ResponseError, VersionRange};
use tracing::info;

use crate::controller::{request_election, BrokerReply};
use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 2);

/// `election_type` values (v1+; v0 always asks for the preferred replica).
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// Pause before asking again when the broker asked no longer led the partition.
const LEADER_MOVED_BACKOFF: Duration = Duration::from_millis(100);

type Outcome = Result<(), (ResponseError, String)>;

pub async fn handle(s: &Rc<Shard>, r: ElectLeadersRequest, version: i16) -> ElectLeadersResponse {
    let mut resp = ElectLeadersResponse::default();
    let kind = if version >= 1 {
        r.election_type
    } else {
        PREFERRED
    };
    let deadline = Instant::now() + Duration::from_millis(r.timeout_ms.max(0) as u64);
    let image = s.metadata();
    // No list means every partition of every topic; then only those that needed an
    // election are reported, as Kafka does.
    let all = r.topic_partitions.is_none();
    let wanted: Vec<(TopicName, Vec<i32>)> = match r.topic_partitions {
        Some(tps) => tps.into_iter().map(|t| (t.topic, t.partitions)).collect(),
        None => image
            .topics
            .values()
            .map(|t| {
                let name = TopicName(StrBytes::from_string(t.name.clone()));
                (name, (0..t.partitions).collect())
            })
            .collect(),
    };
    let mut pending = Vec::new();
    for (name, partitions) in wanted {
        let topic = image.topic(name.0.as_str());
        let mut tasks = Vec::new();
        for p in partitions {
            // The topic's id and the partition's preferred replica.
            let target = topic
                .filter(|t| (0..t.partitions).contains(&p))
                .map(|t| (t.id, t.replicas(p).first().copied()));
            let s = s.clone();
            let task = glommio::spawn_local(async move {
                let Some((id, preferred)) = target else {
                    return Err((
                        ResponseError::UnknownTopicOrPartition,
                        "no such topic or partition".to_string(),
                    ));
                };
                elect(&s, id, p, preferred, kind, deadline).await
            })
            .detach();
            tasks.push((p, task));
        }
        pending.push((name, tasks));
    }
    for (name, tasks) in pending {
        let mut tr = ReplicaElectionResult::default();
        tr.topic = name;
        for (p, task) in tasks {
            let outcome = task.await.unwrap_or(Err((
                ResponseError::UnknownServerError,
                "the election task stopped".to_string(),
            )));
            let mut pr = PartitionResult::default();
            pr.partition_id = p;
            if let Err((e, message)) = outcome {
                if all && e == ResponseError::ElectionNotNeeded {
                    continue;
                }
                pr.error_code = e.code();
                pr.error_message = Some(StrBytes::from_string(message));
            }
            tr.partition_result.push(pr);
        }
        if !tr.partition_result.is_empty() || !all {
            resp.replica_election_results.push(tr);
        }
    }
    resp
}

/// One partition's election, as `kind` asks, finished by `deadline`.
async fn elect(
    s: &Rc<Shard>,
    topic: uuid::Uuid,
    partition: i32,
    preferred: Option<i32>,
    kind: i8,
    deadline: Instant,
) -> Outcome {
    let leader = || s.leadership(&topic, partition).and_then(|l| l.leader);
    match kind {
        UNCLEAN => match leader() {
            Some(_) => Err((
                ResponseError::ElectionNotNeeded,
                "the partition has a leader".to_string(),
            )),
            None => Err((
                ResponseError::EligibleLeadersNotAvailable,
                "unclean election refused: a Raft group elects only a replica holding every \
                 committed record, once a majority of its replicas is up"
                    .to_string(),
            )),
        },
        PREFERRED => {
            let Some(preferred) = preferred else {
                return Err((
                    ResponseError::PreferredLeaderNotAvailable,
                    "the partition has no replicas".to_string(),
                ));
            };
            let mut asked = false;
            loop {
                let current = leader();
                if current == Some(preferred as u64) {
                    if asked {
                        return Ok(());
                    }
                    return Err((
                        ResponseError::ElectionNotNeeded,
                        format!("broker {preferred}, the preferred replica, leads already"),
                    ));
                }
                let Some(current) = current else {
                    return Err((
                        ResponseError::PreferredLeaderNotAvailable,
                        "the partition has no leader to hand over from".to_string(),
                    ));
                };
                let wait = deadline.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    return Err((
                        ResponseError::RequestTimedOut,
                        format!("broker {preferred} did not take over in time"),
                    ));
                }
                asked = true;
                let reply =
                    request_election(s, current, topic, partition, preferred as u64, wait).await;
                match reply {
                    BrokerReply::Noted => {
                        info!(%topic, partition, from = current, to = preferred, "preferred leader elected");
                        return Ok(());
                    }
                    // Leadership moved since this broker last heard: ask the new leader.
                    BrokerReply::NotLeader => glommio::timer::sleep(LEADER_MOVED_BACKOFF).await,
                    BrokerReply::Refused(m) => {
                        return Err((ResponseError::PreferredLeaderNotAvailable, m))
                    }
                    other => {
                        return Err((
                            ResponseError::RequestTimedOut,
                            format!("broker {current} did not hand over: {other:?}"),
                        ))
                    }
                }
            }
        }
        other => Err((
            ResponseError::InvalidRequest,
            format!("unknown election type {other}"),
        )),
    }
}
