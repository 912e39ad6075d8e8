//! Bytes → text: BOM and prolog encoding detection, then decoding to UTF-8.
//!
//! The whole document is decoded before XML parsing so that the XML reader, the raw
//! `<Signature>` slices and the reported columns all work on one UTF-8 text.

use std::borrow::Cow;

use encoding_rs::{Encoding, REPLACEMENT, UTF_8, UTF_16BE, UTF_16LE};

use crate::error::ParseError;
use crate::xml::line_col;

pub(crate) fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, ParseError> {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return utf8(rest);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return with(UTF_16LE, rest);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return with(UTF_16BE, rest);
    }
    if bytes.starts_with(&[0x00, b'<', 0x00, b'?']) {
        return with(UTF_16BE, bytes);
    }
    if bytes.starts_with(&[b'<', 0x00, b'?', 0x00]) {
        return with(UTF_16LE, bytes);
    }
    match declared_encoding(bytes) {
        None => utf8(bytes),
        Some(label) => {
            let encoding = Encoding::for_label(label.trim().as_bytes())
                .filter(|e| *e != REPLACEMENT)
                .ok_or_else(|| ParseError::UnsupportedEncoding {
                    label: String::from_utf8_lossy(label.as_bytes()).into_owned(),
                })?;
            // A UTF-16 label on ASCII-compatible bytes cannot be right; the bytes win.
            if encoding == UTF_8 || encoding == UTF_16LE || encoding == UTF_16BE {
                utf8(bytes)
            } else {
                with(encoding, bytes)
            }
        }
    }
}

fn utf8(bytes: &[u8]) -> Result<Cow<'_, str>, ParseError> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(Cow::Borrowed(s)),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            // The prefix is valid UTF-8 by construction.
            let prefix = std::str::from_utf8(valid).unwrap_or_default();
            Err(ParseError::Decoding {
                encoding: "UTF-8",
                location: Some(line_col(prefix, prefix.len())),
            })
        }
    }
}

fn with(encoding: &'static Encoding, bytes: &[u8]) -> Result<Cow<'static, str>, ParseError> {
    encoding
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(|s| Cow::Owned(s.into_owned()))
        .ok_or(ParseError::Decoding {
            encoding: encoding.name(),
            location: None,
        })
}

/// The `encoding` pseudo-attribute of an `<?xml …?>` declaration at the very start.
fn declared_encoding(bytes: &[u8]) -> Option<&str> {
    let head = &bytes[..bytes.len().min(1024)];
    if !head.starts_with(b"<?xml") {
        return None;
    }
    let end = head.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&head[5..end]).ok()?;
    let at = decl.find("encoding")?;
    let rest = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &rest[1..];
    let close = value.find(quote)?;
    Some(&value[..close])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_prolog_is_honoured() {
        let mut doc = b"<?xml version='1.0' encoding='ISO-8859-1'?><a>".to_vec();
        doc.extend_from_slice(&[0x4D, 0xE9, 0x74, 0xE9, 0x6F]); // "Météo"
        doc.extend_from_slice(b"</a>");
        let text = decode(&doc).unwrap();
        assert!(text.ends_with("<a>Météo</a>"), "{text}");
    }

    #[test]
    fn utf8_default_and_bom() {
        assert_eq!(decode("<a>é</a>".as_bytes()).unwrap(), "<a>é</a>");
        let mut with_bom = vec![0xEF, 0xBB, 0xBF];
        with_bom.extend_from_slice("<a/>".as_bytes());
        assert_eq!(decode(&with_bom).unwrap(), "<a/>");
    }

    #[test]
    fn utf16_is_detected() {
        let mut doc = vec![0xFF, 0xFE];
        for unit in "<?xml version=\"1.0\" encoding=\"UTF-16\"?><a>ü</a>".encode_utf16() {
            doc.extend_from_slice(&unit.to_le_bytes());
        }
        assert!(decode(&doc).unwrap().ends_with("<a>ü</a>"));
    }

    #[test]
    fn bad_utf8_is_located() {
        let err = decode(b"<a>\n  x\xFFy</a>").unwrap_err();
        assert_eq!(
            err,
            ParseError::Decoding {
                encoding: "UTF-8",
                location: Some(crate::error::Location { line: 2, column: 4 })
            }
        );
    }

    #[test]
    fn unknown_encodings_are_refused() {
        let err = decode(b"<?xml version=\"1.0\" encoding=\"klingon\"?><a/>").unwrap_err();
        assert_eq!(
            err,
            ParseError::UnsupportedEncoding {
                label: "klingon".into()
            }
        );
    }
}
