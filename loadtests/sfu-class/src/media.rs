//! Real media for the publisher, encoded once before the run and replayed in a loop: H264 from
//! OpenH264 for three simulcast layers of a synthetic moving picture, and Opus of a synthetic
//! voice-like signal. Replaying keeps the publisher's CPU out of the way of the SFU on a small
//! machine while the packet sizes, frame sizes and keyframes stay those of real encoders.

use anyhow::{Context, Result};
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode, UsageType,
};
use openh264::formats::YUVBuffer;

/// Video frame rate.
pub const FPS: u32 = 30;
/// Frames in the replayed clip; the first is an IDR (keyframe), so the clip repeats with a
/// keyframe every `CLIP_FRAMES / FPS` seconds, and a keyframe request restarts it.
pub const CLIP_FRAMES: usize = 90;
/// Opus frames of 20 ms in the replayed audio clip.
pub const AUDIO_FRAMES: usize = 150;

/// One simulcast layer: rid, size and target bitrate (Chrome's defaults for a 720p camera).
pub struct LayerSpec {
    pub rid: &'static str,
    pub width: usize,
    pub height: usize,
    pub bitrate_bps: u32,
}

pub const LAYERS: [LayerSpec; 3] = [
    LayerSpec {
        rid: "q",
        width: 320,
        height: 180,
        bitrate_bps: 150_000,
    },
    LayerSpec {
        rid: "h",
        width: 640,
        height: 360,
        bitrate_bps: 500_000,
    },
    LayerSpec {
        rid: "f",
        width: 1280,
        height: 720,
        bitrate_bps: 1_500_000,
    },
];

/// An encoded clip per layer (Annex B access units), and the Opus packets.
pub struct Clip {
    pub video: Vec<Vec<Vec<u8>>>,
    pub audio: Vec<Vec<u8>>,
}

impl Clip {
    /// Encodes the clip (takes a few seconds of CPU, before any measurement).
    pub fn encode() -> Result<Clip> {
        let video = LAYERS
            .iter()
            .map(encode_layer)
            .collect::<Result<Vec<_>>>()?;
        Ok(Clip {
            video,
            audio: encode_audio()?,
        })
    }

    /// Average bitrate of a layer's clip, bits per second.
    pub fn layer_bps(&self, layer: usize) -> u64 {
        let bytes: usize = self.video[layer].iter().map(Vec::len).sum();
        (bytes as u64 * 8 * u64::from(FPS)) / CLIP_FRAMES as u64
    }

    /// Size of the keyframe (first frame) of a layer, bytes.
    pub fn keyframe_bytes(&self, layer: usize) -> usize {
        self.video[layer][0].len()
    }

    /// Average Opus packet size, bytes.
    pub fn audio_bytes(&self) -> usize {
        self.audio.iter().map(Vec::len).sum::<usize>() / self.audio.len().max(1)
    }
}

/// A moving picture: diagonal colour bands scrolling, a bright square crossing the frame, and a
/// little per-frame noise so that every frame costs bits, as a camera's does.
fn picture(width: usize, height: usize, n: usize, seed: &mut u32) -> YUVBuffer {
    let (cw, ch) = (width / 2, height / 2);
    let mut yuv = vec![0u8; width * height + 2 * cw * ch];
    let (y_plane, chroma) = yuv.split_at_mut(width * height);
    let (u_plane, v_plane) = chroma.split_at_mut(cw * ch);
    let shift = n * 4 * width / 1280;
    let side = height / 4;
    let sq_x = (n * 8 * width / 1280) % (width - side).max(1);
    let sq_y = height / 2 - side / 2;
    for y in 0..height {
        for x in 0..width {
            *seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let noise = ((*seed >> 16) & 7) as usize;
            let band = ((x + y + shift) * 256 / (width / 2).max(1)) % 256;
            let inside = x >= sq_x && x < sq_x + side && y >= sq_y && y < sq_y + side;
            y_plane[y * width + x] = if inside {
                235
            } else {
                (band / 2 + 40 + noise) as u8
            };
        }
    }
    for y in 0..ch {
        for x in 0..cw {
            u_plane[y * cw + x] = (128 + ((x + shift / 2) % 64) as i32 - 32) as u8;
            v_plane[y * cw + x] = (128 + ((y + n) % 64) as i32 - 32) as u8;
        }
    }
    YUVBuffer::from_vec(yuv, width, height)
}

fn encode_layer(spec: &LayerSpec) -> Result<Vec<Vec<u8>>> {
    let config = EncoderConfig::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .bitrate(BitRate::from_bps(spec.bitrate_bps))
        .max_frame_rate(FrameRate::from_hz(FPS as f32))
        .rate_control_mode(RateControlMode::Bitrate)
        .skip_frames(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(CLIP_FRAMES as u32));
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
        .with_context(|| format!("OpenH264 encoder for layer {}", spec.rid))?;
    let mut seed = 7u32;
    let mut frames = Vec::with_capacity(CLIP_FRAMES);
    for n in 0..CLIP_FRAMES {
        let yuv = picture(spec.width, spec.height, n, &mut seed);
        let bitstream = encoder
            .encode(&yuv)
            .with_context(|| format!("encoding frame {n} of layer {}", spec.rid))?;
        frames.push(bitstream.to_vec());
    }
    Ok(frames)
}

fn encode_audio() -> Result<Vec<Vec<u8>>> {
    const RATE: usize = 48_000;
    const FRAME: usize = RATE / 50;
    let mut encoder =
        opus::Encoder::new(RATE as u32, opus::Channels::Mono, opus::Application::Voip)
            .context("Opus encoder")?;
    encoder
        .set_bitrate(opus::Bitrate::Bits(32_000))
        .context("Opus bitrate")?;
    let mut seed = 11u32;
    let mut out = Vec::with_capacity(AUDIO_FRAMES);
    let mut pcm = vec![0i16; FRAME];
    let mut packet = vec![0u8; 1500];
    for f in 0..AUDIO_FRAMES {
        // A voice-like signal: a gliding fundamental with harmonics, syllable-rate amplitude
        // modulation, and breath noise.
        for (i, s) in pcm.iter_mut().enumerate() {
            let t = (f * FRAME + i) as f32 / RATE as f32;
            let pitch = 140.0 + 30.0 * (t * 1.3).sin();
            let phase = 2.0 * std::f32::consts::PI * pitch * t;
            let voice = phase.sin() + 0.5 * (2.0 * phase).sin() + 0.25 * (3.0 * phase).sin();
            let envelope = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let noise = ((seed >> 16) as f32 / 32_768.0) - 1.0;
            *s = ((voice * envelope * 0.3 + noise * 0.02) * 32_767.0 * 0.5) as i16;
        }
        let n = encoder.encode(&pcm, &mut packet).context("Opus encode")?;
        out.push(packet[..n].to_vec());
    }
    Ok(out)
}
