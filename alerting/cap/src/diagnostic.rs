//! [`Diagnostic`]: one problem in a CAP document, with its place.

use std::fmt;

use serde::Serialize;

/// One problem found in a CAP document.
///
/// `path` names the element in XPath-like form with 0-based indexes on repeatable elements,
/// e.g. `/alert/info[1]/area[0]/polygon[0]`; it is empty when the problem is not about one
/// element (malformed XML). `line` and `column` (1-based, columns in characters) are set when
/// the alert came from XML and the element could be found in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    /// 1-based line in the source document, when known.
    pub line: Option<u32>,
    /// 1-based column (in characters) in the source document, when known.
    pub column: Option<u32>,
    /// The element concerned, e.g. `/alert/info[0]/expires`.
    pub path: String,
    /// What is wrong, in one sentence.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic without a source location.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            line: None,
            column: None,
            path: path.into(),
            message: message.into(),
        }
    }

    /// The line `nexus cap validate` prints for this problem in `file`:
    /// `FILE:LINE:COL: error: MESSAGE`, or `FILE: error: MESSAGE` without a location.
    ///
    /// ```
    /// let d = nexus_cap::Diagnostic::new("/alert/sender", "<sender> is missing");
    /// assert_eq!(d.render("a.xml"), "a.xml: error: <sender> is missing");
    /// ```
    pub fn render(&self, file: &str) -> String {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                format!("{file}:{line}:{column}: error: {}", self.message)
            }
            (Some(line), None) => format!("{file}:{line}: error: {}", self.message),
            _ => format!("{file}: error: {}", self.message),
        }
    }
}

impl Diagnostic {
    /// The path as a JSON Pointer into the JSON form of the alert (`docs/cap-json.md`), for
    /// `problem+json` validation errors: `/alert/info[1]/area[0]/polygon[0]` becomes
    /// `/info/1/area/0/polygon/0`, `/alert/msgType` becomes `/msg_type`.
    ///
    /// ```
    /// let d = nexus_cap::Diagnostic::new("/alert/info[0]/resource[2]/mimeType", "x");
    /// assert_eq!(d.json_pointer(), "/info/0/resource/2/mime_type");
    /// ```
    pub fn json_pointer(&self) -> String {
        let mut out = String::new();
        for segment in self.path.split('/').filter(|s| !s.is_empty()).skip(1) {
            let (name, index) = match segment.split_once('[') {
                Some((n, rest)) => (n, Some(rest.trim_end_matches(']'))),
                None => (segment, None),
            };
            out.push('/');
            for c in name.chars() {
                if c.is_ascii_uppercase() {
                    out.push('_');
                    out.push(c.to_ascii_lowercase());
                } else {
                    out.push(c);
                }
            }
            if let Some(i) = index {
                out.push('/');
                out.push_str(i);
            }
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "{line}:{column}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A path being walked, rendered to a string only when a diagnostic needs it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Path {
    segments: Vec<(&'static str, Option<usize>)>,
}

impl Path {
    pub(crate) fn root() -> Self {
        Path {
            segments: vec![("alert", None)],
        }
    }

    pub(crate) fn push(&mut self, name: &'static str, index: Option<usize>) {
        self.segments.push((name, index));
    }

    pub(crate) fn pop(&mut self) {
        self.segments.pop();
    }

    /// This path with one more segment, rendered.
    pub(crate) fn child(&self, name: &str, index: Option<usize>) -> String {
        let mut s = self.render();
        push_segment(&mut s, name, index);
        s
    }

    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        for (name, index) in &self.segments {
            push_segment(&mut s, name, *index);
        }
        s
    }
}

fn push_segment(s: &mut String, name: &str, index: Option<usize>) {
    use std::fmt::Write;
    s.push('/');
    s.push_str(name);
    if let Some(i) = index {
        // Writing into a String cannot fail.
        let _ = write!(s, "[{i}]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_cli_line() {
        let mut d = Diagnostic::new("/alert/info[0]/expires", "bad");
        assert_eq!(d.render("f.xml"), "f.xml: error: bad");
        d.line = Some(12);
        d.column = Some(7);
        assert_eq!(d.render("f.xml"), "f.xml:12:7: error: bad");
        assert_eq!(d.to_string(), "12:7: /alert/info[0]/expires: bad");
    }

    #[test]
    fn json_pointers_follow_the_json_form() {
        let d = Diagnostic::new("/alert/msgType", "x");
        assert_eq!(d.json_pointer(), "/msg_type");
        let d = Diagnostic::new("/alert/info[1]/area[0]/geocode[3]/valueName", "x");
        assert_eq!(d.json_pointer(), "/info/1/area/0/geocode/3/value_name");
        assert_eq!(Diagnostic::new("/alert", "x").json_pointer(), "");
        assert_eq!(Diagnostic::new("", "x").json_pointer(), "");
    }

    #[test]
    fn paths_index_repeatable_elements() {
        let mut p = Path::root();
        p.push("info", Some(1));
        p.push("area", Some(0));
        assert_eq!(
            p.child("polygon", Some(2)),
            "/alert/info[1]/area[0]/polygon[2]"
        );
        p.pop();
        assert_eq!(p.child("expires", None), "/alert/info[1]/expires");
    }
}
