//! One shard's task: owns the UDP socket and the [`Shard`], and nothing else touches them.

use crate::config::SfuConfig;
use crate::latency::{ForwardClock, LatencyHistogram};
use nexus_sfu_core::{
    Command, Identity, Input, JoinOptions, Output, ParticipantId, Reply, ServerMessage, SfuError,
    Shard, ShardConfig, ShardStats,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// Capacity of a participant's queue of server messages. A participant that lets it fill up is
/// disconnected (it may resume), never waited for.
pub(crate) const SIGNAL_QUEUE: usize = 256;

/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams read in one go before outputs are flushed.
const RECV_BATCH: usize = 32;

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

/// Spawns the task of shard `index`.
pub(crate) fn spawn(
    index: u8,
    socket: UdpSocket,
    announce: SocketAddr,
    config: &SfuConfig,
    commands: mpsc::Receiver<ShardCmd>,
) -> std::io::Result<()> {
    let local = socket.local_addr()?;
    let mut shard_config = ShardConfig::new(index, local, rand::random());
    shard_config.announce_addr = announce;
    shard_config.room_close_grace = config.room_close_grace;
    shard_config.reconnect_grace = config.reconnect_grace;
    let shard = Shard::new(Instant::now(), shard_config)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let task = ShardTask {
        shard,
        socket,
        local,
        signals: HashMap::new(),
        next_conn: 1,
        busy_ns: 0,
        clock: ForwardClock::default(),
    };
    tokio::spawn(task.run(commands));
    Ok(())
}

struct ShardTask {
    shard: Shard,
    socket: UdpSocket,
    local: SocketAddr,
    /// Room-protocol participants' message queues, with the connection generation.
    signals: HashMap<ParticipantId, (u64, mpsc::Sender<ServerMessage>)>,
    next_conn: u64,
    busy_ns: u64,
    clock: ForwardClock,
}

impl ShardTask {
    async fn run(mut self, mut commands: mpsc::Receiver<ShardCmd>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let timeout = self.flush().await;
            let deadline = tokio::time::Instant::from_std(timeout);
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    let start = Instant::now();
                    if let Some(done) = self.command(cmd) {
                        self.flush().await;
                        let _ = done.send(());
                        break;
                    }
                    self.busy_ns += elapsed_ns(start);
                }
                received = self.socket.recv_from(&mut buf) => {
                    let start = Instant::now();
                    match received {
                        Ok((n, source)) => self.receive(start, source, &buf[..n]),
                        Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
                    }
                    // Drain what else is queued before flushing outputs.
                    for _ in 1..RECV_BATCH {
                        match self.socket.try_recv_from(&mut buf) {
                            Ok((n, source)) => self.receive(Instant::now(), source, &buf[..n]),
                            Err(_) => break,
                        }
                    }
                    self.busy_ns += elapsed_ns(start);
                }
                () = tokio::time::sleep_until(deadline) => {
                    let start = Instant::now();
                    self.shard.handle_input(start, Input::Timeout);
                    self.busy_ns += elapsed_ns(start);
                }
            }
        }
        tracing::debug!(addr = %self.local, "SFU shard stopped");
    }

    fn receive(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.clock.ingress(contents, now);
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
        match cmd {
            ShardCmd::Core { command, reply } => {
                let _ = reply.send(self.shard.handle_command(now, command));
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
                let _ = reply.send((
                    self.shard.stats(),
                    self.busy_ns,
                    self.clock.histogram.clone(),
                ));
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
        loop {
            match self.shard.poll_output() {
                Output::Timeout(t) => return t,
                Output::Transmit {
                    destination,
                    contents,
                } => {
                    match self.socket.try_send_to(&contents, destination) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            let _ = self.socket.send_to(&contents, destination).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "UDP send failed"),
                    }
                    let shard = &self.shard;
                    self.clock
                        .egress(&contents, destination, Instant::now(), || {
                            shard.resend_payload_types(destination)
                        });
                }
                Output::Signal { to, message } => self.signal(to, message),
            }
        }
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

fn elapsed_ns(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
