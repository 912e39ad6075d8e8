//! WebSocket framing (RFC 6455) for the gateway's own transport over a TCP socket
//! ([`crate::Gateway::serve_tcp`]).
//!
//! The server side only: frames from a client must be masked; frames to it are not. Text
//! and binary messages may be fragmented; control frames (close, ping, pong) may come
//! between fragments, are never fragmented and carry at most 125 bytes. Every limit is
//! checked before anything is buffered, so a hostile peer gets an error (the connection is
//! then closed), never a panic or unbounded memory.

use bytes::{Buf, Bytes, BytesMut};

/// Opcode of a text frame.
pub(crate) const OP_TEXT: u8 = 0x1;
/// Opcode of a close frame.
pub(crate) const OP_CLOSE: u8 = 0x8;
/// Opcode of a pong frame.
pub(crate) const OP_PONG: u8 = 0xA;
const OP_CONTINUATION: u8 = 0x0;
const OP_BINARY: u8 = 0x2;
const OP_PING: u8 = 0x9;

/// The header of an unmasked, final server frame carrying `len` payload bytes: the buffer
/// and how many of its bytes are the header (2, 4 or 10).
pub(crate) fn header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode;
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if let Ok(short) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&short.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// A whole server frame (header and payload) in one buffer.
pub(crate) fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    joined(opcode, &[payload]).0
}

/// A whole server frame whose payload is `parts` joined by newlines (several JSON messages
/// in one frame, as the Centrifugo JSON protocol allows), and the length of its header.
pub(crate) fn joined(opcode: u8, parts: &[&[u8]]) -> (Bytes, usize) {
    let len = parts
        .iter()
        .map(|p| p.len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    let (h, n) = header(opcode, len);
    let mut buf = BytesMut::with_capacity(n + len);
    buf.extend_from_slice(&h[..n]);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            buf.extend_from_slice(b"\n");
        }
        buf.extend_from_slice(part);
    }
    (buf.freeze(), n)
}

/// The payload of a close frame: the code, then the reason (cut to fit in 125 bytes, on a
/// character boundary).
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

/// What a client sent, as far as the connection cares.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// A whole text message (reassembled if fragmented), valid UTF-8.
    Text(String),
    /// A whole binary message.
    Binary(Bytes),
    /// A ping: answer with a pong carrying the same payload.
    Ping(Bytes),
    /// A close frame.
    Close,
}

/// Why a client's bytes are not a valid WebSocket stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Reserved bits set (no extension is negotiated).
    #[error("reserved bits set")]
    Reserved,
    /// A client frame without a mask.
    #[error("unmasked client frame")]
    Unmasked,
    /// An opcode RFC 6455 does not define.
    #[error("unknown opcode {0:#x}")]
    Opcode(u8),
    /// A fragmented or oversized control frame.
    #[error("bad control frame")]
    Control,
    /// A continuation without a message to continue, or a new message inside another.
    #[error("bad fragmentation")]
    Fragmentation,
    /// A frame or message above the configured limit.
    #[error("message of more than {0} bytes")]
    TooLarge(usize),
    /// A text message that is not UTF-8.
    #[error("text message is not UTF-8")]
    Utf8,
}

/// Parses client frames out of the bytes read so far.
pub struct FrameReader {
    max_message: usize,
    /// The message being reassembled from fragments: its opcode and payload.
    partial: Option<(u8, BytesMut)>,
}

impl FrameReader {
    /// A reader refusing frames and messages above `max_message` bytes.
    pub fn new(max_message: usize) -> FrameReader {
        FrameReader {
            max_message,
            partial: None,
        }
    }

    /// The next whole client frame or message in `buf` (consumed from it), `Ok(None)` when
    /// more bytes are needed.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<ClientFrame>, WireError> {
        loop {
            let Some((fin, opcode, start, len)) = self.parse_header(buf)? else {
                return Ok(None);
            };
            if buf.len() < start + len {
                return Ok(None);
            }
            let mask = [
                buf[start - 4],
                buf[start - 3],
                buf[start - 2],
                buf[start - 1],
            ];
            buf.advance(start);
            let mut payload = buf.split_to(len);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            match opcode {
                OP_PING => return Ok(Some(ClientFrame::Ping(payload.freeze()))),
                OP_PONG => continue,
                OP_CLOSE => return Ok(Some(ClientFrame::Close)),
                OP_CONTINUATION => {
                    let Some((_, whole)) = self.partial.as_mut() else {
                        return Err(WireError::Fragmentation);
                    };
                    whole.extend_from_slice(&payload);
                    if !fin {
                        continue;
                    }
                    let (op, whole) = self.partial.take().ok_or(WireError::Fragmentation)?;
                    return message(op, whole).map(Some);
                }
                _ => {
                    if self.partial.is_some() {
                        return Err(WireError::Fragmentation);
                    }
                    if !fin {
                        self.partial = Some((opcode, payload));
                        continue;
                    }
                    return message(opcode, payload).map(Some);
                }
            }
        }
    }

    /// (fin, opcode, offset of the payload, payload length) of the frame at the start of
    /// `buf`, once its header is complete; checks every rule that needs no payload.
    fn parse_header(&self, buf: &BytesMut) -> Result<Option<(bool, u8, usize, usize)>, WireError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        if b0 & 0x70 != 0 {
            return Err(WireError::Reserved);
        }
        if b1 & 0x80 == 0 {
            return Err(WireError::Unmasked);
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        let control = opcode & 0x08 != 0;
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(WireError::Opcode(opcode));
        }
        let (len, at) = match b1 & 0x7f {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        if control && (!fin || len > 125) {
            return Err(WireError::Control);
        }
        let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len());
        let len = usize::try_from(len).map_err(|_| WireError::TooLarge(self.max_message))?;
        if len.saturating_add(so_far) > self.max_message {
            return Err(WireError::TooLarge(self.max_message));
        }
        if buf.len() < at + 4 {
            return Ok(None);
        }
        Ok(Some((fin, opcode, at + 4, len)))
    }
}

fn message(opcode: u8, payload: BytesMut) -> Result<ClientFrame, WireError> {
    if opcode == OP_TEXT {
        String::from_utf8(payload.to_vec())
            .map(ClientFrame::Text)
            .map_err(|_| WireError::Utf8)
    } else {
        Ok(ClientFrame::Binary(payload.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn read_all(bytes: &[u8], max: usize) -> Result<Vec<ClientFrame>, WireError> {
        let mut r = FrameReader::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // One byte at a time: every split point of the stream is a read boundary.
        for b in bytes {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = r.next(&mut buf)? {
                out.push(f);
            }
        }
        Ok(out)
    }

    #[test]
    fn masked_text_binary_ping_and_close_are_read_across_any_split() {
        let long = "x".repeat(70_000);
        let mut s = client(true, OP_TEXT, b"{\"id\":1}");
        s.extend(client(true, OP_PING, b"hi"));
        s.extend(client(true, OP_BINARY, &[0, 1, 2]));
        s.extend(client(true, OP_TEXT, long.as_bytes()));
        s.extend(client(true, OP_PONG, b""));
        s.extend(client(true, OP_CLOSE, &1000u16.to_be_bytes()));
        let frames = read_all(&s, 100_000).unwrap();
        assert_eq!(
            frames,
            vec![
                ClientFrame::Text("{\"id\":1}".into()),
                ClientFrame::Ping(Bytes::from_static(b"hi")),
                ClientFrame::Binary(Bytes::from_static(&[0, 1, 2])),
                ClientFrame::Text(long),
                ClientFrame::Close,
            ]
        );
    }

    #[test]
    fn fragments_are_joined_with_a_ping_between_them() {
        let mut s = client(false, OP_TEXT, b"{\"id\":");
        s.extend(client(true, OP_PING, b""));
        s.extend(client(true, OP_CONTINUATION, b"2}"));
        assert_eq!(
            read_all(&s, 1024).unwrap(),
            vec![
                ClientFrame::Ping(Bytes::new()),
                ClientFrame::Text("{\"id\":2}".into())
            ]
        );
    }

    #[test]
    fn protocol_violations_are_errors() {
        let unmasked = [0x81u8, 0x01, b'a'];
        assert_eq!(read_all(&unmasked, 1024), Err(WireError::Unmasked));
        let mut reserved = client(true, OP_TEXT, b"a");
        reserved[0] |= 0x40;
        assert_eq!(read_all(&reserved, 1024), Err(WireError::Reserved));
        assert_eq!(
            read_all(&client(true, 0x3, b""), 1024),
            Err(WireError::Opcode(3))
        );
        assert_eq!(
            read_all(&client(false, OP_PING, b""), 1024),
            Err(WireError::Control)
        );
        assert_eq!(
            read_all(&client(true, OP_PING, &[0; 126]), 1024),
            Err(WireError::Control)
        );
        assert_eq!(
            read_all(&client(true, OP_CONTINUATION, b"a"), 1024),
            Err(WireError::Fragmentation)
        );
        let mut nested = client(false, OP_TEXT, b"a");
        nested.extend(client(true, OP_TEXT, b"b"));
        assert_eq!(read_all(&nested, 1024), Err(WireError::Fragmentation));
        assert_eq!(
            read_all(&client(true, OP_TEXT, &[0xff, 0xfe]), 1024),
            Err(WireError::Utf8)
        );
    }

    #[test]
    fn sizes_are_refused_from_the_header_before_buffering() {
        // A header announcing 2^63 bytes: refused with 10 bytes read, nothing allocated.
        let mut huge = vec![0x81u8, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        let mut r = FrameReader::new(1024);
        let mut buf = BytesMut::from(&huge[..]);
        assert_eq!(r.next(&mut buf), Err(WireError::TooLarge(1024)));
        // Fragments adding up past the limit.
        let mut s = client(false, OP_TEXT, &[b'a'; 600]);
        s.extend(client(true, OP_CONTINUATION, &[b'a'; 600]));
        assert_eq!(read_all(&s, 1024), Err(WireError::TooLarge(1024)));
    }

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        assert_eq!(&header(OP_TEXT, 125).0[..2], &[0x81, 125]);
        assert_eq!(&header(OP_TEXT, 126).0[..4], &[0x81, 126, 0, 126]);
        assert_eq!(header(OP_TEXT, 70_000).1, 10);
        assert_eq!(&frame(OP_PONG, b"hi")[..], &[0x8A, 2, b'h', b'i']);
        let (two, header_len) = joined(OP_TEXT, &[b"{}", b"[]"]);
        assert_eq!((&two[..], header_len), (&b"\x81\x05{}\n[]"[..], 2));
        let p = close_payload(3008, &"é".repeat(100));
        assert!(p.len() <= 125);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }

    /// What `fuzz/`'s `ws_frames` target checks, over seeded random input: arbitrary bytes
    /// and mutations of a valid stream never panic, and reading the bytes whole or one at a
    /// time gives the same frames and the same error.
    #[test]
    fn random_and_mutated_streams_never_panic_and_splits_do_not_matter() {
        use rand::{Rng, SeedableRng};
        let whole = |data: &[u8]| {
            let mut r = FrameReader::new(4096);
            let mut buf = BytesMut::from(data);
            let mut out = Vec::new();
            loop {
                match r.next(&mut buf) {
                    Ok(Some(f)) => out.push(Ok(f)),
                    Ok(None) => return out,
                    Err(e) => {
                        out.push(Err(e));
                        return out;
                    }
                }
            }
        };
        let split = |data: &[u8]| {
            let mut r = FrameReader::new(4096);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for b in data {
                buf.extend_from_slice(&[*b]);
                loop {
                    match r.next(&mut buf) {
                        Ok(Some(f)) => out.push(Ok(f)),
                        Ok(None) => break,
                        Err(e) => {
                            out.push(Err(e));
                            return out;
                        }
                    }
                }
            }
            out
        };
        let mut valid = client(false, OP_TEXT, b"{\"id\":1,");
        valid.extend(client(true, OP_PING, b"p"));
        valid.extend(client(true, OP_CONTINUATION, b"\"x\":2}"));
        valid.extend(client(true, OP_BINARY, &[7; 300]));
        valid.extend(client(true, OP_CLOSE, b""));
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for case in 0..3000 {
            let data: Vec<u8> = if case % 2 == 0 {
                let n = rng.gen_range(0..400);
                (0..n).map(|_| rng.r#gen()).collect()
            } else {
                let mut m = valid.clone();
                for _ in 0..rng.gen_range(1..4) {
                    let i = rng.gen_range(0..m.len());
                    m[i] = rng.r#gen();
                }
                m.truncate(rng.gen_range(0..=m.len()));
                m
            };
            assert_eq!(whole(&data), split(&data), "input {data:?}");
        }
    }
}
