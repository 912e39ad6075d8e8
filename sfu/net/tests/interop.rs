//! Interop with an independent WebRTC stack: webrtc-rs (the `webrtc` crate — its own ICE, DTLS,
//! SRTP, RTP packetizers and SDP) talks to the SFU over real UDP sockets on loopback, with a
//! str0m peer on the other side of the room.
//!
//! - webrtc-rs publishes VP8 video and Opus audio over WHIP → a str0m subscriber (WHEP)
//!   reassembles the video frames and receives the audio;
//! - a str0m publisher (WHIP) → a webrtc-rs subscriber (WHEP) receives the RTP packets of both
//!   tracks and rebuilds whole VP8 frames with its own depacketizer.
//!
//! The frames are synthetic (a VP8 payload header and filler bytes): the SFU and both stacks
//! packetize, encrypt and reassemble them without decoding, so real pixels add nothing here.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use nexus_auth::{Claims, Grant, RoomKind};
use nexus_sfu_net::{SfuConfig, SfuHandle};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Rtc};
use tokio::net::UdpSocket;
use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample;
use webrtc::media::io::sample_builder::SampleBuilder;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::codecs::vp8::Vp8Packet;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;

/// How long a scenario may take before it fails (media normally flows within a second).
const GIVE_UP: Duration = Duration::from_secs(20);
/// Video frames and audio packets each receiver must see.
const WANT_FRAMES: usize = 30;
const WANT_AUDIO: usize = 30;

fn claims(user: &str, room: &str, grants: Vec<Grant>) -> Claims {
    Claims::new(user, 600).with_room(room, RoomKind::Class, grants)
}

/// Two shards: the subscriber is placed on the idle shard without the publisher, so the class
/// room spans both and its media crosses between them.
async fn sfu() -> SfuHandle {
    let mut config = SfuConfig::new("127.0.0.1:0".parse().unwrap());
    config.shards = 2;
    SfuHandle::start(config).await.unwrap()
}

/// A synthetic VP8 frame: the first payload byte's low bit is the VP8 "inter frame" flag.
fn vp8_frame(n: u64, key: bool) -> Vec<u8> {
    let mut frame = vec![0x42u8; if key { 4000 } else { 1200 }];
    frame[0] = if key { 0x10 } else { 0x11 };
    frame[2..10].copy_from_slice(&n.to_be_bytes());
    frame
}

// ---------------------------------------------------------------------------------------------
// webrtc-rs side

/// A webrtc-rs peer connection that gathers only loopback UDP host candidates.
async fn webrtc_rs_peer() -> Arc<RTCPeerConnection> {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
    let mut settings = SettingEngine::default();
    settings.set_include_loopback_candidate(true);
    settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    settings.set_network_types(vec![NetworkType::Udp4]);
    let api = APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build();
    Arc::new(
        api.new_peer_connection(RTCConfiguration::default())
            .await
            .unwrap(),
    )
}

/// Creates the offer with every candidate in it (WHIP/WHEP without trickle).
async fn complete_offer(pc: &RTCPeerConnection) -> String {
    let offer = pc.create_offer(None).await.unwrap();
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer).await.unwrap();
    let _ = gathered.recv().await;
    pc.local_description().await.unwrap().sdp
}

fn transceiver_init(direction: RTCRtpTransceiverDirection) -> Option<RTCRtpTransceiverInit> {
    Some(RTCRtpTransceiverInit {
        direction,
        send_encodings: vec![],
    })
}

// ---------------------------------------------------------------------------------------------
// str0m side: one Rtc on its own UDP socket, driven until `done` says so or time runs out.

struct Str0mPeer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mids: Vec<(Mid, MediaKind)>,
}

impl Str0mPeer {
    async fn new() -> Str0mPeer {
        str0m::crypto::from_feature_flags().install_process_default();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        Str0mPeer {
            rtc,
            socket,
            local,
            mids: vec![],
        }
    }

    /// An offer of one audio and one video m-line in `direction`; applies the SFU's answer.
    async fn negotiate(
        &mut self,
        direction: Direction,
        signal: impl AsyncFnOnce(String) -> String,
    ) {
        let mut api = self.rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, direction, None, None, None);
        let video = api.add_media(MediaKind::Video, direction, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        self.mids = vec![(audio, MediaKind::Audio), (video, MediaKind::Video)];
        let answer = signal(offer.to_sdp_string()).await;
        let answer = SdpAnswer::from_sdp_string(&answer).unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    }

    /// Runs the peer: every 20 ms `tick` may write media; every event goes to `event`. Returns
    /// when `done` holds, or panics after [`GIVE_UP`].
    async fn run(
        &mut self,
        mut tick: impl FnMut(&mut Rtc, &[(Mid, MediaKind)], u64),
        mut event: impl FnMut(Event),
        done: impl Fn() -> bool,
    ) {
        let start = Instant::now();
        let mut buf = vec![0u8; 2048];
        let mut n = 0u64;
        let mut next_tick = start;
        while !done() {
            assert!(start.elapsed() < GIVE_UP, "the scenario did not complete");
            let now = Instant::now();
            if now >= next_tick && self.rtc.is_connected() {
                tick(&mut self.rtc, &self.mids, n);
                n += 1;
                next_tick = now + Duration::from_millis(20);
            }
            let timeout = loop {
                match self.rtc.poll_output().unwrap() {
                    str0m::Output::Timeout(t) => break t,
                    str0m::Output::Transmit(t) => {
                        let _ = self.socket.send_to(&t.contents, t.destination).await;
                    }
                    str0m::Output::Event(e) => event(e),
                }
            };
            let wake = timeout.min(next_tick.max(now + Duration::from_millis(1)));
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let (len, source) = received.unwrap();
                    let Ok(recv) = Receive::new(Protocol::Udp, source, self.local, &buf[..len]) else {
                        continue;
                    };
                    self.rtc.handle_input(str0m::Input::Receive(Instant::now(), recv)).unwrap();
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    self.rtc.handle_input(str0m::Input::Timeout(Instant::now())).unwrap();
                }
            }
        }
    }
}

/// Writes 20 ms of Opus-shaped audio and a VP8 frame (a keyframe every 25 frames and when asked).
fn write_media(rtc: &mut Rtc, mids: &[(Mid, MediaKind)], n: u64, keyframe_wanted: &AtomicBool) {
    let now = Instant::now();
    for &(mid, kind) in mids {
        let Some(writer) = rtc.writer(mid) else {
            continue;
        };
        let codec = match kind {
            MediaKind::Audio => Codec::Opus,
            MediaKind::Video => Codec::Vp8,
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
        else {
            continue;
        };
        let (time, data) = match kind {
            MediaKind::Audio => (MediaTime::from_micros(n * 20_000), vec![0xfc; 80]),
            MediaKind::Video => {
                let key = n.is_multiple_of(25) || keyframe_wanted.swap(false, Ordering::Relaxed);
                (MediaTime::from_90khz(n * 1800), vp8_frame(n, key))
            }
        };
        writer.write(pt, now, time, data).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_publishes_over_whip_and_a_str0m_subscriber_receives_its_media() {
    let sfu = sfu().await;
    let room = "interop-publish";

    // webrtc-rs publishes VP8 + Opus, sendonly.
    let pc = webrtc_rs_peer().await;
    let video = Arc::new(TrackLocalStaticSample::new(
        RTCRtpCodecCapability {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            ..Default::default()
        },
        "video".to_owned(),
        "webrtc-rs".to_owned(),
    ));
    let audio = Arc::new(TrackLocalStaticSample::new(
        RTCRtpCodecCapability {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            ..Default::default()
        },
        "audio".to_owned(),
        "webrtc-rs".to_owned(),
    ));
    let keyframe_wanted = Arc::new(AtomicBool::new(false));
    let plis = Arc::new(AtomicUsize::new(0));
    for track in [
        Arc::clone(&audio) as Arc<dyn TrackLocal + Send + Sync>,
        Arc::clone(&video) as Arc<dyn TrackLocal + Send + Sync>,
    ] {
        let transceiver = pc
            .add_transceiver_from_track(
                track,
                transceiver_init(RTCRtpTransceiverDirection::Sendonly),
            )
            .await
            .unwrap();
        // Read the sender's RTCP (the interceptors need it drained); a PLI asks for a keyframe.
        let sender = transceiver.sender().await;
        let (keyframe_wanted, plis) = (Arc::clone(&keyframe_wanted), Arc::clone(&plis));
        tokio::spawn(async move {
            while let Ok((packets, _)) = sender.read_rtcp().await {
                for p in packets {
                    if p.as_any().is::<PictureLossIndication>() {
                        plis.fetch_add(1, Ordering::Relaxed);
                        keyframe_wanted.store(true, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    let offer = complete_offer(&pc).await;
    let publisher = claims("teacher", room, vec![Grant::Publish, Grant::Subscribe]);
    let (publish_session, answer) = sfu.whip_publish(room, &publisher, offer).await.unwrap();
    assert!(answer.contains("a=ice-lite"), "{answer}");
    pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();

    let sending = {
        let keyframe_wanted = Arc::clone(&keyframe_wanted);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(20));
            for n in 0u64.. {
                interval.tick().await;
                let opus = Sample {
                    data: Bytes::from(vec![0xfc; 80]),
                    duration: Duration::from_millis(20),
                    ..Default::default()
                };
                // Before the DTLS handshake completes the tracks are not bound; retry.
                let _ = audio.write_sample(&opus).await;
                if n % 2 == 0 {
                    let key = n % 50 == 0 || keyframe_wanted.swap(false, Ordering::Relaxed);
                    let frame = Sample {
                        data: Bytes::from(vp8_frame(n, key)),
                        duration: Duration::from_millis(40),
                        ..Default::default()
                    };
                    let _ = video.write_sample(&frame).await;
                }
            }
        })
    };

    // A str0m peer subscribes to the room over WHEP.
    let mut subscriber = Str0mPeer::new().await;
    let viewer = claims("student", room, vec![Grant::Subscribe]);
    subscriber
        .negotiate(Direction::RecvOnly, async |offer| {
            let (session, answer) = sfu
                .whep_subscribe(room, &viewer, offer, None)
                .await
                .unwrap();
            // Placed on the other (idle) shard: the media is relayed between shards.
            assert_ne!(session.shard(), publish_session.shard());
            answer
        })
        .await;
    let video_frames = AtomicUsize::new(0);
    let audio_frames = AtomicUsize::new(0);
    let mut keyframes = 0;
    subscriber
        .run(
            |_, _, _| {},
            |e| {
                if let Event::MediaData(d) = e {
                    match d.params.spec().codec {
                        Codec::Vp8 => {
                            // The frame came through whole: the counter webrtc-rs packetized.
                            assert!(
                                d.data.len() == 4000 || d.data.len() == 1200,
                                "{}",
                                d.data.len()
                            );
                            keyframes += usize::from(d.data[0] & 1 == 0);
                            video_frames.fetch_add(1, Ordering::Relaxed);
                        }
                        Codec::Opus => {
                            assert_eq!(&d.data[..], &[0xfc; 80][..]);
                            audio_frames.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("unexpected codec {other:?}"),
                    }
                }
            },
            || {
                video_frames.load(Ordering::Relaxed) >= WANT_FRAMES
                    && audio_frames.load(Ordering::Relaxed) >= WANT_AUDIO
            },
        )
        .await;
    assert!(keyframes >= 1, "the subscriber started on a keyframe");

    let stats = sfu.stats().await;
    assert!(stats.total.frames_forwarded >= (WANT_FRAMES + WANT_AUDIO) as u64);
    // The shard timed what it forwarded (receive → send), on the wall clock.
    assert!(stats.forward_latency.count() > 0, "{stats:?}");
    sending.abort();
    sfu.end_session(publish_session).await.unwrap();
    pc.close().await.unwrap();
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_str0m_publisher_reaches_a_webrtc_rs_subscriber_over_whep() {
    let sfu = sfu().await;
    let room = "interop-subscribe";

    // A str0m peer publishes audio + video over WHIP and keeps sending in the background.
    let mut publisher = Str0mPeer::new().await;
    let teacher = claims("teacher", room, vec![Grant::Publish]);
    let publisher_sfu = sfu.clone();
    publisher
        .negotiate(Direction::SendOnly, async |offer| {
            publisher_sfu
                .whip_publish(room, &teacher, offer)
                .await
                .unwrap()
                .1
        })
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let keyframe_requests = Arc::new(AtomicUsize::new(0));
    let publishing = {
        let (stop, keyframe_requests) = (Arc::clone(&stop), Arc::clone(&keyframe_requests));
        tokio::spawn(async move {
            let keyframe_wanted = AtomicBool::new(false);
            publisher
                .run(
                    |rtc, mids, n| write_media(rtc, mids, n, &keyframe_wanted),
                    |e| {
                        if let Event::KeyframeRequest(_) = e {
                            keyframe_requests.fetch_add(1, Ordering::Relaxed);
                            keyframe_wanted.store(true, Ordering::Relaxed);
                        }
                    },
                    || stop.load(Ordering::Relaxed),
                )
                .await;
        })
    };

    // webrtc-rs subscribes: recvonly audio and video.
    let pc = webrtc_rs_peer().await;
    for kind in [RTPCodecType::Audio, RTPCodecType::Video] {
        pc.add_transceiver_from_kind(kind, transceiver_init(RTCRtpTransceiverDirection::Recvonly))
            .await
            .unwrap();
    }
    let audio_packets = Arc::new(AtomicUsize::new(0));
    let video_packets = Arc::new(AtomicUsize::new(0));
    let video_frames = Arc::new(AtomicUsize::new(0));
    let whole_frames = Arc::new(AtomicBool::new(true));
    {
        let (audio_packets, video_packets) =
            (Arc::clone(&audio_packets), Arc::clone(&video_packets));
        let (video_frames, whole_frames) = (Arc::clone(&video_frames), Arc::clone(&whole_frames));
        pc.on_track(Box::new(move |track, _, _| {
            let (audio_packets, video_packets) =
                (Arc::clone(&audio_packets), Arc::clone(&video_packets));
            let (video_frames, whole_frames) =
                (Arc::clone(&video_frames), Arc::clone(&whole_frames));
            tokio::spawn(async move {
                let kind = track.kind();
                let mut frames = SampleBuilder::new(64, Vp8Packet::default(), 90_000);
                while let Ok((packet, _)) = track.read_rtp().await {
                    if kind == RTPCodecType::Audio {
                        audio_packets.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    video_packets.fetch_add(1, Ordering::Relaxed);
                    frames.push(packet);
                    while let Some(frame) = frames.pop() {
                        if frame.data.len() != 4000 && frame.data.len() != 1200 {
                            whole_frames.store(false, Ordering::Relaxed);
                        }
                        video_frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            Box::pin(async {})
        }));
    }
    let offer = complete_offer(&pc).await;
    let viewer = claims("student", room, vec![Grant::Subscribe]);
    let (_, answer) = sfu
        .whep_subscribe(room, &viewer, offer, None)
        .await
        .unwrap();
    pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();

    let start = Instant::now();
    while video_frames.load(Ordering::Relaxed) < WANT_FRAMES
        || audio_packets.load(Ordering::Relaxed) < WANT_AUDIO
    {
        assert!(
            start.elapsed() < GIVE_UP,
            "webrtc-rs received {} audio packets, {} video packets, {} video frames",
            audio_packets.load(Ordering::Relaxed),
            video_packets.load(Ordering::Relaxed),
            video_frames.load(Ordering::Relaxed),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        whole_frames.load(Ordering::Relaxed),
        "webrtc-rs rebuilt a frame of the wrong size"
    );
    // Each 4000-byte keyframe or 1200-byte frame is at least one RTP packet.
    assert!(video_packets.load(Ordering::Relaxed) >= video_frames.load(Ordering::Relaxed));

    stop.store(true, Ordering::Relaxed);
    publishing.await.unwrap();
    pc.close().await.unwrap();
    sfu.shutdown().await;
}
