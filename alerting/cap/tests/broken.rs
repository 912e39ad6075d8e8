//! Broken documents: the exact lines `nexus cap validate` prints, one rule at a time.

use nexus_cap::{CapVersion, Limits, ParseError};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).expect("sample file")
}

fn lines(name: &str, bytes: &[u8]) -> Vec<String> {
    nexus_cap::check(bytes)
        .iter()
        .map(|d| d.render(name))
        .collect()
}

/// A minimal valid CAP 1.2 alert with `alert_extra` after `<scope>` and `info_extra` after
/// `<certainty>`; `<info>` is on line 8 and `info_extra` starts on line 14.
fn doc(version: CapVersion, msg_type: &str, alert_extra: &str, info_extra: &str) -> String {
    format!(
        "<alert xmlns=\"{}\">\n  <identifier>T1</identifier>\n  <sender>t@example.org</sender>\n  \
         <sent>2024-01-01T00:00:00-00:00</sent>\n  <status>Actual</status>\n  \
         <msgType>{msg_type}</msgType>\n  <scope>Public</scope>{alert_extra}\n  <info>\n    \
         <category>Met</category>\n    <event>Wind</event>\n    <urgency>Expected</urgency>\n    \
         <severity>Minor</severity>\n    <certainty>Likely</certainty>{info_extra}\n  </info>\n</alert>\n",
        version.namespace()
    )
}

#[test]
fn schema_problems_are_all_reported_with_locations() {
    assert_eq!(
        lines("s.xml", &data("broken_schema.xml")),
        [
            "s.xml:2:1: error: missing required element <identifier> inside <alert>",
            "s.xml:4:3: error: <sent>: '2024-03-01 10:00:00' is not a CAP date-time (YYYY-MM-DDThh:mm:ss±hh:mm): expected the form YYYY-MM-DDThh:mm:ss followed by an offset",
            "s.xml:5:3: error: 'Urgent' is not a valid <status> value; expected one of Actual, Exercise, System, Test, Draft",
            "s.xml:8:3: error: <password> is not part of CAP 1.2 (it was removed in CAP 1.1)",
            "s.xml:11:5: error: <category> is out of order: it must come before <event>",
            "s.xml:15:5: error: <certainty> may appear only once inside <info>",
            "s.xml:18:7: error: <polygon>: pair 3 'x,7.8' has a latitude that is not a decimal number",
            "s.xml:19:7: error: <circle>: '45.1,7.6' is not 'lat,lon radius'",
            "s.xml:20:7: error: <altitude>: 'high' is not a decimal number",
            "s.xml:21:7: error: unexpected element <weather> inside <area>",
        ]
    );
    match nexus_cap::parse(&data("broken_schema.xml"), &Limits::default()) {
        Err(ParseError::Invalid {
            version,
            diagnostics,
        }) => {
            assert_eq!(version, CapVersion::V1_2);
            assert_eq!(diagnostics.len(), 10);
            assert_eq!(diagnostics[6].path, "/alert/info[0]/area[0]/polygon[0]");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn specification_rules_are_all_reported_with_locations() {
    assert_eq!(
        lines("r.xml", &data("broken_rules.xml")),
        [
            "r.xml:3:3: error: <identifier> 'ALERT 2024,07' must not contain whitespace, commas, '<' or '&'",
            "r.xml:7:3: error: <references> is required when <msgType> is Update",
            "r.xml:8:3: error: <restriction> is required when <scope> is Restricted",
            "r.xml:9:3: error: <addresses>: unterminated double quote in a space-delimited list",
            "r.xml:11:5: error: <language> 'en_US' is not an RFC 3066 language tag",
            "r.xml:19:5: error: <expires> (2024-07-01T11:00:00-00:00) must be later than <effective> (2024-07-01T12:00:00-00:00)",
            "r.xml:20:5: error: <web> 'www.example.org/spill' is not an absolute URI",
            "r.xml:21:5: error: missing required element <mimeType> inside <resource>",
            "r.xml:23:7: error: <uri> 'maps/spill.png' is not an absolute URI (a relative URI needs <derefUri>)",
            "r.xml:27:7: error: <polygon> has 3 coordinate pair(s); at least 4 are required",
            "r.xml:28:7: error: <polygon> pair 2 (91,-0.1) is out of range (latitude -90..90, longitude -180..180)",
            "r.xml:28:7: error: <polygon> is not closed: the first pair (51.5,-0.12) and the last pair (51.48,-0.11) differ",
            "r.xml:29:7: error: <circle> radius -2 km must not be negative",
            "r.xml:32:9: error: <geocode> <value> must not be empty",
            "r.xml:34:7: error: <ceiling> must not be used without <altitude>",
        ]
    );
    // The same rules apply to the model, whatever it came from; paths name the elements.
    let parsed = nexus_cap::parse(&data("broken_rules.xml"), &Limits::default()).unwrap();
    let paths: Vec<String> = nexus_cap::validate(&parsed.alert)
        .into_iter()
        .map(|d| d.path)
        .collect();
    assert!(paths.contains(&"/alert/info[0]/area[0]/polygon[1]".to_owned()));
    assert!(paths.contains(&"/alert/info[0]/resource[0]/mimeType".to_owned()));
}

#[test]
fn message_types_that_point_elsewhere_need_references() {
    for msg_type in ["Update", "Cancel", "Ack", "Error"] {
        let d = doc(CapVersion::V1_2, msg_type, "", "");
        assert_eq!(
            lines("m", d.as_bytes()),
            [format!(
                "m:6:3: error: <references> is required when <msgType> is {msg_type}"
            )]
        );
        let with = doc(
            CapVersion::V1_2,
            msg_type,
            "\n  <references>t@example.org,T0,2023-12-31T23:00:00-00:00</references>",
            "",
        );
        assert_eq!(
            lines("m", with.as_bytes()),
            Vec::<String>::new(),
            "{msg_type}"
        );
    }
}

#[test]
fn references_must_be_triples() {
    let d = doc(
        CapVersion::V1_2,
        "Update",
        "\n  <references>t@example.org,T0</references>",
        "",
    );
    assert_eq!(
        lines("m", d.as_bytes()),
        [
            "m:8:3: error: <references>: reference 1 't@example.org,T0': expected sender,identifier,sent"
        ]
    );
    let d = doc(
        CapVersion::V1_2,
        "Update",
        "\n  <references>t@example.org,T0,2023-12-31T23:00:00.5-00:00</references>",
        "",
    );
    assert_eq!(
        lines("m", d.as_bytes()),
        [
            "m:8:3: error: <references>: reference 1 't@example.org,T0,2023-12-31T23:00:00.5-00:00': sent '2023-12-31T23:00:00.5-00:00': fractional seconds are not allowed in CAP 1.2"
        ]
    );
}

#[test]
fn private_scope_needs_addresses_and_restriction_needs_restricted() {
    let d = doc(CapVersion::V1_2, "Alert", "", "").replace("Public", "Private");
    assert_eq!(
        lines("m", d.as_bytes()),
        ["m:7:3: error: <addresses> is required when <scope> is Private"]
    );
    let d = doc(
        CapVersion::V1_2,
        "Alert",
        "\n  <restriction>Staff only</restriction>",
        "",
    );
    assert_eq!(
        lines("m", d.as_bytes()),
        ["m:8:3: error: <restriction> is only used when <scope> is Restricted"]
    );
    let d = doc(
        CapVersion::V1_2,
        "Alert",
        "\n  <addresses>ops@example.org \"Fire Dept 3\"</addresses>",
        "",
    )
    .replace("Public", "Private");
    assert_eq!(lines("m", d.as_bytes()), Vec::<String>::new());
}

#[test]
fn date_times_need_explicit_offsets() {
    let d = doc(
        CapVersion::V1_2,
        "Alert",
        "",
        "\n    <expires>2024-01-02T00:00:00Z</expires>",
    );
    assert_eq!(
        lines("m", d.as_bytes()),
        [
            "m:14:5: error: <expires>: '2024-01-02T00:00:00Z' is not a CAP date-time (YYYY-MM-DDThh:mm:ss±hh:mm): the 'Z' time zone designator is not allowed; write -00:00 for UTC"
        ]
    );
    let d = doc(
        CapVersion::V1_2,
        "Alert",
        "",
        "\n    <expires>2024-01-02T00:00:00.250-00:00</expires>",
    );
    assert_eq!(
        lines("m", d.as_bytes()),
        [
            "m:14:5: error: <expires>: '2024-01-02T00:00:00.250-00:00' is not a CAP date-time (YYYY-MM-DDThh:mm:ss±hh:mm): fractional seconds are not allowed in CAP 1.2"
        ]
    );
    // +00:00 is admitted by the schema pattern; it is read and written back as -00:00.
    let d = doc(
        CapVersion::V1_2,
        "Alert",
        "",
        "\n    <expires>2024-01-02T00:00:00+00:00</expires>",
    );
    assert_eq!(lines("m", d.as_bytes()), Vec::<String>::new());
    let d = doc(
        CapVersion::V1_2,
        "Alert",
        "",
        "\n    <onset>2024-01-03T00:00:00-00:00</onset>\n    <expires>2024-01-02T00:00:00-00:00</expires>",
    );
    assert_eq!(
        lines("m", d.as_bytes()),
        [
            "m:15:5: error: <expires> (2024-01-02T00:00:00-00:00) must be later than <onset> (2024-01-03T00:00:00-00:00)"
        ]
    );
}

#[test]
fn code_values_are_checked_against_the_documents_version() {
    let d = doc(CapVersion::V1_1, "Alert", "", "").replace(
        "<certainty>Likely</certainty>",
        "<certainty>Very Likely</certainty>",
    );
    assert_eq!(
        lines("m", d.as_bytes()),
        ["m:13:5: error: <certainty> value 'Very Likely' is not defined in CAP 1.1 (use Likely)"]
    );
    let d = doc(CapVersion::V1_1, "Alert", "", "").replace(
        "<event>Wind</event>",
        "<event>Wind</event>\n    <responseType>AllClear</responseType>",
    );
    assert_eq!(
        lines("m", d.as_bytes()),
        ["m:11:5: error: <responseType> value 'AllClear' is not defined in CAP 1.1"]
    );
    let d = doc(CapVersion::V1_0, "Alert", "", "").replace("<category>Met", "<category>CBRNE");
    assert_eq!(
        lines("m", d.as_bytes()),
        ["m:9:5: error: <category> value 'CBRNE' is not defined in CAP 1.0"]
    );
    let d = doc(CapVersion::V1_0, "Alert", "", "").replace(
        "<event>Wind</event>",
        "<event>Wind</event>\n    <responseType>Shelter</responseType>",
    );
    assert_eq!(
        lines("m", d.as_bytes()),
        ["m:11:5: error: <responseType> is not part of CAP 1.0 (it was added in CAP 1.1)"]
    );
    let d = doc(CapVersion::V1_0, "Alert", "", "").replace("Actual", "Draft");
    assert_eq!(
        lines("m", d.as_bytes()),
        ["m:5:3: error: <status> value 'Draft' is not defined in CAP 1.0"]
    );
}

#[test]
fn mixing_versions_is_reported() {
    let d = doc(CapVersion::V1_2, "Alert", "", "").replace(
        "<scope>Public</scope>",
        "<scope>Public</scope>\n  <note xmlns=\"urn:oasis:names:tc:emergency:cap:1.1\">x</note>",
    );
    assert_eq!(
        lines("m", d.as_bytes()),
        ["m:8:3: error: <note> is in the CAP 1.1 namespace, but this is a CAP 1.2 document"]
    );
}

#[test]
fn elements_after_the_signature_are_out_of_order() {
    let d = doc(CapVersion::V1_2, "Alert", "", "").replace(
        "  <info>",
        "  <Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\"/>\n  <info>",
    );
    assert_eq!(
        lines("m", d.as_bytes()),
        ["m:9:3: error: <info> must come before the XML signature"]
    );
}

#[test]
fn text_and_attributes_where_cap_has_none() {
    let d = doc(CapVersion::V1_2, "Alert", "", "")
        .replace(
            "<status>Actual</status>",
            "<status kind=\"x\">Actual</status>",
        )
        .replace("  <info>", "  stray text\n  <info>");
    assert_eq!(
        lines("m", d.as_bytes()),
        [
            "m:1:1: error: unexpected text inside <alert>",
            "m:5:3: error: unexpected attribute 'kind' on <status>",
        ]
    );
}

#[test]
fn geometry_rules() {
    let area = |body: &str| {
        doc(
            CapVersion::V1_2,
            "Alert",
            "",
            &format!("\n    <area>\n      <areaDesc>A</areaDesc>\n      {body}\n    </area>"),
        )
    };
    let d = area("<circle>95,10 5</circle>");
    assert_eq!(
        lines("m", d.as_bytes()),
        [
            "m:16:7: error: <circle> centre (95,10) is out of range (latitude -90..90, longitude -180..180)"
        ]
    );
    let d = area("<polygon>10,200 11,10 11,11 10,200</polygon>");
    assert_eq!(
        lines("m", d.as_bytes()),
        [
            "m:16:7: error: <polygon> pair 1 (10,200) is out of range (latitude -90..90, longitude -180..180)"
        ]
    );
    let d = area("<altitude>500</altitude>\n      <ceiling>100</ceiling>");
    assert_eq!(
        lines("m", d.as_bytes()),
        ["m:17:7: error: <ceiling> (100) must not be below <altitude> (500)"]
    );
    let d = area("<geocode>\n        <valueName>SAME</valueName>\n      </geocode>");
    assert_eq!(
        lines("m", d.as_bytes()),
        ["m:16:7: error: missing required element <value> inside <geocode>"]
    );
}
