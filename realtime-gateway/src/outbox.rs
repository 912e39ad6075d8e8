//! The bounded outgoing queue of one connection.
//!
//! Publishers (the hub) and the connection's own command handler push encoded frames with
//! [`Outbox::push`], which never waits: when the queue is full (in messages or bytes) the
//! connection is marked for closing with 3008 slow, and everything pushed after that is
//! dropped. The connection's writer drains the queue into the socket.
//!
//! Publications carry the wall-clock time of their publish call, so that the writer can
//! record publish→write latency once their frame is written.

use crate::error::Disconnect;
use crate::stats::Stats;
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One queued message: an encoded reply or push, and for publications the time (Unix
/// microseconds) of their publish call (0 for everything else).
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) frame: Bytes,
    pub(crate) published_us: u64,
}

pub(crate) struct Outbox {
    tx: mpsc::Sender<Queued>,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
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
        if self.closing.is_cancelled() {
            return false;
        }
        let len = frame.len();
        let before = self.queued_bytes.fetch_add(len, Relaxed);
        if before + len > self.max_bytes
            || self
                .tx
                .try_send(Queued {
                    frame,
                    published_us,
                })
                .is_err()
        {
            self.queued_bytes.fetch_sub(len, Relaxed);
            self.overflow();
            return false;
        }
        true
    }

    /// The connection could not take a message: counted, and closed with 3008 slow.
    pub(crate) fn overflow(&self) {
        if !self.closing.is_cancelled() {
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
        self.closing.cancel();
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
