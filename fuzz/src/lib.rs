//! The checks each fuzz target runs, kept in a library so that normal tests can run them over
//! a corpus on stable Rust (`alerting/cap/tests/fuzz_corpus.rs` includes this file).

/// CAP parser: arbitrary bytes never panic `check` or `parse`; whatever parses validates
/// without panicking, and writes back to XML that parses to the same alert.
pub fn cap_parse(data: &[u8]) {
    let limits = nexus_cap::Limits::default();
    let _ = nexus_cap::check(data);
    if let Ok(parsed) = nexus_cap::parse(data, &limits) {
        let _ = parsed.validate();
        let xml = nexus_cap::to_xml_version(&parsed.alert, parsed.version);
        let again = match nexus_cap::parse(xml.as_bytes(), &limits) {
            Ok(again) => again,
            Err(e) => panic!("written XML does not parse: {e:?}\n{xml}"),
        };
        assert_eq!(
            again.alert, parsed.alert,
            "XML round trip changed the alert"
        );
        for area in parsed.alert.areas() {
            let _ = area.geometry();
        }
        let _ = nexus_cap::validate(&parsed.into_cap12());
    }
}

/// ATOM feed reader (CAP feed ingest): arbitrary bytes never panic `read_atom`, and every
/// entry it returns answers `cap_link` without panicking.
pub fn atom_read(data: &[u8]) {
    if let Ok(entries) = nexus_cap::read_atom(data, &nexus_cap::Limits::default()) {
        for entry in &entries {
            let _ = entry.cap_link();
        }
    }
}
