//! openraft's `AsyncRuntime` on glommio: the only module of this crate that names glommio.
//!
//! glommio is lightly maintained upstream; swapping the executor means rewriting this file.
//! openraft runs with `single-threaded`, so nothing here needs to be `Send`: every Raft group
//! lives on one shard's executor thread. Channels and the mutex are runtime-neutral crates
//! (flume, futures); the watch channel is local to this module because openraft needs only a
//! single-thread one.

use std::cell::{Cell, Ref, RefCell};
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use openraft_rt::watch::{RecvError, SendError, Watch, WatchReceiver, WatchSender};
use openraft_rt::{
    AsyncRuntime, Mpsc, MpscReceiver, MpscSender, MpscWeakSender, OptionalSend, OptionalSync,
    TryRecvError,
};

/// Executor capacity for tests and tools that start a runtime of their own (`block_on`): the
/// broker runs Raft on the shard executors it already has.
const OWN_EXECUTOR_IO_MEMORY_BYTES: usize = 512 << 10;

/// openraft's runtime on the current glommio executor. `spawn`, `sleep` and `timeout` must
/// be called from inside one.
pub struct GlommioRuntime {
    executor: glommio::LocalExecutor,
}

impl fmt::Debug for GlommioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GlommioRuntime")
    }
}

/// A spawned task ended without a value: it panicked or its executor is gone.
#[derive(Debug)]
pub struct JoinError;

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task panicked or was cancelled")
    }
}

/// glommio cancels a task whose `Task` handle is dropped, openraft expects it to run on: the
/// task is detached at spawn and this handle only waits for its value.
pub struct JoinHandle<T>(glommio::task::JoinHandle<T>);

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|v| v.ok_or(JoinError))
    }
}

/// The deadline of a `timeout` passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline elapsed")
    }
}

pub type Sleep = Pin<Box<dyn Future<Output = ()>>>;

pub struct Timeout<F> {
    future: Pin<Box<F>>,
    delay: Sleep,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = self.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        self.delay.as_mut().poll(cx).map(|()| Err(Elapsed))
    }
}

fn sleep_for(d: Duration) -> Sleep {
    Box::pin(async move {
        glommio::timer::sleep(d).await;
    })
}

impl AsyncRuntime for GlommioRuntime {
    type JoinError = JoinError;
    type JoinHandle<T: OptionalSend + 'static> = JoinHandle<T>;
    type Sleep = Sleep;
    type Instant = Instant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = rand::rngs::ThreadRng;
    type Mpsc = FlumeMpsc;
    type Watch = LocalWatch;
    type Oneshot = FuturesOneshot;
    type Mutex<T: OptionalSend + 'static> = FuturesMutex<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        JoinHandle(glommio::spawn_local(future).detach())
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        sleep_for(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        sleep_for(deadline.saturating_duration_since(Instant::now()))
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout {
            future: Box::pin(future),
            delay: sleep_for(duration),
        }
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Self::timeout(deadline.saturating_duration_since(Instant::now()), future)
    }

    fn is_panic(_: &Self::JoinError) -> bool {
        // A detached glommio task yields no value only when it panicked or its executor
        // stopped; both are fatal to the Raft group that spawned it.
        true
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        rand::rng()
    }

    fn new(_threads: usize) -> Self {
        // One executor thread: the thread-per-core model has no worker pool to size.
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(OWN_EXECUTOR_IO_MEMORY_BYTES)
            .make()
            .expect("a glommio executor (io_uring and memlock) on this thread");
        GlommioRuntime { executor }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.executor.run(future)
    }
}

/// A task that is cancelled when this guard drops: a listener's accept loop owns its
/// connections' guards, so dropping the listener's guard ends them all.
pub struct Scoped {
    _task: glommio::Task<()>,
}

pub fn spawn_scoped(future: impl Future<Output = ()> + 'static) -> Scoped {
    Scoped {
        _task: glommio::spawn_local(future),
    }
}

/// TCP for the inter-broker RPC.
pub mod net {
    pub use glommio::net::{TcpListener, TcpStream};
}

/// Bounded multi-producer channels (flume works on any executor).
pub struct FlumeMpsc;
pub struct FlumeSender<T>(flume::Sender<T>);
pub struct FlumeWeakSender<T>(flume::WeakSender<T>);
pub struct FlumeReceiver<T>(flume::Receiver<T>);

impl<T> Clone for FlumeSender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Clone for FlumeWeakSender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl Mpsc for FlumeMpsc {
    type Sender<T: OptionalSend> = FlumeSender<T>;
    type Receiver<T: OptionalSend> = FlumeReceiver<T>;
    type WeakSender<T: OptionalSend> = FlumeWeakSender<T>;

    fn channel<T: OptionalSend>(buffer: usize) -> (Self::Sender<T>, Self::Receiver<T>) {
        let (tx, rx) = flume::bounded(buffer);
        (FlumeSender(tx), FlumeReceiver(rx))
    }
}

impl<T: OptionalSend> MpscSender<FlumeMpsc, T> for FlumeSender<T> {
    async fn send(&self, msg: T) -> Result<(), openraft_rt::SendError<T>> {
        self.0
            .send_async(msg)
            .await
            .map_err(|e| openraft_rt::SendError(e.into_inner()))
    }

    fn downgrade(&self) -> FlumeWeakSender<T> {
        FlumeWeakSender(self.0.downgrade())
    }
}

impl<T: OptionalSend> MpscWeakSender<FlumeMpsc, T> for FlumeWeakSender<T> {
    fn upgrade(&self) -> Option<FlumeSender<T>> {
        self.0.upgrade().map(FlumeSender)
    }
}

impl<T: OptionalSend> MpscReceiver<T> for FlumeReceiver<T> {
    async fn recv(&mut self) -> Option<T> {
        self.0.recv_async().await.ok()
    }

    fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.0.try_recv().map_err(|e| match e {
            flume::TryRecvError::Empty => TryRecvError::Empty,
            flume::TryRecvError::Disconnected => TryRecvError::Disconnected,
        })
    }
}

pub struct FuturesOneshot;
pub struct FuturesOneshotSender<T>(futures_channel::oneshot::Sender<T>);

impl openraft_rt::Oneshot for FuturesOneshot {
    type Sender<T: OptionalSend> = FuturesOneshotSender<T>;
    type Receiver<T: OptionalSend> = futures_channel::oneshot::Receiver<T>;
    type ReceiverError = futures_channel::oneshot::Canceled;

    fn channel<T: OptionalSend>() -> (Self::Sender<T>, Self::Receiver<T>) {
        let (tx, rx) = futures_channel::oneshot::channel();
        (FuturesOneshotSender(tx), rx)
    }
}

impl<T: OptionalSend> openraft_rt::OneshotSender<T> for FuturesOneshotSender<T> {
    fn send(self, t: T) -> Result<(), T> {
        self.0.send(t)
    }
}

pub struct FuturesMutex<T>(futures_util::lock::Mutex<T>);

impl<T: OptionalSend + 'static> openraft_rt::Mutex<T> for FuturesMutex<T> {
    type Guard<'a> = futures_util::lock::MutexGuard<'a, T>;

    fn new(value: T) -> Self {
        FuturesMutex(futures_util::lock::Mutex::new(value))
    }

    fn lock(&self) -> impl Future<Output = Self::Guard<'_>> + OptionalSend {
        self.0.lock()
    }
}

/// A single-thread watch channel: one value, a version bumped on every change, and the
/// wakers of receivers waiting for a version they have not seen.
pub struct LocalWatch;

struct Shared<T> {
    value: RefCell<T>,
    version: Cell<u64>,
    senders: Cell<usize>,
    waiting: RefCell<Vec<Waker>>,
}

impl<T> Shared<T> {
    fn wake_all(&self) {
        for w in self.waiting.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

pub struct LocalWatchSender<T>(Rc<Shared<T>>);

pub struct LocalWatchReceiver<T> {
    shared: Rc<Shared<T>>,
    seen: u64,
}

pub struct LocalWatchRef<'a, T>(Ref<'a, T>);

impl<T> Deref for LocalWatchRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl Watch for LocalWatch {
    type Sender<T: OptionalSend + OptionalSync> = LocalWatchSender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = LocalWatchReceiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = LocalWatchRef<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (Self::Sender<T>, Self::Receiver<T>) {
        let shared = Rc::new(Shared {
            value: RefCell::new(init),
            version: Cell::new(0),
            senders: Cell::new(1),
            waiting: RefCell::new(Vec::new()),
        });
        let rx = LocalWatchReceiver {
            shared: shared.clone(),
            seen: 0,
        };
        (LocalWatchSender(shared), rx)
    }
}

impl<T> Clone for LocalWatchSender<T> {
    fn clone(&self) -> Self {
        self.0.senders.set(self.0.senders.get() + 1);
        LocalWatchSender(self.0.clone())
    }
}

impl<T> Drop for LocalWatchSender<T> {
    fn drop(&mut self) {
        let left = self.0.senders.get() - 1;
        self.0.senders.set(left);
        if left == 0 {
            // Waiting receivers learn that no value will come.
            self.0.wake_all();
        }
    }
}

impl<T: OptionalSend + OptionalSync> WatchSender<LocalWatch, T> for LocalWatchSender<T> {
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        // Like tokio's watch: sending with no receiver left fails and hands the value back.
        if Rc::strong_count(&self.0) == self.0.senders.get() {
            return Err(SendError(value));
        }
        *self.0.value.borrow_mut() = value;
        self.0.version.set(self.0.version.get() + 1);
        self.0.wake_all();
        Ok(())
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        let modified = modify(&mut self.0.value.borrow_mut());
        if modified {
            self.0.version.set(self.0.version.get() + 1);
            self.0.wake_all();
        }
        modified
    }

    fn borrow_watched(&self) -> LocalWatchRef<'_, T> {
        LocalWatchRef(self.0.value.borrow())
    }

    fn subscribe(&self) -> LocalWatchReceiver<T> {
        LocalWatchReceiver {
            shared: self.0.clone(),
            seen: self.0.version.get(),
        }
    }
}

impl<T> Clone for LocalWatchReceiver<T> {
    fn clone(&self) -> Self {
        LocalWatchReceiver {
            shared: self.shared.clone(),
            seen: self.seen,
        }
    }
}

impl<T: OptionalSend + OptionalSync> WatchReceiver<LocalWatch, T> for LocalWatchReceiver<T> {
    async fn changed(&mut self) -> Result<(), RecvError> {
        std::future::poll_fn(|cx| {
            let version = self.shared.version.get();
            if version != self.seen {
                self.seen = version;
                return Poll::Ready(Ok(()));
            }
            if self.shared.senders.get() == 0 {
                return Poll::Ready(Err(RecvError(())));
            }
            let mut waiting = self.shared.waiting.borrow_mut();
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    fn borrow_watched(&self) -> LocalWatchRef<'_, T> {
        LocalWatchRef(self.shared.value.borrow())
    }

    fn borrow_and_update(&mut self) -> LocalWatchRef<'_, T> {
        self.seen = self.shared.version.get();
        LocalWatchRef(self.shared.value.borrow())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// openraft's own conformance suite for runtimes: spawn, sleep, timeouts, select,
    /// channels, watch and mutex semantics.
    #[test]
    fn passes_openraft_runtime_suite() {
        openraft_rt::testing::Suite::<GlommioRuntime>::test_all();
    }
}
