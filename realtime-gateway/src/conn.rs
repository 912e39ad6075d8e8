//! One client connection, over any `Sink`/`Stream` of WebSocket messages.
//!
//! A connection runs as two tasks: the *session* reads frames, runs commands one after the
//! other and keeps the timers (connect deadline, pings, token expiry); the *writer* drains the
//! connection's bounded outbox into the sink as soon as something is queued, coalescing what
//! queued up meanwhile into one frame (no flush timer). They are separate tasks so that a
//! delivery wakes only the writer. Either ends the connection by closing the outbox with a
//! [`Disconnect`]; the writer then sends the close frame and the session cleans up
//! (hub, presence, registry).

use crate::channel::{self, Action, Principal};
use crate::config::NamespaceConfig;
use crate::engine::HistoryQuery;
use crate::error::{Disconnect, ErrorCode, GatewayError};
use crate::gateway::{ConnHandle, Control, Gateway, history_options};
use crate::geo::{GeoFilter, Location};
use crate::hub::ConnId;
use crate::outbox::{DirectSocket, Outbox, Queued, SocketForClose, Stamps};
use crate::protocol::{
    self, ClientInfo, Command, ConnectRequest, ConnectResult, Empty, Method, PresenceResult,
    Publication, RawJson, RefreshResult, SubscribeResult,
};
use crate::stats::{Stats, Tally, unix_micros};
use crate::wire;
use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use nexus_auth::AuthError;
use nexus_auth::token::unix_now;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};

/// The server version announced in connect replies.
pub const VERSION: &str = concat!("nexus-gateway ", env!("CARGO_PKG_VERSION"));

/// A message from the client's transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text frame: newline-separated JSON commands.
    Text(String),
    /// A binary frame (refused: this gateway speaks the JSON protocol).
    Binary(Bytes),
    /// The client closed the connection.
    Close,
}

/// A message for the client's transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text frame: one or more newline-separated JSON replies and pushes.
    Text(Bytes),
    /// A close frame.
    Close {
        /// Close code (see [`Disconnect`]).
        code: u16,
        /// Close reason.
        reason: String,
    },
}

impl Gateway {
    /// Serves one client connection until it ends.
    ///
    /// The transport is any sink of [`Outgoing`] and stream of [`Incoming`]; [`crate::router`]
    /// adapts axum's WebSocket to it when the connection's own socket is out of reach (TLS),
    /// and tests drive it with in-memory channels.
    pub async fn serve_connection<S, R, E>(&self, sink: S, stream: R)
    where
        S: Sink<Outgoing> + Unpin + Send + 'static,
        R: Stream<Item = Result<Incoming, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let cfg = &self.inner.config;
        let stats = self.inner.stats.clone();
        let (outbox, rx) = Outbox::new(
            cfg.client_queue_max_messages,
            cfg.client_queue_max_bytes,
            stats.clone(),
        );
        let writer = write_loop(
            sink,
            rx,
            outbox.clone(),
            cfg.max_write_batch_bytes,
            Duration::from_secs(cfg.close_timeout_secs),
            stats,
        );
        self.serve(outbox, writer, stream).await;
    }

    /// Serves one client connection over its TCP socket, after the WebSocket handshake.
    /// `early`: bytes the client sent after its handshake request that were read with it.
    ///
    /// The gateway frames the socket itself (RFC 6455, server side), so that a delivery can write
    /// its frame straight to the socket (see `outbox`): no writer task to wake, no copy into
    /// a framing buffer.
    pub async fn serve_tcp(&self, tcp: tokio::net::TcpStream, early: Bytes) {
        let cfg = &self.inner.config;
        let stats = self.inner.stats.clone();
        let _ = tcp.set_nodelay(true);
        let (outbox, rx) = Outbox::with_socket(
            cfg.client_queue_max_messages,
            cfg.client_queue_max_bytes,
            stats.clone(),
            Some(DirectSocket::new(tcp)),
        );
        let writer = raw_write_loop(
            rx,
            outbox.clone(),
            cfg.max_write_batch_bytes,
            Duration::from_secs(cfg.close_timeout_secs),
            stats,
        );
        let stream = read_frames(outbox.clone(), early, cfg.max_frame_bytes);
        self.serve(outbox, writer, Box::pin(stream)).await;
    }

    async fn serve<W, R, E>(&self, outbox: Arc<Outbox>, writer: W, stream: R)
    where
        W: Future<Output = ()> + Send + 'static,
        R: Stream<Item = Result<Incoming, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let inner = &self.inner;
        let stats = inner.stats.clone();
        stats.connections.fetch_add(1, Relaxed);
        stats.connections_total.fetch_add(1, Relaxed);
        let (ctrl_tx, ctrl_rx) = mpsc::channel(64);
        let session = Session {
            gw: self.clone(),
            id: inner.next_conn.fetch_add(1, Relaxed),
            client: uuid::Uuid::new_v4().to_string().into(),
            outbox,
            ctrl: ctrl_tx,
            state: State::Connecting,
        };
        // The writer runs as its own task, so a delivery wakes the writer alone. (Joined in
        // one task, every delivery also re-polled the session's socket read, timers and
        // shutdown token: `join!` polls every branch on every wake-up.)
        let mut writer = AbortOnDrop(tokio::spawn(writer));
        session.run(stream, ctrl_rx).await;
        let _ = (&mut writer.0).await;
        stats.connections.fetch_sub(1, Relaxed);
    }
}

/// Read buffer of a connection served over its socket, reserved only while reading: an idle
/// connection holds none.
const READ_CHUNK: usize = 4 << 10;

/// The client's messages, read and unframed from its socket. Pings are answered here (the
/// pong goes through the outbox, in order with everything else); a protocol violation ends
/// the stream with an error.
fn read_frames(
    outbox: Arc<Outbox>,
    early: Bytes,
    max_message: usize,
) -> impl Stream<Item = Result<Incoming, String>> + Send {
    let reader = wire::FrameReader::new(max_message);
    let buf = BytesMut::from(&early[..]);
    futures_util::stream::unfold(
        (outbox, reader, buf, false),
        |(outbox, mut reader, mut buf, done)| async move {
            if done {
                return None;
            }
            loop {
                let frame = match reader.next(&mut buf) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => {
                        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
                            buf.reserve(READ_CHUNK);
                        }
                        let read = match outbox.socket() {
                            Some(socket) => read_some(socket.tcp(), &mut buf).await,
                            None => Ok(0),
                        };
                        match read {
                            Ok(0) => return None,
                            Ok(_) => continue,
                            Err(e) => {
                                return Some((Err(e.to_string()), (outbox, reader, buf, true)));
                            }
                        }
                    }
                    Err(e) => {
                        // Not WebSocket as RFC 6455 defines it: 3501, like a malformed command.
                        outbox.close(Disconnect::BAD_REQUEST);
                        return Some((Err(e.to_string()), (outbox, reader, buf, true)));
                    }
                };
                let item = match frame {
                    wire::ClientFrame::Ping(payload) => {
                        outbox.push_framed(wire::frame(wire::OP_PONG, &payload));
                        continue;
                    }
                    wire::ClientFrame::Text(t) => Incoming::Text(t),
                    wire::ClientFrame::Binary(b) => Incoming::Binary(b),
                    wire::ClientFrame::Close => Incoming::Close,
                };
                if buf.is_empty() {
                    buf = BytesMut::new();
                }
                return Some((Ok(item), (outbox, reader, buf, false)));
            }
        },
    )
}

/// Reads what the socket has into `buf`, waiting until it has something.
async fn read_some(tcp: &tokio::net::TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    loop {
        tcp.readable().await?;
        match tcp.try_read_buf(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// The writer of a connection served over its socket: writes what the outbox queued (when
/// a delivery could not write directly), several frames per system call, then the close
/// frame.
async fn raw_write_loop(
    mut rx: mpsc::Receiver<Queued>,
    outbox: Arc<Outbox>,
    max_batch: usize,
    close_timeout: Duration,
    stats: Arc<Stats>,
) {
    let mut carry: Option<Queued> = None;
    let mut buf = BytesMut::new();
    // Stamps of the frames in `buf`, counted once they are written.
    let mut stamps: Vec<Stamps> = Vec::new();
    let mut tally = Tally::default();
    // When the connection closes in the middle of a write: the socket (still held) and the
    // bytes not yet written, which go out before the close frame.
    let mut unfinished: Option<(&DirectSocket, Bytes)> = None;
    'frames: loop {
        let first = match carry.take() {
            Some(f) => f,
            None => match outbox.next(&mut rx).await {
                Some(f) => f,
                None => break,
            },
        };
        // Queued frames still count as queued, so no delivery writes around them.
        let Some(socket) = outbox.take_socket().await else {
            break;
        };
        buf.clear();
        stamps.clear();
        let mut payload_bytes = 0;
        let mut next = Some(first);
        while let Some(q) = next.take() {
            let framed = matches!(q.stamps, Stamps::Framed);
            let (h, hl) = wire::header(wire::OP_TEXT, q.frame.len());
            let add = q.frame.len() + if framed { 0 } else { hl };
            if !buf.is_empty() && buf.len() + add > max_batch {
                carry = Some(q);
                break;
            }
            if !framed {
                buf.extend_from_slice(&h[..hl]);
            }
            buf.extend_from_slice(&q.frame);
            payload_bytes += q.frame.len();
            stamps.push(q.stamps);
            next = rx.try_recv().ok();
        }
        let mut at = 0;
        while at < buf.len() {
            let failed = match socket.tcp().try_write(&buf[at..]) {
                Ok(n) => {
                    at += n;
                    false
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    match outbox.writable(socket).await {
                        Ok(true) => false,
                        Ok(false) => {
                            unfinished = Some((socket, buf.split_off(at).freeze()));
                            break 'frames;
                        }
                        Err(_) => true,
                    }
                }
                Err(_) => true,
            };
            if failed {
                outbox.close(Disconnect::WRITE_ERROR);
                break 'frames;
            }
        }
        let now = unix_micros();
        for s in &stamps {
            tally.written(s, now);
        }
        tally.flush(&stats);
        outbox.dequeued(payload_bytes);
        outbox.release(socket);
    }
    let code = match outbox.reason() {
        None => return,
        Some(d) if d.code == Disconnect::WRITE_ERROR.code => return,
        // The client closed: echo a normal close (RFC 6455 §5.5.1).
        Some(d) if d.code == Disconnect::CONNECTION_CLOSED.code => (1000, ""),
        Some(d) => (d.code, d.reason.as_ref()),
    };
    let close = wire::frame(wire::OP_CLOSE, &wire::close_payload(code.0, code.1));
    // A frame begun (by this task, or by a delivery that handed its rest over) is finished
    // first: a close frame cannot cut into it. Bounded by the close timeout, like the rest.
    let _ = timeout(close_timeout, async {
        let (socket, rest) = match unfinished {
            Some(u) => u,
            None => loop {
                match outbox.socket_for_close() {
                    SocketForClose::Free(s) => break (s, Bytes::new()),
                    SocketForClose::Handed(s) => {
                        let rest = rx.try_recv().map(|q| q.frame).unwrap_or_default();
                        break (s, rest);
                    }
                    // A delivery that began before the close is inside its system call.
                    SocketForClose::Busy => tokio::task::yield_now().await,
                    SocketForClose::None => return,
                }
            },
        };
        for bytes in [rest, close] {
            let mut at = 0;
            while at < bytes.len() {
                match socket.tcp().try_write(&bytes[at..]) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if socket.tcp().writable().await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        }
    })
    .await;
    drop(rx);
    outbox.shutdown_socket();
}

/// The writer task of a connection whose `serve_connection` future is dropped (server
/// shutdown) goes with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn stamp(stamps: &mut Vec<u64>, q: &Queued) {
    q.stamps.extend_into(stamps);
}

async fn write_loop<S: Sink<Outgoing> + Unpin>(
    mut sink: S,
    mut rx: mpsc::Receiver<Queued>,
    outbox: Arc<Outbox>,
    max_batch: usize,
    close_timeout: Duration,
    stats: Arc<Stats>,
) {
    let mut carry: Option<Queued> = None;
    // Publish times of the publications in the frame being written.
    let mut stamps: Vec<u64> = Vec::new();
    loop {
        // A frame goes out as soon as it is queued: no timer, no waiting for more. What
        // queued up meanwhile (while the previous write ran) rides in the same frame.
        let first = match carry.take() {
            Some(f) if !outbox.is_closed() => f,
            Some(_) => break,
            None => match outbox.next(&mut rx).await {
                Some(f) => {
                    outbox.dequeued(f.frame.len());
                    f
                }
                None => break,
            },
        };
        stamps.clear();
        stamp(&mut stamps, &first);
        // Coalesce what is already queued into one frame (newline-separated, as the JSON
        // protocol allows), up to `max_batch` bytes.
        let frame = match rx.try_recv() {
            Err(_) => first.frame,
            Ok(second) => {
                outbox.dequeued(second.frame.len());
                let mut buf = BytesMut::with_capacity(
                    max_batch.min(first.frame.len() + second.frame.len() + 64),
                );
                buf.extend_from_slice(&first.frame);
                let mut next = Some(second);
                while let Some(f) = next.take() {
                    if buf.len() + 1 + f.frame.len() > max_batch {
                        carry = Some(f);
                        break;
                    }
                    buf.extend_from_slice(b"\n");
                    buf.extend_from_slice(&f.frame);
                    stamp(&mut stamps, &f);
                    if let Ok(f) = rx.try_recv() {
                        outbox.dequeued(f.frame.len());
                        next = Some(f);
                    }
                }
                buf.freeze()
            }
        };
        match outbox.unless_closed(sink.send(Outgoing::Text(frame))).await {
            None => break,
            Some(Err(_)) => {
                outbox.close(Disconnect::WRITE_ERROR);
                break;
            }
            Some(Ok(())) => {
                stats.frames_written.fetch_add(1, Relaxed);
                if !stamps.is_empty() {
                    let now = unix_micros();
                    for &t in &stamps {
                        stats.publish_write.observe_micros(now.saturating_sub(t));
                    }
                }
            }
        }
    }
    drop(rx);
    if let Some(d) = outbox.reason()
        && d.code != Disconnect::CONNECTION_CLOSED.code
        && d.code != Disconnect::WRITE_ERROR.code
    {
        let close = Outgoing::Close {
            code: d.code,
            reason: d.reason.to_string(),
        };
        let _ = timeout(close_timeout, sink.send(close)).await;
    }
    let _ = timeout(close_timeout, sink.close()).await;
}

enum State {
    Connecting,
    Connected(Box<Connected>),
}

struct Connected {
    principal: Principal,
    user: Arc<str>,
    info: ClientInfo,
    expires_at: Option<Instant>,
    subs: HashMap<String, ChannelSub>,
}

struct ChannelSub {
    presence: bool,
    join_leave: bool,
}

/// Why a command failed: an error reply, or the end of the connection.
enum Fail {
    Reply(GatewayError),
    Close(Disconnect),
}

impl From<GatewayError> for Fail {
    fn from(e: GatewayError) -> Self {
        Fail::Reply(e)
    }
}

struct Session {
    gw: Gateway,
    id: ConnId,
    client: Arc<str>,
    outbox: Arc<Outbox>,
    ctrl: mpsc::Sender<Control>,
    state: State,
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Session {
    async fn run<R, E>(mut self, mut stream: R, mut ctrl_rx: mpsc::Receiver<Control>)
    where
        R: Stream<Item = Result<Incoming, E>> + Unpin,
        E: std::fmt::Display,
    {
        let cfg = self.gw.inner.config.clone();
        let closing = self.outbox.closing().clone();
        let shutdown = self.gw.inner.shutdown.clone();
        let connect_deadline = Instant::now() + Duration::from_secs(cfg.connect_timeout_secs);
        let pong_timeout = Duration::from_secs(cfg.pong_timeout_secs);
        let mut ping =
            tokio::time::interval_at(Instant::now() + cfg.ping_interval(), cfg.ping_interval());
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pong_deadline: Option<Instant> = None;
        loop {
            let (connected, deadline) = match &self.state {
                State::Connecting => (false, Some(connect_deadline)),
                State::Connected(c) => (true, c.expires_at),
            };
            tokio::select! {
                biased;
                _ = closing.cancelled() => break,
                _ = shutdown.cancelled() => {
                    self.outbox.close(Disconnect::SHUTDOWN);
                    break;
                }
                msg = stream.next() => {
                    let text = match msg {
                        Some(Ok(Incoming::Text(t))) => t,
                        Some(Ok(Incoming::Binary(_))) => {
                            self.outbox.close(Disconnect::BAD_REQUEST);
                            break;
                        }
                        Some(Err(e)) => {
                            tracing::debug!(client = %self.client, error = %e, "transport error");
                            self.outbox.close(Disconnect::CONNECTION_CLOSED);
                            break;
                        }
                        None | Some(Ok(Incoming::Close)) => {
                            self.outbox.close(Disconnect::CONNECTION_CLOSED);
                            break;
                        }
                    };
                    if let Err(d) = self.handle_frame(&text, &mut pong_deadline).await {
                        self.outbox.close(d);
                        break;
                    }
                }
                _ = ping.tick(), if connected => {
                    self.outbox.push(Bytes::from_static(protocol::PING));
                    if pong_deadline.is_none() {
                        pong_deadline = Some(Instant::now() + pong_timeout);
                    }
                    self.refresh_presence().await;
                }
                _ = sleep_opt(pong_deadline) => {
                    self.outbox.close(Disconnect::NO_PONG);
                    break;
                }
                _ = sleep_opt(deadline) => {
                    self.outbox.close(if connected { Disconnect::EXPIRED } else { Disconnect::STALE });
                    break;
                }
                Some(c) = ctrl_rx.recv() => self.handle_control(c).await,
            }
        }
        self.cleanup().await;
    }

    fn push(&self, frame: Bytes) {
        if self.outbox.push(frame) {
            self.gw.inner.stats.messages_sent.fetch_add(1, Relaxed);
        }
    }

    fn connected(&self) -> Option<&Connected> {
        match &self.state {
            State::Connected(c) => Some(c),
            State::Connecting => None,
        }
    }

    fn connected_mut(&mut self) -> Option<&mut Connected> {
        match &mut self.state {
            State::Connected(c) => Some(c),
            State::Connecting => None,
        }
    }

    async fn handle_frame(
        &mut self,
        text: &str,
        pong_deadline: &mut Option<Instant>,
    ) -> Result<(), Disconnect> {
        if text.len() > self.gw.inner.config.max_frame_bytes {
            return Err(Disconnect::BAD_REQUEST);
        }
        let commands = protocol::decode_frame(text).map_err(|e| {
            tracing::debug!(client = %self.client, error = %e, "malformed frame");
            Disconnect::BAD_REQUEST
        })?;
        self.gw
            .inner
            .stats
            .messages_received
            .fetch_add(commands.len() as u64, Relaxed);
        for cmd in commands {
            self.handle_command(cmd, pong_deadline).await?;
        }
        Ok(())
    }

    async fn handle_command(
        &mut self,
        cmd: Command,
        pong_deadline: &mut Option<Instant>,
    ) -> Result<(), Disconnect> {
        let id = cmd.id;
        let connected = matches!(self.state, State::Connected(_));
        let result = match cmd.method {
            Method::Pong => {
                *pong_deadline = None;
                return Ok(());
            }
            Method::Connect(req) if !connected => return self.connect(id, req).await,
            Method::Connect(_) => return Err(Disconnect::BAD_REQUEST),
            _ if !connected => return Err(Disconnect::BAD_REQUEST),
            Method::Send => return Ok(()),
            method => self.dispatch(id, method).await,
        };
        match result {
            Ok(Some(reply)) if id != 0 => self.push(reply),
            Ok(_) => {}
            Err(Fail::Reply(e)) => {
                if matches!(e, GatewayError::Engine(_) | GatewayError::Internal(_)) {
                    tracing::warn!(client = %self.client, error = %e, "command failed");
                }
                if id != 0 {
                    self.push(protocol::encode_error(id, &e));
                }
            }
            Err(Fail::Close(d)) => return Err(d),
        }
        Ok(())
    }

    async fn connect(&mut self, id: u32, req: ConnectRequest) -> Result<(), Disconnect> {
        let claims = match self.gw.inner.keys.verify(&req.token) {
            Ok(c) => c,
            Err(AuthError::Expired) => {
                // Centrifugo answers 109: the client gets a new token and reconnects.
                self.push(protocol::encode_error(id, &GatewayError::TokenExpired));
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(client = %self.client, error = %e, "connect refused");
                return Err(Disconnect::INVALID_TOKEN);
            }
        };
        if claims.sub.is_empty() {
            return Err(Disconnect::INVALID_TOKEN);
        }
        let user: Arc<str> = claims.sub.as_str().into();
        let info = ClientInfo {
            user: claims.sub.clone(),
            client: self.client.to_string(),
            conn_info: claims
                .name
                .as_ref()
                .map(|n| serde_json::json!({ "name": n })),
        };
        let principal = Principal::from_claims(&claims);
        let server_channels = principal.channels.clone();
        self.state = State::Connected(Box::new(Connected {
            principal,
            user: user.clone(),
            info,
            expires_at: Some(self.expiry_instant(claims.exp)),
            subs: HashMap::new(),
        }));
        self.gw.register(
            &user,
            Arc::new(ConnHandle {
                id: self.id,
                client: self.client.clone(),
                outbox: self.outbox.clone(),
                ctrl: self.ctrl.clone(),
            }),
        );

        let config = self.gw.inner.config.clone();
        let mut subs = BTreeMap::new();
        let mut activate = Vec::new();
        for ch in server_channels {
            let Ok(ns) = channel::resolve(&config, &ch) else {
                tracing::debug!(channel = %ch, "token names an unknown channel: not subscribed");
                continue;
            };
            let recover = req
                .subs
                .get(&ch)
                .filter(|s| s.recover)
                .map(|s| (s.offset, s.epoch.clone()));
            match self.subscribe_channel(&ch, ns, None, recover).await {
                Ok((res, after)) => {
                    subs.insert(ch.clone(), res);
                    activate.push((ch, after));
                }
                Err(e) => tracing::warn!(channel = %ch, error = %e, "server-side subscribe failed"),
            }
        }
        let result = ConnectResult {
            client: self.client.to_string(),
            version: VERSION,
            expires: true,
            ttl: claims.exp.saturating_sub(unix_now()).max(1),
            subs,
            ping: config.ping_interval_secs,
            pong: true,
            node: config.node_name.clone(),
        };
        self.push(protocol::encode_reply(id, "connect", &result));
        for (ch, after) in activate {
            self.gw.inner.hub.activate(&ch, self.id, after).await;
        }
        Ok(())
    }

    fn expiry_instant(&self, exp: u64) -> Instant {
        let left = exp.saturating_sub(unix_now());
        Instant::now()
            + Duration::from_secs(left)
            + Duration::from_secs(self.gw.inner.config.expired_close_delay_secs)
    }

    fn principal(&self) -> Result<&Principal, Fail> {
        self.connected()
            .map(|c| &c.principal)
            .ok_or(Fail::Close(Disconnect::BAD_REQUEST))
    }

    async fn dispatch(&mut self, id: u32, method: Method) -> Result<Option<Bytes>, Fail> {
        let config = self.gw.inner.config.clone();
        let name = method.name();
        let reply = |r: &dyn erased::Ser| Ok(Some(erased::reply(id, name, r)));
        match method {
            Method::Subscribe(req) => {
                let ns = channel::resolve(&config, &req.channel)?;
                channel::check(ns, &req.channel, self.principal()?, Action::Subscribe)?;
                let geo = if ns.geo_filter {
                    GeoFilter::from_subscribe_data(req.data.as_ref())?
                } else {
                    None
                };
                let recover = req.recover.then(|| (req.offset, req.epoch.clone()));
                let (res, after) = self
                    .subscribe_channel(&req.channel, ns, geo, recover)
                    .await?;
                // The reply must be queued before buffered publications are released.
                self.push(protocol::encode_reply(id, name, &res));
                self.gw
                    .inner
                    .hub
                    .activate(&req.channel, self.id, after)
                    .await;
                Ok(None)
            }
            Method::Unsubscribe(req) => {
                let sub = self
                    .connected_mut()
                    .and_then(|c| c.subs.remove(&req.channel));
                if let Some(sub) = sub {
                    self.leave_channel(&req.channel, sub).await;
                }
                reply(&Empty {})
            }
            Method::Publish(req) => {
                let ns = channel::resolve(&config, &req.channel)?;
                channel::check(ns, &req.channel, self.principal()?, Action::Publish)?;
                let info = self.connected().map(|c| c.info.clone());
                self.gw
                    .publish_raw(&req.channel, RawJson::from_value(&req.data), info)
                    .await?;
                reply(&Empty {})
            }
            Method::History(req) => {
                let ns = channel::resolve(&config, &req.channel)?;
                channel::check(ns, &req.channel, self.principal()?, Action::History)?;
                let res = self
                    .gw
                    .history(&req.channel, req.limit, req.since, req.reverse)
                    .await?;
                reply(&res)
            }
            Method::Presence(req) => {
                let ns = channel::resolve(&config, &req.channel)?;
                channel::check(ns, &req.channel, self.principal()?, Action::Presence)?;
                let presence = self.gw.presence(&req.channel).await?;
                reply(&PresenceResult { presence })
            }
            Method::PresenceStats(req) => {
                let ns = channel::resolve(&config, &req.channel)?;
                channel::check(ns, &req.channel, self.principal()?, Action::Presence)?;
                let stats = self.gw.presence_stats(&req.channel).await?;
                reply(&stats)
            }
            Method::Refresh(req) => {
                let claims = match self.gw.inner.keys.verify(&req.token) {
                    Ok(c) => c,
                    Err(AuthError::Expired) => return Err(Fail::Reply(GatewayError::TokenExpired)),
                    Err(_) => return Err(Fail::Close(Disconnect::INVALID_TOKEN)),
                };
                let expires_at = self.expiry_instant(claims.exp);
                let c = self
                    .connected_mut()
                    .ok_or(Fail::Close(Disconnect::BAD_REQUEST))?;
                if *c.user != *claims.sub {
                    return Err(Fail::Close(Disconnect::INVALID_TOKEN));
                }
                c.expires_at = Some(expires_at);
                c.principal = Principal::from_claims(&claims);
                reply(&RefreshResult {
                    client: self.client.to_string(),
                    version: VERSION,
                    expires: true,
                    ttl: claims.exp.saturating_sub(unix_now()).max(1),
                })
            }
            Method::Ping => reply(&Empty {}),
            Method::Rpc | Method::SubRefresh => Err(Fail::Reply(GatewayError::NotAvailable)),
            Method::Unknown => Ok(Some(protocol::encode_error_code(
                id,
                ErrorCode::METHOD_NOT_FOUND,
            ))),
            Method::Connect(_) | Method::Send | Method::Pong => Ok(None),
        }
    }

    /// Subscribes this connection: hub (buffering), node interest, position or recovery,
    /// presence. Returns the reply and the offset after which buffered publications are
    /// still to be delivered; the caller queues the reply, then activates.
    async fn subscribe_channel(
        &mut self,
        channel: &str,
        ns: &NamespaceConfig,
        geo: Option<GeoFilter>,
        recover: Option<(u64, String)>,
    ) -> Result<(SubscribeResult, u64), GatewayError> {
        let max_subs = self.gw.inner.config.max_channels_per_connection;
        let c = self
            .connected()
            .ok_or_else(|| GatewayError::Internal("subscribe before connect".into()))?;
        if c.subs.contains_key(channel) {
            return Err(GatewayError::AlreadySubscribed);
        }
        if c.subs.len() >= max_subs {
            return Err(GatewayError::LimitExceeded);
        }
        let info = c.info.clone();
        let inner = self.gw.inner.clone();
        inner
            .hub
            .subscribe(channel, self.id, self.outbox.clone(), geo.map(|g| g.bbox))
            .await?;
        let positioned = async {
            inner.engine.subscribe_node(channel).await?;
            match self.position(channel, ns, geo, recover).await {
                Ok(r) => Ok(r),
                Err(e) => {
                    let _ = inner.engine.unsubscribe_node(channel).await;
                    Err(e)
                }
            }
        }
        .await;
        let (res, after) = match positioned {
            Ok(r) => r,
            Err(e) => {
                inner.hub.unsubscribe(channel, self.id).await;
                return Err(e);
            }
        };
        if ns.presence {
            let ttl = Duration::from_secs(inner.config.presence_ttl_secs);
            if let Err(e) = inner.engine.add_presence(channel, info.clone(), ttl).await {
                tracing::warn!(%channel, error = %e, "presence add failed");
            }
            if ns.join_leave
                && let Err(e) = inner.engine.publish_join_leave(channel, info, true).await
            {
                tracing::warn!(%channel, error = %e, "join publish failed");
            }
        }
        if let Some(c) = self.connected_mut() {
            c.subs.insert(
                channel.to_owned(),
                ChannelSub {
                    presence: ns.presence,
                    join_leave: ns.join_leave,
                },
            );
        }
        inner.stats.subscriptions.fetch_add(1, Relaxed);
        Ok((res, after))
    }

    /// The stream position for a subscribe reply, recovering missed publications if asked.
    async fn position(
        &self,
        channel: &str,
        ns: &NamespaceConfig,
        geo: Option<GeoFilter>,
        recover: Option<(u64, String)>,
    ) -> Result<(SubscribeResult, u64), GatewayError> {
        if !ns.history_enabled() {
            return Ok((SubscribeResult::default(), 0));
        }
        let inner = &self.gw.inner;
        let max = inner.config.max_history_limit;
        let query = match &recover {
            Some((offset, _)) => HistoryQuery {
                since: Some(*offset),
                limit: max,
                reverse: false,
            },
            None => HistoryQuery::default(),
        };
        let page = inner
            .engine
            .history(channel, query, history_options(ns))
            .await?;
        let top = page.position.offset;
        let mut res = SubscribeResult {
            recoverable: true,
            epoch: page.position.epoch.clone(),
            offset: top,
            ..SubscribeResult::default()
        };
        let Some((offset, epoch)) = recover else {
            return Ok((res, top));
        };
        res.was_recovering = true;
        let same_stream = epoch.is_empty() || epoch == page.position.epoch;
        let missed = top.checked_sub(offset);
        let complete = missed.is_some_and(|m| {
            m as usize <= max
                && page.publications.len() as u64 == m
                && page
                    .publications
                    .first()
                    .is_none_or(|p| p.offset == offset + 1)
        });
        if same_stream && complete {
            res.recovered = true;
            let pubs: Vec<Publication> = page
                .publications
                .into_iter()
                .filter(|p| in_filter(geo.as_ref(), p))
                .collect();
            if !pubs.is_empty() {
                // The position recovered from: each recovered publication moves the client on.
                res.offset = offset;
            }
            res.publications = pubs;
        }
        Ok((res, top))
    }

    async fn leave_channel(&self, channel: &str, sub: ChannelSub) {
        let inner = &self.gw.inner;
        inner.hub.unsubscribe(channel, self.id).await;
        if let Err(e) = inner.engine.unsubscribe_node(channel).await {
            tracing::warn!(%channel, error = %e, "node unsubscribe failed");
        }
        if sub.presence {
            let _ = inner.engine.remove_presence(channel, &self.client).await;
            if sub.join_leave
                && let Some(c) = self.connected()
            {
                let _ = inner
                    .engine
                    .publish_join_leave(channel, c.info.clone(), false)
                    .await;
            }
        }
        inner.stats.subscriptions.fetch_sub(1, Relaxed);
    }

    async fn refresh_presence(&self) {
        let Some(c) = self.connected() else { return };
        let ttl = Duration::from_secs(self.gw.inner.config.presence_ttl_secs);
        for (ch, sub) in &c.subs {
            if sub.presence {
                let _ = self
                    .gw
                    .inner
                    .engine
                    .add_presence(ch, c.info.clone(), ttl)
                    .await;
            }
        }
    }

    async fn handle_control(&mut self, control: Control) {
        let config = self.gw.inner.config.clone();
        match control {
            Control::Subscribe(ch) => {
                let Ok(ns) = channel::resolve(&config, &ch) else {
                    return;
                };
                match self.subscribe_channel(&ch, ns, None, None).await {
                    Ok((res, after)) => {
                        self.push(protocol::encode_subscribe(&ch, &res));
                        self.gw.inner.hub.activate(&ch, self.id, after).await;
                    }
                    Err(e) => {
                        tracing::debug!(channel = %ch, error = %e, "server subscribe skipped")
                    }
                }
            }
            Control::Unsubscribe(ch) => {
                let sub = self.connected_mut().and_then(|c| c.subs.remove(&ch));
                if let Some(sub) = sub {
                    self.leave_channel(&ch, sub).await;
                    self.push(protocol::encode_unsubscribe(
                        &ch,
                        protocol::UNSUBSCRIBE_SERVER,
                        "server unsubscribe",
                    ));
                }
            }
        }
    }

    async fn cleanup(mut self) {
        let State::Connected(c) = std::mem::replace(&mut self.state, State::Connecting) else {
            return;
        };
        let Connected {
            user, info, subs, ..
        } = *c;
        self.gw.unregister(&user, self.id);
        let inner = self.gw.inner.clone();
        let client = self.client.clone();
        let work = async move {
            for (ch, sub) in subs {
                inner.hub.unsubscribe(&ch, self.id).await;
                let _ = inner.engine.unsubscribe_node(&ch).await;
                if sub.presence {
                    let _ = inner.engine.remove_presence(&ch, &client).await;
                    if sub.join_leave {
                        let _ = inner
                            .engine
                            .publish_join_leave(&ch, info.clone(), false)
                            .await;
                    }
                }
                inner.stats.subscriptions.fetch_sub(1, Relaxed);
            }
        };
        if timeout(Duration::from_secs(5), work).await.is_err() {
            tracing::warn!(client = %self.client, "connection cleanup timed out");
        }
    }
}

fn in_filter(geo: Option<&GeoFilter>, p: &Publication) -> bool {
    match geo {
        None => true,
        Some(g) => Location::of_json(p.data.as_str()).is_none_or(|loc| g.bbox.matches(&loc)),
    }
}

/// Reply encoding through a trait object, so `dispatch` can build replies of any result type.
mod erased {
    use bytes::Bytes;

    pub(super) trait Ser {
        fn to_json(&self) -> String;
    }

    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
        }
    }

    pub(super) fn reply(id: u32, method: &str, r: &dyn Ser) -> Bytes {
        Bytes::from(format!("{{\"id\":{id},\"{method}\":{}}}", r.to_json()))
    }
}
