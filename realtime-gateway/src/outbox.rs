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
//! The hot path takes no lock: a push is an atomic flag read, a byte count and a channel
//! send; the writer learns of a close from the same flag and an [`AtomicWaker`] (a
//! `CancellationToken` would lock a mutex on every check — 9 % of the server's CPU time in
//! the 10k-connection fan-out benchmark). The token is kept for the session, which waits on
//! it rarely.

use crate::error::Disconnect;
use crate::stats::Stats;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use std::future::poll_fn;
use std::sync::atomic::{
    AtomicBool, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
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
        match self {
            Stamps::None => {}
            Stamps::One(t) => out.push(*t),
            Stamps::Many(ts) => out.extend(ts.iter().copied().filter(|&t| t != 0)),
        }
    }
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
}

impl Outbox {
    pub(crate) fn new(
        max_messages: usize,
        max_bytes: usize,
        stats: Arc<Stats>,
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
        if self.is_closed() {
            return false;
        }
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

    /// Called by the writer for each frame it takes off the queue.
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
