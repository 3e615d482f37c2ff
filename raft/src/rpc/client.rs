//! The sending side: one connection per peer broker, shared by every group on this shard.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use openraft::AsyncRuntime;
use tracing::warn;

use super::wire::{self, Envelope, Frame};
use super::{
    RPC_CONNECT_TIMEOUT, RPC_FRAME_TIMEOUT, RPC_MAX_BATCH, RPC_QUEUE_DEPTH, RPC_RECONNECT_BACKOFF,
};
use crate::network::{RaftRequest, RaftResponse, Transport};
use crate::runtime::net::TcpStream;
use crate::runtime::{spawn_scoped, GlommioRuntime, Scoped};

struct Outgoing {
    group: u64,
    request: RaftRequest,
    reply: oneshot::Sender<RaftResponse>,
}

struct Peer {
    queue: flume::Sender<Outgoing>,
    _task: Scoped,
}

/// This shard's links to the other brokers, by node id.
pub struct Peers {
    local: u64,
    addresses: RefCell<HashMap<u64, SocketAddr>>,
    links: RefCell<HashMap<u64, Peer>>,
    /// What left for peers, for the idle-cost test and metrics.
    sent: Rc<Sent>,
}

/// Counts of what a shard sent to its peers.
#[derive(Debug, Default)]
struct Sent {
    /// `Requests` frames (each a batch of many groups' messages).
    frames: Cell<u64>,
    /// Group messages inside them.
    messages: Cell<u64>,
    bytes: Cell<u64>,
}

impl Peers {
    pub fn new(local: u64) -> Rc<Self> {
        Rc::new(Peers {
            local,
            addresses: RefCell::default(),
            links: RefCell::default(),
            sent: Rc::default(),
        })
    }

    /// Where broker `node` listens for RPC; a changed address takes a new connection.
    pub fn set_address(&self, node: u64, addr: SocketAddr) {
        let old = self.addresses.borrow_mut().insert(node, addr);
        if old.is_some_and(|o| o != addr) {
            self.links.borrow_mut().remove(&node);
        }
    }

    /// The node id of the broker whose RPC listener is at `addr` (its hello says it): how
    /// brokers learn each other's ids from the seed list, in no assumed order.
    pub async fn discover(&self, addr: SocketAddr) -> std::io::Result<u64> {
        match GlommioRuntime::timeout(RPC_CONNECT_TIMEOUT, connect(self.local, addr)).await {
            Ok(r) => r.map(|(_, id)| id),
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    /// Brokers whose RPC address is known.
    pub fn known(&self) -> Vec<(u64, SocketAddr)> {
        self.addresses
            .borrow()
            .iter()
            .map(|(n, a)| (*n, *a))
            .collect()
    }

    pub fn frames_sent(&self) -> u64 {
        self.sent.frames.get()
    }

    /// Frames, group messages and bytes sent to peers so far.
    pub fn sent(&self) -> (u64, u64, u64) {
        let s = &self.sent;
        (s.frames.get(), s.messages.get(), s.bytes.get())
    }

    /// Sends one group's message to its replica on `to` and waits up to `timeout` for the
    /// answer.
    pub async fn call(
        &self,
        to: u64,
        group: u64,
        request: RaftRequest,
        timeout: Duration,
    ) -> Result<RaftResponse, String> {
        let queue = self.queue_to(to)?;
        let (reply, answer) = oneshot::channel();
        queue
            .try_send(Outgoing {
                group,
                request,
                reply,
            })
            .map_err(|e| match e {
                flume::TrySendError::Full(_) => format!("queue to broker {to} is full"),
                flume::TrySendError::Disconnected(_) => format!("link to broker {to} is closed"),
            })?;
        match GlommioRuntime::timeout(timeout, answer).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(format!("connection to broker {to} lost")),
            Err(_) => Err(format!("broker {to} did not answer within {timeout:?}")),
        }
    }

    fn queue_to(&self, to: u64) -> Result<flume::Sender<Outgoing>, String> {
        if let Some(p) = self.links.borrow().get(&to) {
            return Ok(p.queue.clone());
        }
        let addr = *self
            .addresses
            .borrow()
            .get(&to)
            .ok_or(format!("no RPC address known for broker {to}"))?;
        let (queue, pending) = flume::bounded(RPC_QUEUE_DEPTH);
        let task = spawn_scoped(run_link(self.local, to, addr, pending, self.sent.clone()));
        self.links.borrow_mut().insert(
            to,
            Peer {
                queue: queue.clone(),
                _task: task,
            },
        );
        Ok(queue)
    }

    /// A `Transport` for one group's messages.
    pub fn transport(self: &Rc<Self>, group: u64) -> GroupTransport {
        GroupTransport {
            group,
            peers: self.clone(),
        }
    }
}

/// Keeps a connection to one peer up while anything is sent to it.
async fn run_link(
    local: u64,
    to: u64,
    addr: SocketAddr,
    pending: flume::Receiver<Outgoing>,
    sent: Rc<Sent>,
) {
    loop {
        // Connect only when there is something to send.
        let Ok(first) = pending.recv_async().await else {
            return;
        };
        match GlommioRuntime::timeout(RPC_CONNECT_TIMEOUT, connect(local, addr)).await {
            Ok(Ok((stream, _))) => {
                if let Err(e) = exchange(stream, first, &pending, &sent).await {
                    warn!(peer = to, %addr, error = %e, "RPC connection ended");
                }
            }
            Ok(Err(e)) => {
                warn!(peer = to, %addr, error = %e, "cannot reach broker");
                fail_queued(&pending);
                GlommioRuntime::sleep(RPC_RECONNECT_BACKOFF).await;
            }
            Err(_) => {
                warn!(peer = to, %addr, "connecting to broker timed out");
                fail_queued(&pending);
            }
        }
    }
}

/// Drops what waited for a peer that is down: its callers learn at once instead of at
/// their timeouts.
fn fail_queued(pending: &flume::Receiver<Outgoing>) {
    pending.drain().for_each(drop);
}

/// Connects and exchanges hellos; returns the stream and the node id that answered.
async fn connect(local: u64, addr: SocketAddr) -> std::io::Result<(TcpStream, u64)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    write_frame(&mut stream, &Frame::Hello { node_id: local }).await?;
    match read_frame(&mut stream).await? {
        Frame::Hello { node_id } => Ok((stream, node_id)),
        other => Err(std::io::Error::other(format!(
            "expected hello, got {other:?}"
        ))),
    }
}

pub(super) async fn write_frame(stream: &mut TcpStream, frame: &Frame) -> std::io::Result<()> {
    let mut buf = Vec::new();
    wire::encode(frame, &mut buf).map_err(std::io::Error::other)?;
    stream.write_all(&buf).await
}

/// Reads one frame. The body buffer grows with the bytes that actually arrive, and a body
/// must arrive within `RPC_FRAME_TIMEOUT` once its length is read: a peer announcing a large
/// frame and stalling holds neither the memory nor the connection for long.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Frame> {
    let mut prefix = [0u8; wire::LENGTH_BYTES];
    r.read_exact(&mut prefix).await?;
    let n = wire::frame_length(prefix).map_err(std::io::Error::other)?;
    let mut body = Vec::new();
    let mut limited = (&mut *r).take(n as u64);
    let read = limited.read_to_end(&mut body);
    match GlommioRuntime::timeout(RPC_FRAME_TIMEOUT, read).await {
        Ok(Ok(got)) if got == n => wire::decode(&body).map_err(std::io::Error::other),
        Ok(Ok(_)) => Err(std::io::ErrorKind::UnexpectedEof.into()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other(format!(
            "a {n}-byte frame did not arrive within {RPC_FRAME_TIMEOUT:?}"
        ))),
    }
}

/// Sends what is queued in batches and routes answers back until the connection fails.
async fn exchange(
    stream: TcpStream,
    first: Outgoing,
    pending: &flume::Receiver<Outgoing>,
    sent: &Sent,
) -> std::io::Result<()> {
    let waiting: Rc<RefCell<HashMap<u64, oneshot::Sender<RaftResponse>>>> = Rc::default();
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let answers = {
        let waiting = waiting.clone();
        async move {
            loop {
                match read_frame(&mut reader).await? {
                    Frame::Responses(rs) => {
                        for (id, r) in rs {
                            if let Some(tx) = waiting.borrow_mut().remove(&id) {
                                let _ = tx.send(r);
                            }
                        }
                    }
                    other => {
                        return Err::<(), _>(std::io::Error::other(format!(
                            "unexpected frame from a server: {other:?}"
                        )))
                    }
                }
            }
        }
    };
    let mut next_id = 0u64;
    let sends = async {
        let mut batch = vec![first];
        loop {
            // Let every task that is ready now queue its message too: a ticker pass over
            // many groups then leaves as one frame.
            futures_lite::future::yield_now().await;
            batch.extend(pending.try_iter().take(RPC_MAX_BATCH - batch.len()));
            sent.messages.set(sent.messages.get() + batch.len() as u64);
            let mut envelopes = Vec::with_capacity(batch.len());
            for o in batch.drain(..) {
                next_id += 1;
                waiting.borrow_mut().insert(next_id, o.reply);
                envelopes.push(Envelope {
                    id: next_id,
                    group: o.group,
                    request: o.request,
                });
            }
            let mut buf = Vec::new();
            wire::encode(&Frame::Requests(envelopes), &mut buf).map_err(std::io::Error::other)?;
            writer.write_all(&buf).await?;
            sent.frames.set(sent.frames.get() + 1);
            sent.bytes.set(sent.bytes.get() + buf.len() as u64);
            match pending.recv_async().await {
                Ok(o) => batch.push(o),
                Err(_) => return Ok::<(), std::io::Error>(()),
            }
        }
    };
    let r = match GlommioRuntime::select2(std::pin::pin!(answers), std::pin::pin!(sends)).await {
        openraft_rt::Select2::First(r) | openraft_rt::Select2::Second(r) => r,
    };
    // Answers that will not come: their callers see the connection as lost.
    waiting.borrow_mut().clear();
    r
}

/// One group's messages over the shard's `Peers`.
#[derive(Clone)]
pub struct GroupTransport {
    group: u64,
    peers: Rc<Peers>,
}

impl Transport for GroupTransport {
    async fn call(
        &self,
        to: u64,
        request: RaftRequest,
        timeout: Duration,
    ) -> Result<RaftResponse, String> {
        self.peers.call(to, self.group, request, timeout).await
    }
}
