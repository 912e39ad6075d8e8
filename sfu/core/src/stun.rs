//! Just enough STUN (RFC 8489) to route a binding request to its peer by ICE ufrag.

/// STUN magic cookie.
const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// USERNAME attribute type.
const USERNAME: u16 = 0x0006;

/// The local (server-side) ufrag of a STUN binding request: the part of USERNAME before `:`.
///
/// Returns `None` for anything that is not a well-formed STUN message carrying a USERNAME.
/// Never panics on hostile input.
pub fn local_ufrag(packet: &[u8]) -> Option<&str> {
    if packet.len() < 20 || packet[0] & 0xc0 != 0 || packet[4..8] != MAGIC {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let body = packet.get(20..20 + len)?;
    let mut rest = body;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let alen = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + alen)?;
        if kind == USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            return name.split(':').next();
        }
        let padded = (alen + 3) & !3;
        rest = rest.get(4 + padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(username: &str) -> Vec<u8> {
        let mut attr = vec![0x00, 0x06];
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        // A second attribute after the username (PRIORITY), to check the walk.
        attr.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        let mut p = vec![0x00, 0x01];
        p.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(&[7; 12]);
        p.extend_from_slice(&attr);
        p
    }

    #[test]
    fn finds_the_local_ufrag() {
        assert_eq!(local_ufrag(&binding("srv1:cli2")), Some("srv1"));
    }

    #[test]
    fn rejects_non_stun_and_truncated_input() {
        assert_eq!(local_ufrag(&[0x80; 40]), None);
        let p = binding("abc:def");
        for n in 0..p.len() - 1 {
            // Truncations never panic; the length field no longer matches.
            let _ = local_ufrag(&p[..n]);
        }
        assert_eq!(local_ufrag(&p[..20]), None);
    }
}
