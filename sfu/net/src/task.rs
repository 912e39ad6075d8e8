//! One shard's task: owns the UDP socket and the [`Shard`], and nothing else touches them.

use crate::config::SfuConfig;
use crate::latency::{LatencyHistogram, rtp_id};
use nexus_sfu_core::{
    Command, Identity, Input, JoinOptions, Output, ParticipantId, Relay, Reply, ServerMessage,
    SfuError, Shard, ShardConfig, ShardStats,
};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Instant;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// Capacity of a participant's queue of server messages. A participant that lets it fill up is
/// disconnected (it may resume), never waited for.
pub(crate) const SIGNAL_QUEUE: usize = 256;
/// The same for a participant with the `admin` grant: in a class it is told of every student
/// who comes, goes or raises a hand (see `nexus_sfu_core::Audience`), so a rush of joins at the
/// start of a lesson must not overflow the teacher's queue. Tokio's channel allocates its slots
/// as they fill, so an idle queue costs no more.
pub(crate) const ADMIN_SIGNAL_QUEUE: usize = 8192;

/// Largest datagram handled (a GRO-coalesced read holds several).
const MAX_DATAGRAM: usize = 2048;
/// Receive buffers per `recvmmsg` call.
const RECV_BUFFERS: usize = 8;
/// `recvmmsg` calls made in one wake-up before outputs are flushed.
const RECV_ROUNDS: usize = 4;
/// Datagrams queued before a flush sends them: few, since the shard hands them out as it
/// produces them (the queue only finds GSO runs, e.g. a subscriber's burst of equal-sized
/// packets).
const SEND_BATCH: usize = 16;
/// Largest GSO send (the kernel's limit is 64 KiB).
const MAX_GSO_BYTES: usize = 60_000;
/// Socket buffer asked for in each direction (the kernel caps it at `net.core.rmem_max` /
/// `wmem_max`). While the shard fans a keyframe out to hundreds of subscribers it does not read
/// for milliseconds; the publisher's datagrams and the subscribers' RTCP must wait in the
/// buffer, and a lost publisher datagram costs every subscriber a frame. (The default ~200 KiB
/// overflowed in the class-room load test once the shard saturated.)
const SOCKET_BUFFER: usize = 4 << 20;
/// Capacity of each shard's queue of messages from the other shards (a room's media among
/// them). A full queue drops the message, as a full socket buffer would drop a datagram.
pub(crate) const RELAY_QUEUE: usize = 4096;
/// Longest sleep of an idle shard's loop.
const IDLE_WAKE: std::time::Duration = std::time::Duration::from_secs(1);
/// Relay messages handled in one wake-up before the loop looks at its socket again.
const RELAY_BATCH: usize = 64;

/// What a shard task publishes about its load, for the handle's placement of new subscribers.
#[derive(Debug, Default)]
pub(crate) struct ShardLoad {
    /// Busy share of the loop over the admission window, in per mille.
    pub(crate) busy_permille: AtomicU32,
    /// Participants on the shard.
    pub(crate) participants: AtomicU32,
}

/// The shard task's ends of the channels between shards.
pub(crate) struct Links {
    /// This shard's queue of messages from the others.
    pub(crate) inbox: mpsc::Receiver<Relay>,
    /// Every shard's queue, by index (this shard's own is not used).
    pub(crate) shards: Vec<mpsc::Sender<Relay>>,
    /// Where this shard's load is published.
    pub(crate) load: Arc<ShardLoad>,
}

/// What a shard task is asked to do.
#[derive(Debug)]
pub(crate) enum ShardCmd {
    /// A core command and where to send its result.
    Core {
        command: Command,
        reply: oneshot::Sender<Result<Reply, SfuError>>,
    },
    /// A room-protocol join: the participant's message queue is registered under its id.
    Join {
        identity: Identity,
        options: JoinOptions,
        messages: mpsc::Sender<ServerMessage>,
        reply: oneshot::Sender<Result<(ParticipantId, u64), SfuError>>,
    },
    /// A participant's signaling connection `conn` closed.
    ConnectionClosed {
        participant: ParticipantId,
        conn: u64,
    },
    /// Counters, busy time (nanoseconds) and the forwarding latency histogram.
    Stats(oneshot::Sender<(ShardStats, u64, LatencyHistogram)>),
    /// Everyone leaves; the task flushes and ends, then replies.
    Shutdown(oneshot::Sender<()>),
}

/// Spawns the task of shard `index` on a thread of its own: a current-thread runtime that runs
/// nothing else, so the shard never waits behind other tasks nor moves between worker threads.
pub(crate) fn spawn(
    index: u8,
    socket: std::net::UdpSocket,
    announce: SocketAddr,
    config: &SfuConfig,
    commands: mpsc::Receiver<ShardCmd>,
    links: Links,
) -> std::io::Result<()> {
    let local = socket.local_addr()?;
    socket.set_nonblocking(true)?;
    let mut shard_config = ShardConfig::new(index, local, rand::random());
    shard_config.announce_addr = announce;
    shard_config.room_close_grace = config.room_close_grace;
    shard_config.reconnect_grace = config.reconnect_grace;
    shard_config.max_busy = config.max_busy;
    shard_config.shards = u8::try_from(links.shards.len()).unwrap_or(u8::MAX);
    let shard = Shard::new(Instant::now(), shard_config)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let udp = UdpSocketState::new((&socket).into())?;
    for (what, set) in [
        (
            "receive",
            udp.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER),
        ),
        (
            "send",
            udp.set_send_buffer_size((&socket).into(), SOCKET_BUFFER),
        ),
    ] {
        if let Err(e) = set {
            tracing::warn!(error = %e, "cannot enlarge the SFU socket's {what} buffer");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("sfu-shard-{index}"))
        .spawn(move || {
            runtime.block_on(async move {
                let socket = match UdpSocket::from_std(socket) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "SFU shard cannot register its socket");
                        return;
                    }
                };
                let task = ShardTask {
                    shard,
                    udp,
                    queued: Vec::with_capacity(SEND_BATCH),
                    gso_buf: Vec::with_capacity(MAX_GSO_BYTES),
                    socket,
                    local,
                    signals: HashMap::new(),
                    next_conn: 1,
                    busy_ns: 0,
                    latency: LatencyHistogram::default(),
                    relays: links.shards,
                    load: links.load,
                };
                task.run(commands, links.inbox).await;
            });
        })?;
    Ok(())
}

struct ShardTask {
    shard: Shard,
    socket: UdpSocket,
    /// GSO/GRO and batched I/O on `socket` (quinn-udp).
    udp: UdpSocketState,
    /// Datagrams polled from the shard, not yet sent.
    queued: Vec<(SocketAddr, Vec<u8>)>,
    /// Where a run of datagrams to one destination is joined for one GSO send.
    gso_buf: Vec<u8>,
    local: SocketAddr,
    /// Room-protocol participants' message queues, with the connection generation.
    signals: HashMap<ParticipantId, (u64, mpsc::Sender<ServerMessage>)>,
    next_conn: u64,
    busy_ns: u64,
    latency: LatencyHistogram,
    /// Every shard's relay queue, by index.
    relays: Vec<mpsc::Sender<Relay>>,
    load: Arc<ShardLoad>,
}

impl ShardTask {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<ShardCmd>,
        mut inbox: mpsc::Receiver<Relay>,
    ) {
        let buf_len = MAX_DATAGRAM * self.udp.gro_segments().max(1);
        let mut bufs = vec![vec![0u8; buf_len]; RECV_BUFFERS];
        let mut meta = vec![RecvMeta::default(); RECV_BUFFERS];
        loop {
            let start = Instant::now();
            let timeout = self.flush().await;
            self.busy(start);
            // At least once a second, so that an idle shard's published busy ratio decays too.
            let deadline = tokio::time::Instant::from_std(timeout.min(start + IDLE_WAKE));
            tokio::select! {
                // Signaling first: a saturated shard (every branch always ready) must still
                // answer offers, stats and shutdown within a loop round.
                biased;
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    let start = Instant::now();
                    if let Some(done) = self.command(cmd) {
                        self.flush().await;
                        let _ = done.send(());
                        break;
                    }
                    self.busy(start);
                }
                Some(message) = inbox.recv() => {
                    let start = Instant::now();
                    // As for reads: a backlog of relayed packets is handled a burst at a time
                    // (so that a subscriber's packets of it form GSO runs), otherwise each
                    // message's outputs go out before the next one is handled.
                    let behind = inbox.len() + 1 >= RECV_BUFFERS;
                    self.shard.handle_relay(start, message);
                    for handled in 1..RELAY_BATCH {
                        if !behind || handled % RECV_BUFFERS == 0 {
                            self.collect().await;
                        }
                        let Ok(message) = inbox.try_recv() else { break };
                        self.shard.handle_relay(Instant::now(), message);
                    }
                    self.collect().await;
                    self.busy(start);
                }
                readable = self.socket.readable() => {
                    let start = Instant::now();
                    if let Err(e) = readable {
                        tracing::debug!(error = %e, "UDP socket failed");
                        continue;
                    }
                    // Drain what is queued (a few batches) before flushing outputs.
                    for _ in 0..RECV_ROUNDS {
                        let mut slices: Vec<IoSliceMut<'_>> =
                            bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                        let (socket, udp) = (&self.socket, &self.udp);
                        let received = socket.try_io(Interest::READABLE, || {
                            udp.recv(socket.into(), &mut slices, &mut meta)
                        });
                        let n = match received {
                            Ok(n) => n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::debug!(error = %e, "UDP receive failed");
                                break;
                            }
                        };
                        let now = Instant::now();
                        // A full read means that datagrams waited in the socket while the shard
                        // worked: it is behind, and the burst (a keyframe's packets, most
                        // likely) is handled whole before its outputs are taken, so that each
                        // subscriber's packets of it come out back to back and leave as one GSO
                        // send. Otherwise each datagram's outputs go out before the next one is
                        // handled (the first subscribers need not wait for the whole read).
                        let behind = n == bufs.len();
                        for (m, buf) in meta.iter().zip(&bufs).take(n) {
                            // A GRO read holds several datagrams of `stride` bytes.
                            for datagram in buf[..m.len].chunks(m.stride.max(1)) {
                                self.receive(now, m.addr, datagram);
                                if !behind {
                                    // Send as produced: queued (and sent once a batch is full)
                                    // before the next datagram is handled.
                                    self.collect().await;
                                }
                            }
                        }
                        if behind {
                            self.collect().await;
                        }
                    }
                    self.busy(start);
                }
                () = tokio::time::sleep_until(deadline) => {
                    let start = Instant::now();
                    self.shard.handle_input(start, Input::Timeout);
                    self.busy(start);
                }
            }
        }
        tracing::debug!(addr = %self.local, "SFU shard stopped");
    }

    /// Counts the work since `start` in the loop time metric and in the shard's busy ratio
    /// (the admission rule, `nexus_sfu_core::load`).
    fn busy(&mut self, start: Instant) {
        let now = Instant::now();
        let busy = now.saturating_duration_since(start);
        self.busy_ns += u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX);
        self.shard.record_busy(now, busy);
        let permille = (self.shard.busy_ratio(now) * 1000.0).clamp(0.0, 1_000_000.0) as u32;
        self.load.busy_permille.store(permille, Relaxed);
    }

    fn receive(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.shard.handle_input(
            now,
            Input::Receive {
                source,
                destination: self.local,
                contents,
            },
        );
    }

    /// Handles a command; returns the shutdown acknowledgement when the task must end.
    fn command(&mut self, cmd: ShardCmd) -> Option<oneshot::Sender<()>> {
        let now = Instant::now();
        let done = self.do_command(now, cmd);
        self.publish_participants();
        done
    }

    /// Publishes the participant count for the handle's placement; done before a command's
    /// reply too, so that a caller's next placement already counts the participant it added.
    fn publish_participants(&self) {
        let participants = u32::try_from(self.shard.stats().participants).unwrap_or(u32::MAX);
        self.load.participants.store(participants, Relaxed);
    }

    fn do_command(&mut self, now: Instant, cmd: ShardCmd) -> Option<oneshot::Sender<()>> {
        match cmd {
            ShardCmd::Core { command, reply } => {
                let result = self.shard.handle_command(now, command);
                self.publish_participants();
                let _ = reply.send(result);
            }
            ShardCmd::Join {
                identity,
                options,
                messages,
                reply,
            } => {
                let result = self
                    .shard
                    .handle_command(now, Command::Join { identity, options });
                let result = match result {
                    Ok(Reply::Joined { participant }) => {
                        let conn = self.next_conn;
                        self.next_conn += 1;
                        // A resume replaces the old connection's queue; that one ends.
                        self.signals.insert(participant, (conn, messages));
                        Ok((participant, conn))
                    }
                    Ok(_) => Err(SfuError::Rtc("unexpected reply".into())),
                    Err(e) => Err(e),
                };
                self.publish_participants();
                let _ = reply.send(result);
            }
            ShardCmd::ConnectionClosed { participant, conn } => {
                if self
                    .signals
                    .get(&participant)
                    .is_some_and(|(c, _)| *c == conn)
                {
                    self.signals.remove(&participant);
                    let _ = self
                        .shard
                        .handle_command(now, Command::Disconnected(participant));
                }
            }
            ShardCmd::Stats(reply) => {
                let _ = reply.send((self.shard.stats(), self.busy_ns, self.latency.clone()));
            }
            ShardCmd::Shutdown(done) => {
                let _ = self.shard.handle_command(now, Command::Shutdown);
                return Some(done);
            }
        }
        None
    }

    /// Sends everything the shard has to send; returns its next timeout.
    async fn flush(&mut self) -> Instant {
        let next = self.collect().await;
        self.send_queued().await;
        next
    }

    /// Takes the shard's outputs: datagrams are queued and sent a batch at a time, messages
    /// go to their participants. Returns the shard's next timeout.
    async fn collect(&mut self) -> Instant {
        loop {
            match self.shard.poll_output() {
                Output::Timeout(t) => return t,
                Output::Transmit {
                    destination,
                    contents,
                } => {
                    self.queued.push((destination, contents));
                    if self.queued.len() >= SEND_BATCH {
                        self.send_queued().await;
                    }
                }
                Output::Signal { to, message } => self.signal(to, message),
                Output::Relay { to, message } => {
                    let sent = self
                        .relays
                        .get(usize::from(to))
                        .map(|q| q.try_send(message));
                    if !matches!(sent, Some(Ok(()))) {
                        tracing::debug!(shard = to, "relay queue full or gone; message dropped");
                    }
                }
            }
        }
    }

    /// Sends the queued datagrams: each run of consecutive datagrams to one destination whose
    /// sizes allow it (all equal, the last possibly shorter) goes out as one GSO `sendmsg`,
    /// which the kernel cuts into datagrams. A shard emits a subscriber's packets of a frame
    /// back to back, so a video frame of several packets costs one system call.
    async fn send_queued(&mut self) {
        let queued = std::mem::take(&mut self.queued);
        let max_segments = self.udp.max_gso_segments().max(1);
        let mut i = 0;
        while i < queued.len() {
            let (destination, first) = (&queued[i].0, &queued[i].1);
            let size = first.len();
            let mut end = i + 1;
            let mut bytes = size;
            while end < queued.len()
                && end - i < max_segments
                && queued[end].0 == *destination
                && queued[end - 1].1.len() == size
                && queued[end].1.len() <= size
                && bytes + queued[end].1.len() <= MAX_GSO_BYTES
            {
                bytes += queued[end].1.len();
                end += 1;
            }
            let contents: &[u8] = if end - i == 1 {
                first
            } else {
                self.gso_buf.clear();
                for (_, d) in &queued[i..end] {
                    self.gso_buf.extend_from_slice(d);
                }
                &self.gso_buf
            };
            let transmit = Transmit {
                destination: *destination,
                ecn: None,
                contents,
                segment_size: (end - i > 1).then_some(size),
                src_ip: None,
            };
            loop {
                let (socket, udp) = (&self.socket, &self.udp);
                match socket.try_io(Interest::WRITABLE, || udp.send(socket.into(), &transmit)) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if let Err(e) = self.socket.writable().await {
                            tracing::debug!(error = %e, "UDP send failed");
                            break;
                        }
                    }
                    // Other errors are logged by quinn-udp; UDP loss is the peers' business.
                    _ => break,
                }
            }
            let sent = Instant::now();
            for (_, d) in &queued[i..end] {
                if let Some(arrived) = rtp_id(d).and_then(|(s, n)| self.shard.take_arrival(s, n)) {
                    self.latency.record(sent.saturating_duration_since(arrived));
                }
            }
            i = end;
        }
        // Keep the allocation for the next batch.
        self.queued = queued;
        self.queued.clear();
    }

    fn signal(&mut self, to: ParticipantId, message: ServerMessage) {
        let leaving = matches!(message, ServerMessage::Leave { .. });
        let Some((_, tx)) = self.signals.get(&to) else {
            return;
        };
        if tx.try_send(message).is_err() {
            // Lagging or gone: drop its connection; it may resume with its token.
            tracing::debug!(participant = %to, "signaling queue full or closed; disconnecting");
            self.signals.remove(&to);
            let _ = self
                .shard
                .handle_command(Instant::now(), Command::Disconnected(to));
            return;
        }
        if leaving {
            self.signals.remove(&to);
        }
    }
}
