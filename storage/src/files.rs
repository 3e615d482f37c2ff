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
use std::ops::Deref;
use std::path::Path;
use std::rc::Rc;
use std::task::{Poll, Waker};

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

/// An open segment file. Counted while it lives, cached or not, so the bound holds for
/// files in use by an I/O after they left the cache too.
pub(crate) struct OpenFile(DmaFile);

impl Deref for OpenFile {
    type Target = DmaFile;
    fn deref(&self) -> &DmaFile {
        &self.0
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        let _ = CACHE.try_with(|c| {
            c.alive.set(c.alive.get() - 1);
            c.wake_waiters();
        });
    }
}

/// A segment file lent to one I/O. Giving it back may make a cached file idle, so waiters
/// for a descriptor are woken to close it and take its place.
pub(crate) struct FileLease(Rc<OpenFile>);

impl Deref for FileLease {
    type Target = DmaFile;
    fn deref(&self) -> &DmaFile {
        &self.0 .0
    }
}

impl Drop for FileLease {
    fn drop(&mut self) {
        let _ = CACHE.try_with(|c| c.wake_waiters());
    }
}

struct Cache {
    capacity: Cell<usize>,
    next_id: Cell<u64>,
    tick: Cell<u64>,
    /// `OpenFile`s alive: cached, or held by an I/O in flight.
    alive: Cell<usize>,
    /// Ids of segments still in a log: only these may be (re)opened.
    live: RefCell<HashSet<FileId>>,
    open: RefCell<HashMap<FileId, (Rc<OpenFile>, u64)>>,
    /// Last-use tick → id, for finding the least recently used file.
    by_use: RefCell<BTreeMap<u64, FileId>>,
    /// Tasks waiting for a descriptor to be released.
    waiters: RefCell<Vec<Waker>>,
    opened: Cell<u64>,
}

/// Share of the soft descriptor limit the cache takes unless told otherwise (the embedder
/// sets the capacity itself with `set_open_files_max`; tests and tools get this).
const DEFAULT_SHARE_OF_NOFILE: u64 = 4;

/// `OPEN_FILES_MAX_DEFAULT`, or less when the process's descriptor limit is low.
fn default_capacity() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return OPEN_FILES_MAX_DEFAULT;
    }
    let share = (lim.rlim_cur / DEFAULT_SHARE_OF_NOFILE).min(OPEN_FILES_MAX_DEFAULT as u64);
    (share as usize).max(OPEN_FILES_MIN)
}

thread_local! {
    static CACHE: Cache = Cache {
        capacity: Cell::new(default_capacity()),
        next_id: Cell::new(0),
        tick: Cell::new(0),
        alive: Cell::new(0),
        live: RefCell::new(HashSet::new()),
        open: RefCell::new(HashMap::new()),
        by_use: RefCell::new(BTreeMap::new()),
        waiters: RefCell::new(Vec::new()),
        opened: Cell::new(0),
    };
}

/// Sets this thread's cache capacity (`log.open.files.max`), closing idle files over it.
pub fn set_open_files_max(n: usize) {
    CACHE.with(|c| {
        c.capacity.set(n.max(OPEN_FILES_MIN));
        c.evict_idle_until(c.capacity.get());
    });
}

/// Drops every cached file no I/O holds. glommio closes a dropped file on its reactor's next
/// I/O cycle, so a thread whose executor is about to end calls this and lets the executor
/// run once more; files still cached at thread exit would otherwise never be closed.
pub fn close_idle_files() {
    CACHE.with(|c| c.evict_idle_until(0));
}

/// What this thread's cache holds: (segment files open now, opens since the thread started).
pub fn open_files_stats() -> (usize, u64) {
    CACHE.with(|c| (c.alive.get(), c.opened.get()))
}

impl Cache {
    /// Drops least recently used files that no I/O holds until at most `n` are alive.
    fn evict_idle_until(&self, n: usize) {
        let victims: Vec<Rc<OpenFile>> = {
            let mut open = self.open.borrow_mut();
            let mut by_use = self.by_use.borrow_mut();
            let excess = self.alive.get().saturating_sub(n);
            let idle: Vec<(u64, FileId)> = by_use
                .iter()
                .filter(|(_, id)| open.get(id).is_some_and(|(f, _)| Rc::strong_count(f) == 1))
                .take(excess)
                .map(|(t, id)| (*t, *id))
                .collect();
            idle.into_iter()
                .filter_map(|(t, id)| {
                    by_use.remove(&t);
                    open.remove(&id).map(|(f, _)| f)
                })
                .collect::<Vec<_>>()
        };
        // Dropped outside the borrows: each drop updates the counters.
        drop(victims);
    }

    fn wake_waiters(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn touch(&self, id: FileId) -> Option<Rc<OpenFile>> {
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

    fn insert(&self, id: FileId, file: Rc<OpenFile>) {
        let t = self.tick.get() + 1;
        self.tick.set(t);
        self.open.borrow_mut().insert(id, (file, t));
        self.by_use.borrow_mut().insert(t, id);
    }

    fn forget(&self, id: FileId) {
        self.live.borrow_mut().remove(&id);
        let removed = self.open.borrow_mut().remove(&id);
        if let Some((_, used)) = &removed {
            self.by_use.borrow_mut().remove(used);
        }
        drop(removed);
    }

    /// Gives back a reservation that did not become an `OpenFile`.
    fn unreserve(&self) {
        self.alive.set(self.alive.get() - 1);
        self.wake_waiters();
    }
}

/// Waits until one more file may be opened: idle files are closed first; if every open file
/// is in use, this waits for one to be released (backpressure, not EMFILE).
async fn reserve() {
    std::future::poll_fn(|cx| {
        CACHE.with(|c| {
            let cap = c.capacity.get();
            c.evict_idle_until(cap - 1);
            if c.alive.get() < cap {
                c.alive.set(c.alive.get() + 1);
                return Poll::Ready(());
            }
            c.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
    })
    .await
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

/// Whether an open failed for want of a descriptor. glommio wraps the OS error with the
/// operation and path, and its conversion to `std::io::Error` keeps only the text, so the
/// code is read before converting.
fn out_of_descriptors<T>(e: &glommio::GlommioError<T>) -> bool {
    let source = match e {
        glommio::GlommioError::IoError(s) => s,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        _ => return false,
    };
    matches!(
        source.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE)
    )
}

/// The open file of segment `id` at `path`, opened (or created) on a miss. At most
/// `log.open.files.max` segment files are open on this thread at once; past it the caller
/// waits. Running out of descriptors anyway (sockets use them too) closes half of the idle
/// files and tries once more; after that the error is the caller's (a storage error for that
/// partition, never a crash).
pub(crate) async fn get(id: FileId, path: &Path, create: bool) -> Result<FileLease, StorageError> {
    if let Some(f) = CACHE.with(|c| c.touch(id)) {
        return Ok(FileLease(f));
    }
    let gone = || {
        StorageError::io(
            "open segment",
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "segment left the log"),
        )
    };
    if !CACHE.with(|c| c.live.borrow().contains(&id)) {
        return Err(gone());
    }
    reserve().await;
    // Another task may have opened it while this one waited.
    if let Some(f) = CACHE.with(|c| c.touch(id)) {
        CACHE.with(|c| c.unreserve());
        return Ok(FileLease(f));
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(create);
    let opened: Result<DmaFile, std::io::Error> = match options.dma_open(path).await {
        Err(e) if out_of_descriptors(&e) => {
            CACHE.with(|c| c.evict_idle_until(c.alive.get() / 2));
            options.dma_open(path).await.map_err(Into::into)
        }
        other => other.map_err(Into::into),
    };
    let file = match opened {
        Ok(f) => Rc::new(OpenFile(f)),
        Err(e) => {
            CACHE.with(|c| c.unreserve());
            return Err(StorageError::io("open segment", path, e));
        }
    };
    CACHE.with(|c| c.opened.set(c.opened.get() + 1));
    if let Some(f) = CACHE.with(|c| c.touch(id)) {
        return Ok(FileLease(f));
    }
    // The segment may have left its log while the open was in flight.
    if CACHE.with(|c| c.live.borrow().contains(&id)) {
        CACHE.with(|c| c.insert(id, file.clone()));
    } else {
        return Err(gone());
    }
    Ok(FileLease(file))
}
