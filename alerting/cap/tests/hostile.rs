//! Hostile XML is refused quickly, never expanded, and reported with a location.

use std::time::{Duration, Instant};

use nexus_cap::{Limits, Location, ParseError};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).expect("sample file")
}

fn refuse(bytes: &[u8]) -> ParseError {
    let start = Instant::now();
    let err = nexus_cap::parse(bytes, &Limits::default()).expect_err("must be refused");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    err
}

fn lines(name: &str, bytes: &[u8]) -> Vec<String> {
    nexus_cap::check(bytes)
        .iter()
        .map(|d| d.render(name))
        .collect()
}

#[test]
fn billion_laughs_is_refused_at_the_doctype() {
    let bytes = data("hostile_billion_laughs.xml");
    assert_eq!(
        refuse(&bytes),
        ParseError::Doctype {
            location: Location { line: 2, column: 1 }
        }
    );
    assert_eq!(
        lines("b.xml", &bytes),
        [
            "b.xml:2:1: error: DOCTYPE declarations are not allowed (DTDs and entity declarations are never processed)"
        ]
    );
}

#[test]
fn external_entity_is_refused_at_the_doctype() {
    let bytes = data("hostile_xxe.xml");
    assert_eq!(
        refuse(&bytes),
        ParseError::Doctype {
            location: Location { line: 2, column: 1 }
        }
    );
}

#[test]
fn a_doctype_without_entities_is_refused_too() {
    let bytes = data("hostile_doctype_only.xml");
    assert_eq!(
        refuse(&bytes),
        ParseError::Doctype {
            location: Location { line: 2, column: 1 }
        }
    );
}

#[test]
fn undefined_entity_references_are_refused() {
    let bytes = data("hostile_undefined_entity.xml");
    assert_eq!(
        refuse(&bytes),
        ParseError::UndefinedEntity {
            name: "xxe".into(),
            location: Location {
                line: 9,
                column: 13
            }
        }
    );
    // HTML entities are not XML entities.
    let html = String::from_utf8(data("homeland_security.xml"))
        .unwrap()
        .replace("Image file (GIF)", "Image&nbsp;file");
    assert!(
        matches!(refuse(html.as_bytes()), ParseError::UndefinedEntity { name, .. } if name == "nbsp")
    );
}

#[test]
fn five_mebibyte_document_is_refused_before_parsing() {
    let mut doc = String::from_utf8(data("thunderstorm_polygon.xml")).unwrap();
    let filler = format!("<!-- {} -->\n", "x".repeat(1000));
    while doc.len() <= 5 * 1024 * 1024 {
        doc.push_str(&filler);
    }
    let size = doc.len();
    assert_eq!(
        refuse(doc.as_bytes()),
        ParseError::TooLarge {
            size,
            limit: 4 * 1024 * 1024
        }
    );
    // A caller may raise the limit; the same document then parses.
    let big = Limits {
        max_bytes: 8 * 1024 * 1024,
        ..Limits::default()
    };
    assert!(nexus_cap::parse(doc.as_bytes(), &big).is_ok());
}

#[test]
fn deep_nesting_is_refused() {
    let bytes = data("hostile_deep.xml");
    assert_eq!(
        refuse(&bytes),
        ParseError::TooDeep {
            limit: 32,
            location: Location {
                line: 3,
                column: 1 + 31 * 6
            }
        }
    );
}

#[test]
fn element_floods_are_refused() {
    let mut doc = String::from("<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">");
    for _ in 0..200_000 {
        doc.push_str("<code/>");
    }
    doc.push_str("</alert>");
    assert!(matches!(
        refuse(doc.as_bytes()),
        ParseError::TooManyElements { limit: 100_000, .. }
    ));
}

#[test]
fn a_long_single_line_stays_linear() {
    // 3.9 MB on one line: column tracking must not be quadratic.
    let mut doc = String::from("<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">");
    let code = format!("<code>{}</code>", "x".repeat(100));
    while doc.len() < 3_900_000 {
        doc.push_str(&code);
    }
    doc.push_str("<bogus/></alert>");
    let start = Instant::now();
    let problems = nexus_cap::check(doc.as_bytes());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        problems
            .iter()
            .any(|d| d.message == "unexpected element <bogus> inside <alert>")
    );
}

#[test]
fn not_cap_and_not_xml() {
    assert_eq!(
        lines("x", b"hello"),
        ["x:1:1: error: malformed XML: text outside the root element"]
    );
    assert_eq!(
        lines("x", b""),
        ["x:1:1: error: malformed XML: document has no root element"]
    );
    assert_eq!(
        lines(
            "x",
            b"<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.3\"/>"
        ),
        [
            "x:1:1: error: not a CAP alert: root element is <alert> in namespace 'urn:oasis:names:tc:emergency:cap:1.3'"
        ]
    );
    assert_eq!(
        lines(
            "x",
            b"<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">\n<identifier>a</identifer>"
        ),
        [
            "x:2:14: error: malformed XML: ill-formed document: expected `</identifier>`, but `</identifer>` was found"
        ]
    );
}
