#![no_main]
//! The check lives here, not in `src/lib.rs` (which `alerting/cap`'s stable tests include):
//! `realtime-gateway/src/wire.rs` runs the same check over seeded random input on stable.

use libfuzzer_sys::fuzz_target;

/// WebSocket frames from a client (the gateway's own framing): arbitrary bytes never panic
/// `FrameReader`, and reading them whole or in pieces (split where the first byte says)
/// gives the same frames and the same error.
fn ws_frames(data: &[u8]) {
    use nexus_gateway::wire::FrameReader;
    let read = |chunks: &mut dyn Iterator<Item = &[u8]>| {
        let mut reader = FrameReader::new(4096);
        let mut buf = bytes::BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match reader.next(&mut buf) {
                    Ok(Some(frame)) => out.push(format!("{frame:?}")),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(format!("error {e}"));
                        return out;
                    }
                }
            }
        }
        out
    };
    let whole = read(&mut std::iter::once(data));
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let pieces = read(&mut data.chunks(step));
    assert_eq!(whole, pieces, "splitting the input changed what was read");
}

fuzz_target!(|data: &[u8]| ws_frames(data));
