use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::batch::BatchError;
use crate::types::{Offset, RaftIndex};

/// Everything the log can refuse or fail at. I/O failures name the operation and file.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("{what} failed on {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is outside the log [{1}, {2})")]
    OffsetOutOfRange(Offset, Offset, Offset),
    #[error("{0} is outside the log [{1}, {2})")]
    IndexOutOfRange(RaftIndex, RaftIndex, RaftIndex),
    #[error("entry of {size} bytes exceeds the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("stored entry at {0} failed its checksum on read")]
    Corrupt(RaftIndex),
}

impl StorageError {
    pub(crate) fn io(what: &'static str, path: &Path, e: impl Into<std::io::Error>) -> Self {
        StorageError::Io {
            what,
            path: path.to_path_buf(),
            source: e.into(),
        }
    }

    /// Out of disk space: the broker answers KAFKA_STORAGE_ERROR and retries later.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if source.raw_os_error() == Some(libc_enospc()))
    }
}

/// ENOSPC on Linux; spelled out to avoid a libc dependency for one constant.
const fn libc_enospc() -> i32 {
    28
}
