//! The fuzz target's check (`fuzz/src/lib.rs`), run on stable over the sample corpus, over
//! mutations of it, and over arbitrary bytes: the parser never panics, and whatever parses
//! round-trips.

use proptest::prelude::*;

#[path = "../../../fuzz/src/lib.rs"]
mod fuzz_target;

fn corpus() -> Vec<Vec<u8>> {
    let dir = format!("{}/tests/data", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/data")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "corpus went missing from {dir}");
    files
        .iter()
        .map(|p| std::fs::read(p).expect("sample file"))
        .collect()
}

#[test]
fn fuzz_target_passes_on_every_sample() {
    for doc in corpus() {
        fuzz_target::cap_parse(&doc);
    }
}

#[test]
fn fuzz_target_passes_on_every_truncation_of_a_sample() {
    let corpus = corpus();
    let doc = &corpus
        .iter()
        .find(|d| d.windows(8).any(|w| w == b"<polygon"))
        .unwrap();
    for end in 0..doc.len() {
        fuzz_target::cap_parse(&doc[..end]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        fuzz_target::cap_parse(&bytes);
    }

    #[test]
    fn arbitrary_text_inside_an_alert_never_panics(text in "\\PC{0,200}") {
        let doc = format!(
            "<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\"><identifier>{text}</identifier>{text}</alert>"
        );
        fuzz_target::cap_parse(doc.as_bytes());
    }

    #[test]
    fn mutated_samples_never_panic(
        pick in 0usize..64,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let corpus = corpus();
        let mut doc = corpus[pick % corpus.len()].clone();
        for (at, byte) in edits {
            if doc.is_empty() {
                break;
            }
            let i = at.index(doc.len());
            match byte % 3 {
                0 => doc[i] = byte,
                1 => { doc.remove(i); }
                _ => doc.insert(i, b"<>&;=\"/ ,-:T0"[usize::from(byte) % 13]),
            }
        }
        fuzz_target::cap_parse(&doc);
    }
}

/// A feed of every sample, as our own feed writes it: the `atom_read` target's seed.
fn feed_of_samples() -> Vec<u8> {
    let limits = nexus_cap::Limits::default();
    let alerts: Vec<nexus_cap::Alert> = corpus()
        .iter()
        .filter_map(|d| nexus_cap::parse(d, &limits).ok())
        .map(|p| p.alert)
        .collect();
    let links: Vec<String> = (0..alerts.len()).map(|i| format!("/cap/{i}.xml")).collect();
    let entries: Vec<nexus_cap::FeedEntry<'_>> = alerts
        .iter()
        .zip(&links)
        .map(|(alert, link)| nexus_cap::FeedEntry { alert, link })
        .collect();
    let feed = nexus_cap::Feed {
        id: "urn:feed",
        title: "samples",
        updated: alerts[0].sent,
        self_link: Some("/feed.atom"),
        cap_elements: true,
    };
    nexus_cap::atom_feed(&feed, &entries).into_bytes()
}

#[test]
fn atom_read_target_passes_on_every_truncation_of_a_feed() {
    let feed = feed_of_samples();
    let entries = nexus_cap::read_atom(&feed, &nexus_cap::Limits::default()).unwrap();
    assert!(entries.len() >= 10, "{}", entries.len());
    for end in 0..feed.len() {
        fuzz_target::atom_read(&feed[..end]);
    }
}

proptest! {
    #[test]
    fn atom_read_target_never_panics_on_mutated_feeds(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut doc = feed_of_samples();
        for (at, byte) in edits {
            let i = at.index(doc.len());
            match byte % 3 {
                0 => doc[i] = byte,
                1 => { doc.remove(i); }
                _ => doc.insert(i, b"<>&;=\"/ ,-:T0"[usize::from(byte) % 13]),
            }
        }
        fuzz_target::atom_read(&doc);
    }
}
