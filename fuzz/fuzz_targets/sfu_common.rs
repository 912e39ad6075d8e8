//! What the SFU fuzz targets share: browser-like SDP offers and byte edits of them.

use std::sync::OnceLock;
use std::time::Instant;

/// Offers of a browser-like str0m peer, made once: `[0]` sends audio + video, `[1]` receives.
pub fn offers() -> &'static [String; 2] {
    static OFFERS: OnceLock<[String; 2]> = OnceLock::new();
    OFFERS.get_or_init(|| {
        use str0m::media::{Direction, MediaKind};
        str0m::crypto::from_feature_flags().install_process_default();
        let offer = |dir| {
            let mut rtc = str0m::Rtc::builder().build(Instant::now());
            let mut api = rtc.sdp_api();
            api.add_media(MediaKind::Audio, dir, None, None, None);
            api.add_media(MediaKind::Video, dir, None, None, None);
            api.apply().expect("an offer").0.to_sdp_string()
        };
        [offer(Direction::SendOnly), offer(Direction::RecvOnly)]
    })
}

/// `offer` with edits applied: each 3 bytes `[at, at, op]` replace (op < 0x80), insert
/// (op < 0xc0) or delete the byte at `at` (modulo the length).
pub fn edited(offer: &str, edits: &[u8]) -> String {
    let mut bytes = offer.as_bytes().to_vec();
    for e in edits.chunks_exact(3) {
        if bytes.is_empty() {
            break;
        }
        let at = usize::from(u16::from_be_bytes([e[0], e[1]])) % bytes.len();
        match e[2] {
            op @ 0..0x80 => bytes[at] = op,
            op @ 0x80..0xc0 => bytes.insert(at, op - 0x60),
            _ => {
                bytes.remove(at);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
