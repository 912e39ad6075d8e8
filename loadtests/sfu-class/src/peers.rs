//! The str0m peers of the load test and the one thread that drives them all: every peer owns a
//! UDP socket on 127.0.0.1; one `mio` poll loop reads them, feeds str0m, sends its output,
//! writes the publisher's media on time and sweeps str0m timeouts every few milliseconds.

use crate::media::{AUDIO_FRAMES, CLIP_FRAMES, Clip, FPS, LAYERS};
use anyhow::{Context, Result, bail};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

const WAKER: Token = Token(usize::MAX);
/// How often every peer's str0m timeout is checked.
const SWEEP: Duration = Duration::from_millis(5);

/// Counters the measuring thread reads.
#[derive(Default)]
pub struct Shared {
    pub publisher_connected: AtomicBool,
    pub publishing_stopped: AtomicBool,
    pub subscribers_connected: AtomicUsize,
    /// SRTP media datagrams received by all subscribers.
    pub rtp_received: AtomicU64,
    /// Frames the full subscribers reassembled.
    pub video_frames: AtomicU64,
    pub audio_frames: AtomicU64,
    pub keyframe_requests: AtomicU64,
    /// Per subscriber (in the order they were added), its media datagrams received: a stage
    /// counts the admitted subscribers that got none in its window.
    pub per_subscriber: std::sync::Mutex<Vec<Arc<AtomicU64>>>,
}

impl Shared {
    /// Each subscriber's media datagrams received so far.
    pub fn per_subscriber(&self) -> Vec<u64> {
        self.per_subscriber
            .lock()
            .map(|c| c.iter().map(|n| n.load(Relaxed)).collect())
            .unwrap_or_default()
    }

    /// (media datagrams received, full subscribers' video frames, their audio frames)
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.rtp_received.load(Relaxed),
            self.video_frames.load(Relaxed),
            self.audio_frames.load(Relaxed),
        )
    }
}

/// What a peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends the clip: simulcast H264 and Opus.
    Publisher,
    /// Receives and reassembles everything.
    Full,
    /// Receives; counts media datagrams without decrypting them.
    Sink,
}

/// A negotiated peer, ready to be driven.
pub struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    role: Role,
    mids: Vec<(Mid, MediaKind)>,
    connected: bool,
    next_timeout: Instant,
    /// Media datagrams this peer received.
    received: Arc<AtomicU64>,
}

fn new_rtc() -> Result<(Rtc, UdpSocket, SocketAddr)> {
    let socket = UdpSocket::bind("127.0.0.1:0".parse()?)?;
    let local = socket.local_addr()?;
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    Ok((rtc, socket, local))
}

/// An offer, and what [`accept`] needs once the answer is back.
pub type Offer = (
    Rtc,
    UdpSocket,
    String,
    (SdpPendingOffer, Vec<(Mid, MediaKind)>),
);

/// The publisher's offer: sendonly Opus, and sendonly video with the simulcast layers.
pub fn publisher_offer() -> Result<Offer> {
    let (mut rtc, socket, _) = new_rtc()?;
    let mut simulcast = Simulcast::new();
    for l in &LAYERS {
        simulcast.add_send_layer(SimulcastLayer::new(l.rid));
    }
    let mut api = rtc.sdp_api();
    let a = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let v = api.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        None,
        None,
        Some(simulcast),
    );
    let (offer, pending) = api.apply().context("no offer")?;
    let mids = vec![(a, MediaKind::Audio), (v, MediaKind::Video)];
    Ok((rtc, socket, offer.to_sdp_string(), (pending, mids)))
}

/// A subscriber's offer: recvonly audio and video (WHEP).
pub fn subscriber_offer() -> Result<Offer> {
    let (mut rtc, socket, _) = new_rtc()?;
    let mut api = rtc.sdp_api();
    let a = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let v = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().context("no offer")?;
    let mids = vec![(a, MediaKind::Audio), (v, MediaKind::Video)];
    Ok((rtc, socket, offer.to_sdp_string(), (pending, mids)))
}

/// Applies the SFU's answer.
pub fn accept(
    mut rtc: Rtc,
    socket: UdpSocket,
    (pending, mids): (SdpPendingOffer, Vec<(Mid, MediaKind)>),
    answer: &str,
    role: Role,
) -> Result<Peer> {
    let answer = SdpAnswer::from_sdp_string(answer).context("SDP answer")?;
    rtc.sdp_api().accept_answer(pending, answer)?;
    let local = socket.local_addr()?;
    Ok(Peer {
        rtc,
        socket,
        local,
        role,
        mids,
        connected: false,
        next_timeout: Instant::now(),
        received: Arc::default(),
    })
}

/// The publisher's replay position.
struct Playout {
    started: Option<Instant>,
    video_n: u64,
    audio_n: u64,
    clip_pos: usize,
    keyframe_wanted: bool,
}

/// The driving thread's handle.
pub struct Loop {
    tx: mpsc::Sender<Peer>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Loop {
    pub fn spawn(clip: Arc<Clip>, shared: Arc<Shared>) -> Result<Loop> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("peers".into())
                .spawn(move || {
                    let mut d = Driver {
                        poll,
                        peers: vec![],
                        rx,
                        clip,
                        shared,
                        playout: Playout {
                            started: None,
                            video_n: 0,
                            audio_n: 0,
                            clip_pos: 0,
                            keyframe_wanted: false,
                        },
                    };
                    if let Err(e) = d.run(&stop) {
                        eprintln!("sfu-class: peer loop failed: {e:#}");
                        std::process::exit(1);
                    }
                })?
        };
        Ok(Loop {
            tx,
            waker,
            stop,
            thread: Some(thread),
        })
    }

    pub fn add(&self, peer: Peer) -> Result<()> {
        self.tx.send(peer).ok().context("peer loop gone")?;
        self.waker.wake()?;
        Ok(())
    }

    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Driver {
    poll: Poll,
    peers: Vec<Peer>,
    rx: mpsc::Receiver<Peer>,
    clip: Arc<Clip>,
    shared: Arc<Shared>,
    playout: Playout,
}

/// RTP (not RTCP, RFC 5761): version 2 and a payload type outside 64..96.
fn is_rtp(b: &[u8]) -> bool {
    b.len() >= 12 && (128..192).contains(&b[0]) && !(64..96).contains(&(b[1] & 0x7f))
}

impl Driver {
    fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 2048];
        let mut next_sweep = Instant::now();
        while !stop.load(Relaxed) {
            let now = Instant::now();
            let mut wake = next_sweep;
            if let Some(t) = self.next_media() {
                wake = wake.min(t);
            }
            self.poll
                .poll(&mut events, Some(wake.saturating_duration_since(now)))?;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    while let Ok(mut peer) = self.rx.try_recv() {
                        let token = Token(self.peers.len());
                        self.poll.registry().register(
                            &mut peer.socket,
                            token,
                            Interest::READABLE,
                        )?;
                        if peer.role != Role::Publisher
                            && let Ok(mut counters) = self.shared.per_subscriber.lock()
                        {
                            counters.push(peer.received.clone());
                        }
                        self.peers.push(peer);
                        self.drain(token.0)?;
                    }
                    continue;
                }
                let i = ev.token().0;
                loop {
                    let (n, source) = match self.peers[i].socket.recv_from(&mut buf) {
                        Ok(r) => r,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    };
                    self.receive(i, source, &buf[..n]);
                }
                self.drain(i)?;
            }
            let now = Instant::now();
            self.publish(now)?;
            if now >= next_sweep {
                for i in 0..self.peers.len() {
                    if self.peers[i].next_timeout <= now {
                        let _ = self.peers[i].rtc.handle_input(Input::Timeout(now));
                        self.drain(i)?;
                    }
                }
                next_sweep = now + SWEEP;
            }
        }
        Ok(())
    }

    fn receive(&mut self, i: usize, source: SocketAddr, data: &[u8]) {
        let peer = &mut self.peers[i];
        if peer.role != Role::Publisher && is_rtp(data) {
            self.shared.rtp_received.fetch_add(1, Relaxed);
            peer.received.fetch_add(1, Relaxed);
            if peer.role == Role::Sink && peer.connected {
                return;
            }
        }
        if let Ok(r) = Receive::new(Protocol::Udp, source, peer.local, data) {
            let _ = peer.rtc.handle_input(Input::Receive(Instant::now(), r));
        }
    }

    /// Sends what peer `i` has to send and handles its events.
    fn drain(&mut self, i: usize) -> Result<()> {
        let peer = &mut self.peers[i];
        loop {
            match peer.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    peer.next_timeout = t;
                    return Ok(());
                }
                Ok(Output::Transmit(t)) => {
                    let _ = peer.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        peer.connected = true;
                        if peer.role == Role::Publisher {
                            self.shared.publisher_connected.store(true, Relaxed);
                            self.playout.started = Some(Instant::now());
                        } else {
                            self.shared.subscribers_connected.fetch_add(1, Relaxed);
                        }
                    }
                    Event::MediaData(d) => match d.params.spec().codec {
                        Codec::H264 => {
                            self.shared.video_frames.fetch_add(1, Relaxed);
                        }
                        Codec::Opus => {
                            self.shared.audio_frames.fetch_add(1, Relaxed);
                        }
                        _ => {}
                    },
                    Event::KeyframeRequest(_) => {
                        self.shared.keyframe_requests.fetch_add(1, Relaxed);
                        self.playout.keyframe_wanted = true;
                    }
                    _ => {}
                },
                Err(e) => bail!("str0m peer {i} failed: {e}"),
            }
        }
    }

    /// When the publisher's next audio or video frame is due.
    fn next_media(&self) -> Option<Instant> {
        let start = self.playout.started?;
        if self.shared.publishing_stopped.load(Relaxed) {
            return None;
        }
        let video =
            start + Duration::from_micros(self.playout.video_n * 1_000_000 / u64::from(FPS));
        let audio = start + Duration::from_millis(self.playout.audio_n * 20);
        Some(video.min(audio))
    }

    fn publish(&mut self, now: Instant) -> Result<()> {
        let Some(start) = self.playout.started else {
            return Ok(());
        };
        if self.shared.publishing_stopped.load(Relaxed) {
            return Ok(());
        }
        let Some(i) = self.peers.iter().position(|p| p.role == Role::Publisher) else {
            return Ok(());
        };
        let (audio_mid, video_mid) = (self.peers[i].mids[0].0, self.peers[i].mids[1].0);
        while start + Duration::from_millis(self.playout.audio_n * 20) <= now {
            let n = self.playout.audio_n;
            let data = self.clip.audio[n as usize % AUDIO_FRAMES].clone();
            let rtc = &mut self.peers[i].rtc;
            if let Some(writer) = rtc.writer(audio_mid) {
                let pt = pt_for(writer.payload_params(), Codec::Opus)?;
                writer.write(pt, now, MediaTime::from_micros(n * 20_000), data)?;
            }
            self.playout.audio_n += 1;
            // str0m wants a poll between two writes of one track: a loop that fell behind
            // (a busy machine) catches up frame by frame.
            self.drain(i)?;
        }
        while start + Duration::from_micros(self.playout.video_n * 1_000_000 / u64::from(FPS))
            <= now
        {
            if self.playout.keyframe_wanted {
                self.playout.keyframe_wanted = false;
                self.playout.clip_pos = 0;
            }
            let n = self.playout.video_n;
            let pos = self.playout.clip_pos;
            let time = MediaTime::from_90khz(n * 90_000 / u64::from(FPS));
            for (layer, spec) in LAYERS.iter().enumerate() {
                let data = self.clip.video[layer][pos].clone();
                let rtc = &mut self.peers[i].rtc;
                let Some(writer) = rtc.writer(video_mid) else {
                    break;
                };
                let pt = pt_for(writer.payload_params(), Codec::H264)?;
                writer.rid(Rid::from(spec.rid)).write(pt, now, time, data)?;
            }
            self.playout.clip_pos = (pos + 1) % CLIP_FRAMES;
            self.playout.video_n += 1;
            self.drain(i)?;
        }
        Ok(())
    }
}

/// The payload type for `codec` (H264: packetization mode 1, constrained baseline preferred).
fn pt_for<'a>(
    params: impl Iterator<Item = &'a str0m::format::PayloadParams>,
    codec: Codec,
) -> Result<Pt> {
    let mut best: Option<(u8, Pt)> = None;
    for p in params {
        let spec = p.spec();
        if spec.codec != codec {
            continue;
        }
        let score = match codec {
            Codec::H264 => {
                let mode1 = spec.format.packetization_mode == Some(1);
                let baseline = spec.format.profile_level_id == Some(0x42e01f);
                u8::from(mode1) * 2 + u8::from(baseline)
            }
            _ => 0,
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, p.pt()));
        }
    }
    best.map(|(_, pt)| pt)
        .with_context(|| format!("the SFU did not accept {codec:?}"))
}
