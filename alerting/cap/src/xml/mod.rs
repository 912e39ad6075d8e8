//! CAP XML: safe reading ([`parse`], [`check`]) and writing ([`to_xml`]).

mod decode;
mod dom;
mod read;
mod source_map;
mod write;

pub use write::{to_xml, to_xml_version};

pub(crate) use decode::decode;
pub(crate) use write::escape_into;

use crate::codes::CapVersion;
use crate::convert;
use crate::diagnostic::Diagnostic;
use crate::error::{Location, ParseError};
use crate::model::Alert;
use crate::validate::validate_version;
use dom::Ns;
use source_map::SourceMap;

/// Bounds on what [`parse`] will read. Documents past a bound are refused before (size) or
/// while (depth, element count) they are read, so hostile input costs bounded time and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input, in bytes (default 4 MiB, the API's CAP body limit).
    pub max_bytes: usize,
    /// Deepest element nesting (default 32; CAP itself needs 5, XML signatures about 7).
    pub max_depth: usize,
    /// Most elements in one document (default 100 000).
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 4 * 1024 * 1024,
            max_depth: 32,
            max_elements: 100_000,
        }
    }
}

/// A parsed CAP document: the alert, the version it was written in, and where its elements
/// are in the source (so diagnostics found later can be located).
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The alert, in the document's own version's terms (see [`Parsed::into_cap12`]).
    pub alert: Alert,
    /// The CAP version of the document, from the namespace of `<alert>`.
    pub version: CapVersion,
    map: SourceMap,
}

impl Parsed {
    /// Applies the rules of the document's version and locates each problem in the source.
    pub fn validate(&self) -> Vec<Diagnostic> {
        let mut diagnostics = validate_version(&self.alert, self.version);
        for d in &mut diagnostics {
            self.locate_into(d);
        }
        diagnostics
    }

    /// The start of the element named by a diagnostic path (or of its nearest ancestor
    /// present in the document).
    pub fn locate(&self, path: &str) -> Option<Location> {
        self.map.locate(path)
    }

    /// The alert converted to CAP 1.2 (see [`crate::to_cap12`]).
    pub fn into_cap12(self) -> Alert {
        convert::to_cap12(self.alert, self.version)
    }

    fn locate_into(&self, d: &mut Diagnostic) {
        if let Some(loc) = self.map.locate(&d.path) {
            d.line = Some(loc.line);
            d.column = Some(loc.column);
        }
    }
}

/// Parses a CAP 1.0, 1.1 or 1.2 document.
///
/// The bytes may be in any encoding declared in the XML prolog (or UTF-16 with a BOM). A
/// document is refused when it is larger, deeper or bigger than `limits`, has a DOCTYPE, uses
/// an undefined entity, is not well-formed, is not an `<alert>` in a CAP namespace, or does
/// not fit its version's schema (the last with every problem located, as
/// [`ParseError::Invalid`]). Rules that the schema cannot express are checked by
/// [`Parsed::validate`]; [`check`] does both.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let (parsed, diagnostics) = parse_lenient(bytes, limits)?;
    if diagnostics.is_empty() {
        Ok(parsed)
    } else {
        Err(ParseError::Invalid {
            version: parsed.version,
            diagnostics,
        })
    }
}

/// Everything wrong with a CAP document, located; empty when it is valid.
///
/// Schema problems and the version's validation rules are reported together, in document
/// order, with default [`Limits`].
///
/// ```
/// let doc = br#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
///   <identifier>X 1</identifier>
/// </alert>"#;
/// let problems = nexus_cap::check(doc);
/// assert_eq!(problems[0].render("a.xml"),
///     "a.xml:1:1: error: missing required element <sender> inside <alert>");
/// assert_eq!(problems.last().unwrap().render("a.xml"),
///     "a.xml:2:3: error: <identifier> 'X 1' must not contain whitespace, commas, '<' or '&'");
/// ```
pub fn check(bytes: &[u8]) -> Vec<Diagnostic> {
    check_with(bytes, &Limits::default())
}

/// [`check`] with explicit limits.
pub fn check_with(bytes: &[u8], limits: &Limits) -> Vec<Diagnostic> {
    let (parsed, mut out) = match parse_lenient(bytes, limits) {
        Ok(result) => result,
        Err(fatal) => return fatal.into_diagnostics(),
    };
    let schema_paths: Vec<String> = out.iter().map(|d| d.path.clone()).collect();
    for mut d in validate_version(&parsed.alert, parsed.version) {
        // A value the schema step already rejected was replaced by a placeholder; do not
        // report it twice.
        if schema_paths.contains(&d.path) {
            continue;
        }
        parsed.locate_into(&mut d);
        out.push(d);
    }
    out.sort_by_key(|d| (d.line.is_none(), d.line, d.column));
    out
}

/// Parses and maps, returning the schema problems instead of failing on them.
fn parse_lenient(bytes: &[u8], limits: &Limits) -> Result<(Parsed, Vec<Diagnostic>), ParseError> {
    if bytes.len() > limits.max_bytes {
        return Err(ParseError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let text = decode::decode(bytes)?;
    let doc = dom::build(&text, limits)?;
    let root = &doc.nodes[0];
    let version = match root.ns {
        Ns::Cap(v) if root.local == "alert" => v,
        _ => {
            return Err(ParseError::NotCap {
                element: root.local.to_owned(),
                namespace: doc.root_ns.clone(),
                location: root.loc,
            });
        }
    };
    let mut mapped = read::map(&doc, version);
    mapped.diagnostics.sort_by_key(|d| (d.line, d.column));
    Ok((
        Parsed {
            alert: mapped.alert,
            version,
            map: mapped.map,
        },
        mapped.diagnostics,
    ))
}

/// Line and column (1-based, columns in characters) of a byte offset.
pub(crate) fn line_col(src: &str, offset: usize) -> Location {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    Location {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), Location { line: 1, column: 1 });
        assert_eq!(line_col("ab\ncd", 4), Location { line: 2, column: 2 });
        assert_eq!(line_col("é\né", 5), Location { line: 2, column: 2 });
        assert_eq!(line_col("ab", 99), Location { line: 1, column: 3 });
    }

    #[test]
    fn size_limit_is_checked_first() {
        let limits = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        let err = parse(&[b'x'; 11], &limits).unwrap_err();
        assert_eq!(
            err,
            ParseError::TooLarge {
                size: 11,
                limit: 10
            }
        );
    }

    #[test]
    fn non_cap_roots_are_refused() {
        let err = parse(b"<alert/>", &Limits::default()).unwrap_err();
        assert!(matches!(
            err,
            ParseError::NotCap {
                namespace: None,
                ..
            }
        ));
        let err = parse(
            b"<feed xmlns=\"http://www.w3.org/2005/Atom\"/>",
            &Limits::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ParseError::NotCap { .. }));
    }
}
