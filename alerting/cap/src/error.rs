//! Errors: why a document could not be parsed, and why a single value is not valid CAP.

use std::fmt;

use crate::codes::CapVersion;
use crate::diagnostic::Diagnostic;

/// A place in the source document: 1-based line, and 1-based column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// 1-based line number.
    pub line: u32,
    /// 1-based column, in Unicode scalar values from the start of the line.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why [`crate::parse`] refused a document.
///
/// Every variant except [`ParseError::Invalid`] is fatal: the bytes are not a well-formed,
/// safe XML document, or not a CAP alert at all. `Invalid` means the XML is fine but does not
/// fit the CAP schema of its version (unknown or misplaced elements, missing required
/// elements, values that cannot be read); it carries every problem found, located.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input is larger than [`crate::Limits::max_bytes`]; nothing was parsed.
    #[error("document is {size} bytes, larger than the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The XML declaration names an encoding this parser does not know.
    #[error("unsupported character encoding '{label}' declared in the XML prolog")]
    UnsupportedEncoding {
        /// The declared encoding label.
        label: String,
    },
    /// The bytes are not valid in the (declared or detected) encoding.
    #[error("document is not valid {encoding}")]
    Decoding {
        /// The encoding the bytes were decoded with.
        encoding: &'static str,
        /// Where the first invalid byte is, when known.
        location: Option<Location>,
    },
    /// The document has a `<!DOCTYPE …>`. DTDs (and so entity declarations, external entities
    /// and entity expansion) are refused outright, never processed.
    #[error(
        "DOCTYPE declarations are not allowed (DTDs and entity declarations are never processed)"
    )]
    Doctype {
        /// Where the DOCTYPE starts.
        location: Location,
    },
    /// An entity reference other than the five predefined XML entities or a character
    /// reference.
    #[error(
        "undefined entity reference '&{name};' (only &lt; &gt; &amp; &apos; &quot; and character references are allowed)"
    )]
    UndefinedEntity {
        /// The entity name.
        name: String,
        /// The element or attribute holding the reference.
        location: Location,
    },
    /// Elements are nested deeper than [`crate::Limits::max_depth`].
    #[error("elements are nested deeper than the limit of {limit}")]
    TooDeep {
        /// The configured limit.
        limit: usize,
        /// The first element past the limit.
        location: Location,
    },
    /// The document has more elements than [`crate::Limits::max_elements`].
    #[error("document has more than the limit of {limit} elements")]
    TooManyElements {
        /// The configured limit.
        limit: usize,
        /// The first element past the limit.
        location: Location,
    },
    /// The document is not well-formed XML.
    #[error("malformed XML: {message}")]
    Xml {
        /// What is wrong.
        message: String,
        /// Where the parser stopped.
        location: Location,
    },
    /// The root element is not `<alert>` in a CAP 1.0, 1.1 or 1.2 namespace.
    #[error("not a CAP alert: root element is <{element}> in {}", namespace.as_deref().map_or_else(|| "no namespace".to_owned(), |n| format!("namespace '{n}'")))]
    NotCap {
        /// Local name of the root element.
        element: String,
        /// Its namespace, if any.
        namespace: Option<String>,
        /// Where the root element starts.
        location: Location,
    },
    /// Well-formed XML that does not fit the CAP schema of its version.
    #[error("document does not fit the CAP {version} schema ({} problem(s))", diagnostics.len())]
    Invalid {
        /// The CAP version of the document.
        version: CapVersion,
        /// Every problem found, in document order.
        diagnostics: Vec<Diagnostic>,
    },
}

impl ParseError {
    /// Where the error is in the source document, when it is one place.
    pub fn location(&self) -> Option<Location> {
        match self {
            ParseError::Decoding { location, .. } => *location,
            ParseError::Doctype { location }
            | ParseError::UndefinedEntity { location, .. }
            | ParseError::TooDeep { location, .. }
            | ParseError::TooManyElements { location, .. }
            | ParseError::Xml { location, .. }
            | ParseError::NotCap { location, .. } => Some(*location),
            ParseError::TooLarge { .. }
            | ParseError::UnsupportedEncoding { .. }
            | ParseError::Invalid { .. } => None,
        }
    }

    /// The error as diagnostics: the located problems of [`ParseError::Invalid`], or one
    /// diagnostic for a fatal error.
    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        match self {
            ParseError::Invalid { diagnostics, .. } => diagnostics,
            other => {
                let location = other.location();
                vec![Diagnostic {
                    line: location.map(|l| l.line),
                    column: location.map(|l| l.column),
                    path: String::new(),
                    message: other.to_string(),
                }]
            }
        }
    }
}

/// Why one CAP value (a code, a date-time, a coordinate list, a reference, a group listing)
/// cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// A code list value that the list does not contain.
    #[error("'{value}' is not a valid <{element}> value; expected one of {expected}")]
    UnknownCode {
        /// The element (`status`, `category`, …).
        element: &'static str,
        /// The value found.
        value: String,
        /// The values allowed, comma-separated.
        expected: &'static str,
    },
    /// A date-time that is not in the CAP form `YYYY-MM-DDThh:mm:ss±hh:mm`.
    #[error("'{value}' is not a CAP date-time (YYYY-MM-DDThh:mm:ss±hh:mm): {reason}")]
    DateTime {
        /// The text found.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A polygon or circle whose text cannot be read as WGS 84 `lat,lon` pairs.
    #[error("{reason}")]
    Geometry {
        /// What is wrong, naming the offending pair.
        reason: String,
    },
    /// A number (`size`, `altitude`, `ceiling`) that cannot be read.
    #[error("'{value}' is not {expected}")]
    Number {
        /// The text found.
        value: String,
        /// What was expected (`a non-negative integer`, `a decimal number`).
        expected: &'static str,
    },
    /// A `references` entry that is not `sender,identifier,sent`.
    #[error("reference {index} '{value}': {reason}")]
    Reference {
        /// 1-based position of the entry in the list.
        index: usize,
        /// The entry.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A group listing (`addresses`, `incidents`) with an unterminated double quote.
    #[error("unterminated double quote in a space-delimited list")]
    UnterminatedQuote,
    /// A CAP 1.0 `name=value` pair without `=`.
    #[error("'{value}' is not in the CAP 1.0 form valueName=value")]
    ValuePair {
        /// The text found.
        value: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_errors_become_one_located_diagnostic() {
        let err = ParseError::Doctype {
            location: Location { line: 2, column: 1 },
        };
        let diags = err.into_diagnostics();
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].line, Some(2));
        assert_eq!(diags[0].column, Some(1));
        assert!(
            diags[0]
                .message
                .starts_with("DOCTYPE declarations are not allowed")
        );
    }

    #[test]
    fn not_cap_names_the_namespace() {
        let err = ParseError::NotCap {
            element: "feed".into(),
            namespace: Some("http://www.w3.org/2005/Atom".into()),
            location: Location { line: 1, column: 1 },
        };
        assert_eq!(
            err.to_string(),
            "not a CAP alert: root element is <feed> in namespace 'http://www.w3.org/2005/Atom'"
        );
        let err = ParseError::NotCap {
            element: "alert".into(),
            namespace: None,
            location: Location { line: 1, column: 1 },
        };
        assert_eq!(
            err.to_string(),
            "not a CAP alert: root element is <alert> in no namespace"
        );
    }
}
