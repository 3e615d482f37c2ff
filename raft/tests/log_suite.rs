//! openraft's log-storage conformance suite on `LogStore` + `StateMachine` over real
//! `PartitionLog`s (direct I/O files in a temporary directory).

use std::rc::Rc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{AsyncRuntime, StorageError};
use sluice_raft::{GlommioRuntime, LogStore, PartitionRaft, StateMachine};
use sluice_storage::{LogConfig, PartitionLog};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<PartitionRaft, LogStore, StateMachine, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachine), StorageError<PartitionRaft>> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("p0");
        std::fs::create_dir_all(&dir).expect("partition dir");
        let log = Rc::new(
            PartitionLog::open(&dir, LogConfig::default())
                .await
                .expect("open log"),
        );
        let store = LogStore::open(&dir, log.clone()).await.expect("open store");
        let sm = StateMachine::open(&dir, log)
            .await
            .expect("open state machine");
        Ok((tmp, store, sm))
    }
}

#[test]
fn passes_openraft_log_storage_suite() {
    GlommioRuntime::run(async {
        Suite::test_all(Builder).await.expect("log storage suite");
    });
}
