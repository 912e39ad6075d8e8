//! The bounded outgoing queue of one connection.
//!
//! Publishers (the hub) and the connection's own command handler push encoded frames with
//! [`Outbox::push`], which never waits: when the queue is full (in messages or bytes) the
//! connection is marked for closing with 3008 slow, and everything pushed after that is
//! dropped. The connection's writer drains the queue into the socket.

use crate::error::Disconnect;
use crate::stats::Stats;
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) struct Outbox {
    tx: mpsc::Sender<Bytes>,
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
    ) -> (Arc<Outbox>, mpsc::Receiver<Bytes>) {
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
        if self.closing.is_cancelled() {
            return false;
        }
        let len = frame.len();
        let before = self.queued_bytes.fetch_add(len, Relaxed);
        if before + len > self.max_bytes || self.tx.try_send(frame).is_err() {
            self.queued_bytes.fetch_sub(len, Relaxed);
            self.close(Disconnect::SLOW);
            return false;
        }
        true
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
        assert_eq!(rx.try_recv().unwrap(), "1");
        assert_eq!(stats.snapshot().slow_disconnects, 1);
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
