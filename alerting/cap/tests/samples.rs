//! Real-world-style documents: they parse, validate clean, round-trip, and keep their details.

use nexus_cap::{
    CapVersion, Category, Certainty, Limits, MsgType, Parsed, ResponseType, Scope, Severity,
    Status, ValuePair,
};

const VALID: &[&str] = &[
    "homeland_security.xml",
    "thunderstorm_polygon.xml",
    "earthquake_circle.xml",
    "update_references.xml",
    "cancel.xml",
    "cap11_flood.xml",
    "cap10_tornado.xml",
    "latin1_meteo.xml",
    "signed.xml",
];

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(name: &str) -> Parsed {
    nexus_cap::parse(&data(name), &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

#[test]
fn every_sample_is_valid_under_its_own_version() {
    for name in VALID {
        assert_eq!(nexus_cap::check(&data(name)), vec![], "{name}");
        assert_eq!(parse(name).validate(), vec![], "{name}");
    }
}

#[test]
fn every_sample_round_trips_through_xml_in_its_own_version() {
    for name in VALID {
        let parsed = parse(name);
        let xml = nexus_cap::to_xml_version(&parsed.alert, parsed.version);
        let again = nexus_cap::parse(xml.as_bytes(), &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e:?}\n{xml}"));
        assert_eq!(again.version, parsed.version, "{name}");
        assert_eq!(again.alert, parsed.alert, "{name}");
        // And the writer is a fixed point after one pass.
        assert_eq!(
            nexus_cap::to_xml_version(&again.alert, again.version),
            xml,
            "{name}"
        );
    }
}

#[test]
fn every_sample_round_trips_through_json() {
    for name in VALID {
        let alert = parse(name).alert;
        let json = serde_json::to_string_pretty(&alert).unwrap();
        let back: nexus_cap::Alert = serde_json::from_str(&json).unwrap();
        assert_eq!(back, alert, "{name}");
    }
}

#[test]
fn older_versions_convert_to_valid_cap12() {
    for name in VALID {
        let parsed = parse(name);
        let alert = parsed.into_cap12();
        assert_eq!(nexus_cap::validate(&alert), vec![], "{name}");
        let xml = nexus_cap::to_xml(&alert);
        let again = nexus_cap::parse(xml.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(again.version, CapVersion::V1_2);
        assert_eq!(again.alert, alert, "{name}");
    }
}

#[test]
fn thunderstorm_warning_with_polygon() {
    let a = parse("thunderstorm_polygon.xml").alert;
    assert_eq!(a.identifier, "KSTO1055887203");
    assert_eq!(a.sent.to_string(), "2003-06-17T14:57:00-07:00");
    let info = &a.info[0];
    assert_eq!(info.category, [Category::Met]);
    assert_eq!(info.response_type, [ResponseType::Shelter]);
    assert_eq!(info.event_code, [ValuePair::new("SAME", "SVR")]);
    assert!(
        info.description
            .as_deref()
            .unwrap()
            .starts_with(" AT 254 PM PDT")
    );
    let area = &info.area[0];
    assert_eq!(area.geocode.len(), 3);
    let g = area.geometry();
    assert_eq!(g.polygons[0].len(), 5);
    assert_eq!(g.polygons[0][1], (-119.95, 38.34));
}

#[test]
fn earthquake_with_circles_geocodes_and_two_languages() {
    let a = parse("earthquake_circle.xml").alert;
    assert_eq!(a.msg_type, MsgType::Update);
    assert_eq!(
        nexus_cap::split_group(a.incidents.as_deref().unwrap()).unwrap(),
        ["TRI13970876", "Imperial Valley sequence"]
    );
    assert_eq!(a.info.len(), 2);
    assert_eq!(a.info[1].language.as_deref(), Some("es-US"));
    assert!(
        a.info[1]
            .description
            .as_deref()
            .unwrap()
            .contains("Pacífico")
    );
    let area = &a.info[0].area[0];
    assert_eq!(area.altitude, Some(-58000.0));
    let g = area.geometry();
    assert_eq!(
        g.circles,
        [(32.9525, -115.5527, 0.0), (32.9525, -115.5527, 25500.0)]
    );
    assert_eq!(a.info[0].resource[0].size, Some(48213));
}

#[test]
fn homeland_security_advisory() {
    let a = parse("homeland_security.xml").alert;
    assert_eq!(a.scope, Some(Scope::Public));
    let info = &a.info[0];
    assert_eq!(info.severity, Severity::Severe);
    assert_eq!(info.parameter, [ValuePair::new("HSAS", "ORANGE")]);
    assert_eq!(info.resource[0].mime_type.as_deref(), Some("image/gif"));
    assert!(info.area[0].geometry().is_empty());
}

#[test]
fn cap11_document_keeps_its_version_and_prefix_free_model() {
    let parsed = parse("cap11_flood.xml");
    assert_eq!(parsed.version, CapVersion::V1_1);
    let info = &parsed.alert.info[0];
    assert_eq!(info.event, "Flood Warning");
    // CAP 1.1 date-times are xs:dateTime: a fraction (here ".000") is read.
    assert_eq!(
        info.effective.unwrap().to_string(),
        "2011-04-22T14:35:00-05:00"
    );
    assert_eq!(info.area[0].geocode[1], ValuePair::new("UGC", "MOC113"));
}

#[test]
fn cap10_document_reads_its_own_forms() {
    let parsed = parse("cap10_tornado.xml");
    assert_eq!(parsed.version, CapVersion::V1_0);
    let a = &parsed.alert;
    assert_eq!(a.password.as_deref(), Some("tornado1"));
    assert_eq!(a.scope, None);
    assert_eq!(a.sent.to_string(), "2004-05-29T18:02:00-00:00");
    let info = &a.info[0];
    assert!(info.category.is_empty());
    assert_eq!(info.certainty, Certainty::VeryLikely);
    assert_eq!(info.event_code, [ValuePair::new("SAME", "TOR")]);
    assert_eq!(
        info.parameter,
        [ValuePair::new("LAST_UPDATE", "2004-05-29T18:02:00Z")]
    );
    assert_eq!(info.area[0].geocode, [ValuePair::new("FIPS6", "040141")]);
    assert_eq!(info.resource[0].mime_type, None);

    let v12 = parsed.into_cap12();
    assert_eq!(v12.password, None);
    assert_eq!(v12.scope, Some(Scope::Public));
    assert_eq!(v12.info[0].category, [Category::Other]);
    assert_eq!(v12.info[0].certainty, Certainty::Likely);
    assert_eq!(
        v12.info[0].resource[0].mime_type.as_deref(),
        Some("application/octet-stream")
    );
}

#[test]
fn cap10_rules_differ_from_cap12() {
    let parsed = parse("cap10_tornado.xml");
    let as_12: Vec<String> = nexus_cap::validate(&parsed.alert)
        .into_iter()
        .map(|d| d.message)
        .collect();
    assert_eq!(
        as_12,
        [
            "<password> is not part of CAP 1.2 (it was removed in CAP 1.1)",
            "missing required element <scope> inside <alert>",
            "missing required element <category> inside <info>",
            "<certainty> value 'Very Likely' is not defined in CAP 1.2 (use Likely)",
            "missing required element <mimeType> inside <resource>",
        ]
    );
}

#[test]
fn latin1_document_decodes_accents() {
    let bytes = data("latin1_meteo.xml");
    assert!(
        bytes.contains(&0xE9),
        "the sample must really be ISO-8859-1"
    );
    let a = parse("latin1_meteo.xml").alert;
    let info = &a.info[0];
    assert_eq!(info.sender_name.as_deref(), Some("Météo-France"));
    assert_eq!(
        info.headline.as_deref(),
        Some("Vigilance orange orages : Hérault, Gard, Bouches-du-Rhône")
    );
    assert!(info.instruction.as_deref().unwrap().starts_with("Évitez"));
    assert_eq!(a.sent.to_string(), "2024-08-12T06:00:00+02:00");
    // Written back as UTF-8.
    assert!(nexus_cap::to_xml(&a).contains("Météo-France"));
}

#[test]
fn signature_is_kept_verbatim_and_stands_alone() {
    let a = parse("signed.xml").alert;
    assert_eq!(a.signatures.len(), 1);
    let sig = &a.signatures[0];
    // The ds prefix was declared on <alert>; the kept fragment declares it itself.
    assert!(sig.starts_with(
        "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" Id=\"cap-signature\">"
    ));
    assert!(sig.ends_with("</ds:Signature>"));
    assert!(
        sig.contains(
            "<ds:DigestValue>qGt4nG1+Zq9n9r4z6cT0pXvV8xw5m4H1b2c3d4e5f6A=</ds:DigestValue>"
        )
    );
    let xml = nexus_cap::to_xml(&a);
    assert!(xml.trim_end().ends_with("</ds:Signature>\n</alert>"));
    assert_eq!(
        a.info[0].area[0].area_desc,
        "City of Ottawa - Kanata - Orléans"
    );
}

#[test]
fn update_and_cancel_chain_by_references() {
    let original = parse("thunderstorm_polygon.xml").alert;
    let update = parse("update_references.xml").alert;
    let cancel = parse("cancel.xml").alert;
    assert!(update.supersedes(&original));
    assert!(cancel.supersedes(&original));
    assert!(cancel.supersedes(&update));
    assert!(!original.supersedes(&update));
    let refs = cancel.referenced().unwrap();
    assert_eq!(refs.len(), 2);
    assert_eq!(refs[1], update.reference());
    assert_eq!(cancel.status, Status::Actual);
    assert_eq!(cancel.info[0].response_type, [ResponseType::AllClear]);
}
