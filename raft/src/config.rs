//! Raft timing and policy of a partition group.

use std::time::Duration;

use openraft::{Config, SnapshotPolicy};

/// A follower that hears no leader for a random time in [min, 2 × min) starts an election
/// (Redpanda's `election_timeout_ms` is 1,500 ms); leaders heartbeat every tenth of it.
pub const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(1_000);
/// Heartbeats per minimum election timeout.
const HEARTBEATS_PER_ELECTION_TIMEOUT: u64 = 10;

/// openraft's config for a partition group whose election timeout starts at `election_min`
/// . Snapshots are never taken on a
/// schedule: a partition's log is its data, and only retention or DeleteRecords may drop a
/// prefix of it.
pub fn group_config(election_min: Duration) -> Result<Config, openraft::ConfigError> {
    let ms = election_min.as_millis().max(10) as u64;
    Config {
        cluster_name: "sluice".into(),
        heartbeat_interval: (ms / HEARTBEATS_PER_ELECTION_TIMEOUT).max(1),
        election_timeout_min: ms,
        election_timeout_max: ms * 2,
        snapshot_policy: SnapshotPolicy::Never,
        ..Config::default()
    }
    .validate()
}

/// The default timing: `ELECTION_TIMEOUT_MIN` and the heartbeat derived from it.
pub fn default_group_config() -> Config {
    group_config(ELECTION_TIMEOUT_MIN).expect("the default timing is valid")
}
