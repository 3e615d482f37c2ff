//! Raft timing and policy of a partition group.

use std::time::Duration;

use openraft::{Config, SnapshotPolicy};

/// A follower that hears no leader for a random time in [min, 2 × min) starts an election
/// (Redpanda's `election_timeout_ms` is 1,500 ms); leaders heartbeat every tenth of it.
pub const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(1_000);
/// Entries in one append: with batches of up to 1 MiB (`message.max.bytes`), an append of
/// this many stays well inside the RPC's 64 MiB frame. openraft's default (300) made a
/// follower that fell behind under load unreachable: the frame could not be encoded, so
/// every attempt failed and it never caught up.
pub const MAX_APPEND_ENTRIES: u64 = 32;
/// Heartbeats per minimum election timeout.
const HEARTBEATS_PER_ELECTION_TIMEOUT: u64 = 10;

/// The leader heartbeat interval that goes with `election_min`.
pub fn heartbeat_interval(election_min: Duration) -> Duration {
    (election_min / HEARTBEATS_PER_ELECTION_TIMEOUT as u32).max(Duration::from_millis(1))
}

/// openraft's config for a partition group whose election timeout starts at `election_min`.
/// openraft's own timer is off: the shard's `Ticker` drives heartbeats and elections. Snapshots are never taken on a
/// schedule: a partition's log is its data, and only retention or DeleteRecords may drop a
/// prefix of it.
pub fn group_config(election_min: Duration) -> Result<Config, openraft::ConfigError> {
    let ms = election_min.as_millis().max(10) as u64;
    Config {
        cluster_name: "sluice".into(),
        heartbeat_interval: heartbeat_interval(election_min).as_millis() as u64,
        election_timeout_min: ms,
        election_timeout_max: ms * 2,
        snapshot_policy: SnapshotPolicy::Never,
        enable_tick: false,
        log_stage_capacity: Some(8),
        max_payload_entries: MAX_APPEND_ENTRIES,
        ..Config::default()
    }
    .validate()
}

/// The default timing: `ELECTION_TIMEOUT_MIN` and the heartbeat derived from it.
pub fn default_group_config() -> Config {
    group_config(ELECTION_TIMEOUT_MIN).expect("the default timing is valid")
}
