//! The bounded outgoing queue of one connection.
//!
//! Publishers (the hub) and the connection's own command handler push encoded frames with
//! [`Outbox::push`], which never waits: when the queue is full (in messages or bytes) the
//! connection is marked for closing with 3008 slow, and everything pushed after that is
//! dropped. The connection's writer drains the queue into the socket.
//!
//! Publications carry the wall-clock time of their publish call, so that the writer can
//! record publish→write latency once their frame is written.
//!
//! **Direct writes.** A connection served over its own TCP socket ([`DirectSocket`]) skips the
//! queue while it is empty: whoever delivers (a hub sweep, the session) writes the frame to
//! the socket at once with a non-blocking `send`, and the writer task is not woken at all.
//! Only when the socket is full, or frames are already queued, does the frame go through
//! the queue. Order is kept by one rule: a frame is written directly only if nothing is
//! queued (queued frames count until they are *written*, not when taken off the queue), and
//! whoever writes holds the socket's `writing` state, taken with a compare-and-swap that
//! never waits (a delivery that finds it taken queues instead). A frame the socket took only
//! part of is finished by the writer task: the rest is queued first and the socket is
//! handed over. On the 10 000-connection fan-out this removed a task wake-up, a channel
//! hand-off and a copy into tungstenite's buffer per delivery.
//!
//! The hot path takes no lock: a push is an atomic flag read, a byte count and a channel
//! send (or a direct write); the writer learns of a close from the same flag and an [`AtomicWaker`] (a
//! `CancellationToken` would lock a mutex on every check — 9 % of the server's CPU time in
//! the 10k-connection fan-out benchmark). The token is kept for the session, which waits on
//! it rarely.

use crate::error::Disconnect;
use crate::stats::{Stats, Tally, unix_micros};
use crate::wire;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use std::future::poll_fn;
use std::io::ErrorKind;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicUsize, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed,
    Ordering::Release,
};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One queued message: an encoded reply or push (or several publications joined by the
/// hub), and for publications the time of their publish calls.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) frame: Bytes,
    pub(crate) stamps: Stamps,
}

/// Publish times (Unix microseconds) of the publications in a queued frame, for the
/// publish→write histogram. A round of several publications shares one list among all its
/// recipients. Kept to 16 bytes (a thin pointer): every connection's queue preallocates a
/// block of 32 slots, so each byte here is 32 bytes per idle connection.
#[derive(Debug, Clone, Default)]
pub(crate) enum Stamps {
    /// Not a publication (a reply, a ping, a join/leave push).
    #[default]
    None,
    /// One publication.
    One(u64),
    /// The publications of one hub round, in order.
    Many(Arc<Vec<u64>>),
    /// Bytes already framed for the socket (a pong, or the rest of a frame a delivery wrote
    /// only part of, whose publications were counted then): written as they are.
    Framed,
}

impl Stamps {
    /// The stamp of one publication published at `published_us` (0: not a publication).
    pub(crate) fn one(published_us: u64) -> Stamps {
        if published_us == 0 {
            Stamps::None
        } else {
            Stamps::One(published_us)
        }
    }

    /// Appends the publish times to `out`.
    pub(crate) fn extend_into(&self, out: &mut Vec<u64>) {
        self.for_each(|t| out.push(t));
    }

    /// Calls `f` with each publish time.
    pub(crate) fn for_each(&self, mut f: impl FnMut(u64)) {
        match self {
            Stamps::None | Stamps::Framed => {}
            Stamps::One(t) => f(*t),
            Stamps::Many(ts) => ts.iter().copied().filter(|&t| t != 0).for_each(f),
        }
    }
}

/// A text frame encoded for the socket once and shared by all its recipients: the header
/// and the payload in one buffer, so that a direct write is a single `send`.
pub(crate) struct WireFrame {
    bytes: Bytes,
    header: usize,
}

impl WireFrame {
    /// A text frame whose payload is `parts` joined by newlines.
    pub(crate) fn text(parts: &[&[u8]]) -> WireFrame {
        let (bytes, header) = wire::joined(wire::OP_TEXT, parts);
        WireFrame { bytes, header }
    }

    /// The payload alone (shares the buffer).
    pub(crate) fn payload(&self) -> Bytes {
        self.bytes.slice(self.header..)
    }
}

/// Nobody is writing to the socket.
const FREE: u8 = 0;
/// A delivery or the writer task is writing.
const BUSY: u8 = 1;
/// A delivery wrote part of a frame and queued the rest: the writer task's to finish.
const HANDED: u8 = 2;

/// A connection's own TCP socket, shared by the session (reads), the writer task and every
/// delivery (writes). See the module docs for who may write when.
pub(crate) struct DirectSocket {
    tcp: tokio::net::TcpStream,
    writing: AtomicU8,
}

impl DirectSocket {
    pub(crate) fn new(tcp: tokio::net::TcpStream) -> DirectSocket {
        DirectSocket {
            tcp,
            writing: AtomicU8::new(FREE),
        }
    }

    /// The socket, for reading.
    pub(crate) fn tcp(&self) -> &tokio::net::TcpStream {
        &self.tcp
    }
}

/// The socket's state when the writer task wants to send the close frame.
pub(crate) enum SocketForClose<'a> {
    /// Between frames: now the writer's.
    Free(&'a DirectSocket),
    /// A delivery wrote part of a frame and queued the rest: now the writer's, to finish.
    Handed(&'a DirectSocket),
    /// A delivery is writing (it is done within its system call).
    Busy,
    /// No socket (a transport behind a `Sink`).
    None,
}

/// What became of a delivery tried on the socket directly.
enum Direct {
    /// Written (or begun, and handed to the writer task).
    Done,
    /// Not written: queue it.
    Queue,
    /// The socket failed; the connection is closing.
    Failed,
}

pub(crate) struct Outbox {
    tx: mpsc::Sender<Queued>,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// Set once, by [`Outbox::close`]; read on every push and by the writer.
    closed: AtomicBool,
    /// The writer, woken by [`Outbox::close`] while it waits for a frame or a slow socket.
    writer: AtomicWaker,
    closing: CancellationToken,
    reason: OnceLock<Disconnect>,
    stats: Arc<Stats>,
    direct: Option<DirectSocket>,
}

impl Outbox {
    pub(crate) fn new(
        max_messages: usize,
        max_bytes: usize,
        stats: Arc<Stats>,
    ) -> (Arc<Outbox>, mpsc::Receiver<Queued>) {
        Outbox::with_socket(max_messages, max_bytes, stats, None)
    }

    /// An outbox whose frames may be written straight to `direct` (see the module docs).
    pub(crate) fn with_socket(
        max_messages: usize,
        max_bytes: usize,
        stats: Arc<Stats>,
        direct: Option<DirectSocket>,
    ) -> (Arc<Outbox>, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(max_messages);
        let outbox = Outbox {
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            closed: AtomicBool::new(false),
            writer: AtomicWaker::new(),
            closing: CancellationToken::new(),
            reason: OnceLock::new(),
            stats,
            direct,
        };
        (Arc::new(outbox), rx)
    }

    /// Enqueues a frame; `false` when the connection is closing or just overflowed.
    pub(crate) fn push(&self, frame: Bytes) -> bool {
        self.push_publication(frame, 0)
    }

    /// Enqueues a publication's frame, published at `published_us` (Unix microseconds).
    pub(crate) fn push_publication(&self, frame: Bytes, published_us: u64) -> bool {
        self.push_stamped(frame, Stamps::one(published_us))
    }

    /// Enqueues a frame carrying the publications stamped in `stamps`.
    pub(crate) fn push_stamped(&self, frame: Bytes, stamps: Stamps) -> bool {
        let mut tally = Tally::default();
        let queued = self.deliver(frame, stamps, &mut tally);
        tally.flush(&self.stats);
        queued
    }

    /// Delivers a frame carrying the publications stamped in `stamps`: written to the socket
    /// now when it can be (counted in `tally`), queued otherwise. `false` when the connection
    /// is closing or just overflowed.
    pub(crate) fn deliver(&self, frame: Bytes, stamps: Stamps, tally: &mut Tally) -> bool {
        if self.direct.is_none() || self.is_closed() {
            return self.enqueue(frame, stamps);
        }
        self.deliver_wire(&WireFrame::text(&[&frame]), &stamps, tally)
    }

    /// Delivers a frame encoded once for all its recipients: written as it is when the
    /// socket takes it now (one `send` of the shared bytes), its payload queued otherwise.
    pub(crate) fn deliver_wire(
        &self,
        frame: &WireFrame,
        stamps: &Stamps,
        tally: &mut Tally,
    ) -> bool {
        match self.send_now(&frame.bytes, stamps, tally) {
            Direct::Done => true,
            Direct::Failed => false,
            Direct::Queue => self.enqueue(frame.payload(), stamps.clone()),
        }
    }

    /// A frame already framed for the socket (a pong): written now or queued.
    pub(crate) fn push_framed(&self, frame: Bytes) -> bool {
        let mut tally = Tally::default();
        let queued = match self.send_now(&frame, &Stamps::Framed, &mut tally) {
            Direct::Done => true,
            Direct::Failed => false,
            Direct::Queue => self.enqueue(frame, Stamps::Framed),
        };
        tally.flush(&self.stats);
        queued
    }

    /// Writes framed `bytes` to the socket now if nothing is queued and nobody is writing.
    fn send_now(&self, bytes: &Bytes, stamps: &Stamps, tally: &mut Tally) -> Direct {
        if self.is_closed() {
            return Direct::Failed;
        }
        let Some(d) = &self.direct else {
            return Direct::Queue;
        };
        // Queued frames go first; and whoever writes holds the socket.
        if self.queued_bytes.load(Acquire) != 0
            || d.writing
                .compare_exchange(FREE, BUSY, Acquire, Relaxed)
                .is_err()
        {
            return Direct::Queue;
        }
        // Something may have been queued between the check and taking the socket.
        if self.queued_bytes.load(Acquire) != 0 {
            self.release(d);
            return Direct::Queue;
        }
        // Non-blocking (a Rust program ignores SIGPIPE, so a closed peer is an error here,
        // not a signal). tokio's readiness bookkeeping is for the writer task, which tries
        // the socket again before it waits.
        match socket2::SockRef::from(&d.tcp).send(bytes) {
            Ok(n) if n == bytes.len() => {
                tally.written(stamps, unix_micros());
                self.release(d);
                Direct::Done
            }
            Ok(n) => {
                tally.written(stamps, unix_micros());
                self.hand_over(d, bytes.slice(n..));
                Direct::Done
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                self.release(d);
                Direct::Queue
            }
            Err(_) => {
                self.release(d);
                self.close(Disconnect::WRITE_ERROR);
                Direct::Failed
            }
        }
    }

    /// Queues the unwritten `rest` of a frame (ahead of everything: the queue was empty and
    /// the socket is held) and hands the socket to the writer task to finish it.
    fn hand_over(&self, d: &DirectSocket, rest: Bytes) {
        self.queued_bytes.fetch_add(rest.len(), Relaxed);
        let queued = self
            .tx
            .try_send(Queued {
                frame: rest,
                stamps: Stamps::Framed,
            })
            .is_ok();
        if queued {
            d.writing.store(HANDED, Release);
            self.writer.wake();
        } else {
            // A frame cut in the middle cannot be followed by anything else: end here.
            self.release(d);
            self.close(Disconnect::SLOW);
        }
    }

    /// Gives the socket back; wakes the writer task if frames queued up meanwhile (it may
    /// have found the socket taken).
    pub(crate) fn release(&self, d: &DirectSocket) {
        d.writing.store(FREE, Release);
        if self.queued_bytes.load(Acquire) != 0 {
            self.writer.wake();
        }
    }

    /// The writer task's turn at the socket: waits while a delivery is writing; `None` once
    /// the connection is closing (or when this outbox has no socket).
    pub(crate) async fn take_socket(&self) -> Option<&DirectSocket> {
        let d = self.direct.as_ref()?;
        let take = || {
            d.writing
                .compare_exchange(FREE, BUSY, Acquire, Relaxed)
                .or_else(|_| d.writing.compare_exchange(HANDED, BUSY, AcqRel, Relaxed))
                .is_ok()
        };
        poll_fn(|cx| {
            if take() {
                return Poll::Ready(Some(d));
            }
            if self.is_closed() {
                return Poll::Ready(None);
            }
            self.writer.register(cx.waker());
            if take() {
                Poll::Ready(Some(d))
            } else if self.is_closed() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// The connection's own socket, for reading (`None` behind a `Sink`).
    pub(crate) fn socket(&self) -> Option<&DirectSocket> {
        self.direct.as_ref()
    }

    /// After the writer task stopped: the socket for the close frame, taken.
    pub(crate) fn socket_for_close(&self) -> SocketForClose<'_> {
        let Some(d) = self.direct.as_ref() else {
            return SocketForClose::None;
        };
        match d.writing.compare_exchange(FREE, BUSY, Acquire, Relaxed) {
            Ok(_) => SocketForClose::Free(d),
            Err(HANDED) => match d.writing.compare_exchange(HANDED, BUSY, AcqRel, Relaxed) {
                Ok(_) => SocketForClose::Handed(d),
                Err(_) => SocketForClose::Busy,
            },
            Err(_) => SocketForClose::Busy,
        }
    }

    /// Ends the socket's sending side (the client reads the end of the stream after
    /// anything written), so that the connection ends even while deliveries still hold the
    /// outbox.
    pub(crate) fn shutdown_socket(&self) {
        if let Some(d) = &self.direct {
            let _ = socket2::SockRef::from(&d.tcp).shutdown(std::net::Shutdown::Write);
        }
    }

    /// Waits until the socket can take more bytes, unless the connection closes first
    /// (`false`).
    pub(crate) async fn writable(&self, d: &DirectSocket) -> std::io::Result<bool> {
        match self.unless_closed(d.tcp.writable()).await {
            None => Ok(false),
            Some(r) => r.map(|()| true),
        }
    }

    fn enqueue(&self, frame: Bytes, stamps: Stamps) -> bool {
        let len = frame.len();
        let before = self.queued_bytes.fetch_add(len, Relaxed);
        if before + len > self.max_bytes || self.tx.try_send(Queued { frame, stamps }).is_err() {
            self.queued_bytes.fetch_sub(len, Relaxed);
            self.overflow();
            return false;
        }
        true
    }

    /// The connection could not take a message: counted, and closed with 3008 slow.
    pub(crate) fn overflow(&self) {
        if !self.is_closed() {
            self.stats.queue_overflows.fetch_add(1, Relaxed);
        }
        self.close(Disconnect::SLOW);
    }

    /// Called by the writer for each frame it takes off the queue (over a socket: once the
    /// frame is written, so that no delivery writes around it meanwhile).
    pub(crate) fn dequeued(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Relaxed);
    }

    /// Marks the connection for closing; the first reason wins.
    pub(crate) fn close(&self, reason: Disconnect) {
        if self.reason.set(reason).is_ok()
            && let Some(r) = self.reason.get()
        {
            self.stats.record_disconnect(r.code);
        }
        self.closed.store(true, Release);
        self.writer.wake();
        self.closing.cancel();
    }

    /// Whether the connection is closing (lock-free).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Acquire)
    }

    /// The writer's wait for its next frame: `None` once the connection is closing or every
    /// sender is gone. Only a frame that is not already queued costs a waker registration.
    pub(crate) async fn next(&self, rx: &mut mpsc::Receiver<Queued>) -> Option<Queued> {
        poll_fn(|cx| {
            if self.is_closed() {
                return Poll::Ready(None);
            }
            if let Poll::Ready(q) = rx.poll_recv(cx) {
                return Poll::Ready(q);
            }
            self.writer.register(cx.waker());
            if self.is_closed() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Runs `write` (one socket write) unless the connection closes first: `None` when it
    /// closed while the write was blocked on a full socket.
    pub(crate) async fn unless_closed<F: Future>(&self, write: F) -> Option<F::Output> {
        let mut write = std::pin::pin!(write);
        poll_fn(|cx| {
            if let Poll::Ready(out) = write.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            self.writer.register(cx.waker());
            if self.is_closed() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    pub(crate) fn reason(&self) -> Option<&Disconnect> {
        self.reason.get()
    }

    pub(crate) fn closing(&self) -> &CancellationToken {
        &self.closing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_message_stays_small() {
        assert_eq!(std::mem::size_of::<Stamps>(), 16);
    }

    #[test]
    fn overflow_closes_with_slow_and_drops_the_rest() {
        let stats = Arc::new(Stats::default());
        let (ob, mut rx) = Outbox::new(2, 1 << 20, stats.clone());
        assert!(ob.push(Bytes::from_static(b"1")));
        assert!(ob.push(Bytes::from_static(b"2")));
        assert!(!ob.push(Bytes::from_static(b"3")));
        assert_eq!(ob.reason(), Some(&Disconnect::SLOW));
        assert!(!ob.push(Bytes::from_static(b"4")));
        assert_eq!(rx.try_recv().unwrap().frame, "1");
        assert_eq!(stats.snapshot().slow_disconnects, 1);
        assert_eq!(stats.snapshot().queue_overflows, 1);
    }

    #[test]
    fn byte_bound_applies_too() {
        let (ob, _rx) = Outbox::new(100, 10, Arc::new(Stats::default()));
        assert!(ob.push(Bytes::from(vec![b'x'; 6])));
        assert!(!ob.push(Bytes::from(vec![b'x'; 6])));
        assert_eq!(ob.reason().map(|d| d.code), Some(3008));
        ob.close(Disconnect::SHUTDOWN);
        assert_eq!(ob.reason().map(|d| d.code), Some(3008), "first reason wins");
    }
}
