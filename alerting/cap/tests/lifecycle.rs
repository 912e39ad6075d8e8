//! Lifecycle scenarios: an alert is issued, updated, cancelled and expires; the feed lists it.

use chrono::{TimeZone, Utc};
use nexus_cap::{Feed, FeedEntry, Limits, MsgType};

fn alert(name: &str) -> nexus_cap::Alert {
    let bytes = std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR")))
        .expect("sample file");
    nexus_cap::parse(&bytes, &Limits::default())
        .expect("valid sample")
        .alert
}

#[test]
fn warning_expires_at_its_expires_time_and_not_before() {
    let warning = alert("thunderstorm_polygon.xml");
    // 16:00 PDT is 23:00 UTC.
    let before = Utc.with_ymd_and_hms(2003, 6, 17, 22, 59, 59).unwrap();
    let at = Utc.with_ymd_and_hms(2003, 6, 17, 23, 0, 0).unwrap();
    assert!(!nexus_cap::is_expired(&warning, before));
    assert!(nexus_cap::is_expired(&warning, at));
    assert_eq!(
        warning.expires_at().unwrap().to_string(),
        "2003-06-17T16:00:00-07:00"
    );
}

#[test]
fn an_alert_without_expires_never_expires_by_itself() {
    let advisory = alert("homeland_security.xml");
    assert_eq!(advisory.expires_at(), None);
    assert!(!nexus_cap::is_expired(
        &advisory,
        Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap()
    ));
}

#[test]
fn an_alert_lasts_until_its_last_info_expires() {
    let mut quake = alert("earthquake_circle.xml");
    quake.info[1].expires = Some("2003-06-13T20:56:00-07:00".parse().unwrap());
    assert_eq!(
        quake.expires_at().unwrap().to_string(),
        "2003-06-13T20:56:00-07:00"
    );
    quake.info[1].expires = None;
    assert_eq!(quake.expires_at(), None);
}

#[test]
fn cancel_names_every_message_it_supersedes() {
    let cancel = alert("cancel.xml");
    assert_eq!(cancel.msg_type, MsgType::Cancel);
    let names: Vec<String> = cancel
        .referenced()
        .unwrap()
        .iter()
        .map(|r| r.identifier.clone())
        .collect();
    assert_eq!(names, ["KSTO1055887203", "KSTO1055887204"]);
}

#[test]
fn atom_feed_lists_active_alerts_with_links_to_their_cap() {
    let warning = alert("thunderstorm_polygon.xml");
    let quake = alert("earthquake_circle.xml");
    let feed = Feed {
        id: "https://nexus.example.org/api/v1/alerts/feed.atom",
        title: "Nexus alerts & warnings",
        updated: quake.sent,
        self_link: Some("https://nexus.example.org/api/v1/alerts/feed.atom"),
        cap_elements: false,
    };
    let entries = [
        FeedEntry {
            alert: &warning,
            link: "https://nexus.example.org/api/v1/alerts/a1?format=cap&x=1",
        },
        FeedEntry {
            alert: &quake,
            link: "https://nexus.example.org/api/v1/alerts/a2",
        },
    ];
    let xml = nexus_cap::atom_feed(&feed, &entries);
    assert!(xml.starts_with(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">"
    ));
    assert!(xml.contains("<title>Nexus alerts &amp; warnings</title>"));
    assert!(xml.contains("<updated>2003-06-12T03:56:00Z</updated>"));
    assert!(xml.contains("<title>SEVERE THUNDERSTORM WARNING</title>"));
    assert!(xml.contains("href=\"https://nexus.example.org/api/v1/alerts/a1?format=cap&amp;x=1\""));
    assert!(xml.contains("<name>NATIONAL WEATHER SERVICE SACRAMENTO CA</name>"));
    assert!(xml.contains("<summary>A minor earthquake measuring 3.4"));
    assert!(!xml.contains("cap:"));
    assert_eq!(xml.matches("<entry>").count(), 2);

    // The output is well-formed XML.
    let mut reader = quick_xml::Reader::from_str(&xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}\n{xml}"),
        }
    }
}

#[test]
fn atom_feed_can_carry_cap_summary_elements() {
    let warning = alert("update_references.xml");
    let feed = Feed {
        id: "urn:nexus:feed",
        title: "t",
        updated: warning.sent,
        self_link: None,
        cap_elements: true,
    };
    let xml = nexus_cap::atom_feed(
        &feed,
        &[FeedEntry {
            alert: &warning,
            link: "https://x/1",
        }],
    );
    assert!(xml.contains("xmlns:cap=\"urn:oasis:names:tc:emergency:cap:1.2\""));
    for want in [
        "<cap:msgType>Update</cap:msgType>",
        "<cap:effective>2003-06-17T15:20:00-07:00</cap:effective>",
        "<cap:expires>2003-06-17T16:30:00-07:00</cap:expires>",
        "<cap:areaDesc>NORTHEASTERN CALAVERAS COUNTY IN CALIFORNIA</cap:areaDesc>",
    ] {
        assert!(xml.contains(want), "{want}\n{xml}");
    }
}
