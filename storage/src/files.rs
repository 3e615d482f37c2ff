//! The bounded cache of open segment files, one per executor thread (so one per shard).
//!
//! Segments do not own descriptors: each has a `FileId`, and whoever reads or writes it asks
//! the cache for the open file. Past `capacity` open files the least recently used one is
//! dropped from the cache; its descriptor closes once the last in-flight user lets go of it.
//! So descriptors grow with the working set of the shard, not with its segments or idle
//! partitions. A segment that is removed from its log forgets its id, which closes the
//! descriptor (an unlinked file would otherwise keep its disk space allocated).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use crate::error::StorageError;

/// Default of `log.open.files.max`: open segment files per shard.
pub const OPEN_FILES_MAX_DEFAULT: usize = 1024;
/// Fewest files the cache keeps open, so a log can always hold its active segment and read
/// an old one at the same time.
pub const OPEN_FILES_MIN: usize = 4;

/// A segment file's identity in the cache; never reused on a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileId(u64);

struct Cache {
    capacity: Cell<usize>,
    next_id: Cell<u64>,
    tick: Cell<u64>,
    /// Ids of segments still in a log: only these may be (re)opened.
    live: RefCell<HashSet<FileId>>,
    open: RefCell<HashMap<FileId, (Rc<DmaFile>, u64)>>,
    /// Last-use tick → id, for finding the least recently used file.
    by_use: RefCell<BTreeMap<u64, FileId>>,
    opened: Cell<u64>,
}

thread_local! {
    static CACHE: Cache = Cache {
        capacity: Cell::new(OPEN_FILES_MAX_DEFAULT),
        next_id: Cell::new(0),
        tick: Cell::new(0),
        live: RefCell::new(HashSet::new()),
        open: RefCell::new(HashMap::new()),
        by_use: RefCell::new(BTreeMap::new()),
        opened: Cell::new(0),
    };
}

/// Sets this thread's cache capacity (`log.open.files.max`), closing files over it.
pub fn set_open_files_max(n: usize) {
    CACHE.with(|c| {
        c.capacity.set(n.max(OPEN_FILES_MIN));
        c.shrink_to(c.capacity.get());
    });
}

/// What this thread's cache holds: (files open in the cache, opens since the thread started).
pub fn open_files_stats() -> (usize, u64) {
    CACHE.with(|c| (c.open.borrow().len(), c.opened.get()))
}

impl Cache {
    fn shrink_to(&self, n: usize) {
        let mut open = self.open.borrow_mut();
        let mut by_use = self.by_use.borrow_mut();
        while open.len() > n {
            let Some((_, id)) = by_use.pop_first() else {
                break;
            };
            open.remove(&id);
        }
    }

    fn touch(&self, id: FileId) -> Option<Rc<DmaFile>> {
        let mut open = self.open.borrow_mut();
        let (file, used) = open.get_mut(&id)?;
        let mut by_use = self.by_use.borrow_mut();
        by_use.remove(used);
        let t = self.tick.get() + 1;
        self.tick.set(t);
        *used = t;
        by_use.insert(t, id);
        Some(file.clone())
    }

    fn insert(&self, id: FileId, file: Rc<DmaFile>) {
        self.shrink_to(self.capacity.get().saturating_sub(1));
        let t = self.tick.get() + 1;
        self.tick.set(t);
        self.open.borrow_mut().insert(id, (file, t));
        self.by_use.borrow_mut().insert(t, id);
        self.opened.set(self.opened.get() + 1);
    }

    fn forget(&self, id: FileId) {
        self.live.borrow_mut().remove(&id);
        if let Some((_, used)) = self.open.borrow_mut().remove(&id) {
            self.by_use.borrow_mut().remove(&used);
        }
    }
}

/// Registers a segment file and returns its id (nothing is opened yet).
pub(crate) fn register() -> FileId {
    CACHE.with(|c| {
        let id = FileId(c.next_id.get());
        c.next_id.set(id.0 + 1);
        c.live.borrow_mut().insert(id);
        id
    })
}

/// Drops a segment's file from the cache for good (the segment left its log).
pub(crate) fn forget(id: FileId) {
    // At thread exit the cache may already be gone, and so are its files.
    let _ = CACHE.try_with(|c| c.forget(id));
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// The open file of segment `id` at `path`, opened (or created) on a miss. Running out of
/// descriptors first closes half of the cache and tries once more; after that the error is
/// the caller's (a storage error for that partition, never a crash).
pub(crate) async fn get(
    id: FileId,
    path: &Path,
    create: bool,
) -> Result<Rc<DmaFile>, StorageError> {
    if let Some(f) = CACHE.with(|c| c.touch(id)) {
        return Ok(f);
    }
    if !CACHE.with(|c| c.live.borrow().contains(&id)) {
        return Err(StorageError::io(
            "open segment",
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "segment left the log"),
        ));
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(create);
    let file = match options.dma_open(path).await {
        Ok(f) => f,
        Err(e) => {
            let e: std::io::Error = e.into();
            if !out_of_descriptors(&e) {
                return Err(StorageError::io("open segment", path, e));
            }
            CACHE.with(|c| c.shrink_to(c.open.borrow().len() / 2));
            options
                .dma_open(path)
                .await
                .map_err(|e| StorageError::io("open segment", path, e))?
        }
    };
    let file = Rc::new(file);
    // Another task may have opened it meanwhile; keep one and let the other close.
    if let Some(f) = CACHE.with(|c| c.touch(id)) {
        return Ok(f);
    }
    // The segment may have left its log while the open was in flight.
    if CACHE.with(|c| c.live.borrow().contains(&id)) {
        CACHE.with(|c| c.insert(id, file.clone()));
    }
    Ok(file)
}
