//! `nexus cap validate`, the command-line contract of INTERFACES.md.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

fn data(name: &str) -> String {
    let p: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "alerting",
        "cap",
        "tests",
        "data",
        name,
    ]
    .iter()
    .collect();
    p.to_string_lossy().into_owned()
}

fn validate(files: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["cap", "validate"];
    args.extend_from_slice(files);
    let out = common::run_cli(dir.path(), &args, None);
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn valid_documents_print_ok_and_exit_zero() {
    let files = [
        data("thunderstorm_polygon.xml"),
        data("cap11_flood.xml"),
        data("latin1_meteo.xml"),
        data("signed.xml"),
    ];
    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
    let (code, out) = validate(&refs);
    assert_eq!(code, Some(0), "{out}");
    for f in &files {
        assert!(out.lines().any(|l| l == format!("{f}: ok")), "{out}");
    }
}

#[test]
fn each_problem_is_one_located_line_and_the_exit_code_is_one() {
    let good = data("earthquake_circle.xml");
    let bad = data("broken_rules.xml");
    let (code, out) = validate(&[&good, &bad]);
    assert_eq!(code, Some(1));
    assert!(out.lines().any(|l| l == format!("{good}: ok")), "{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with(&bad)).collect();
    assert!(errors.len() >= 2, "{out}");
    for line in errors {
        let rest = &line[bad.len()..];
        // FILE:LINE:COL: error: MESSAGE
        let parts: Vec<&str> = rest.splitn(4, ':').collect();
        assert!(
            parts[1].parse::<u32>().is_ok() && parts[2].parse::<u32>().is_ok(),
            "{line}"
        );
        assert!(parts[3].starts_with(" error: "), "{line}");
    }
}

#[test]
fn hostile_and_unreadable_files_are_refused_not_expanded() {
    let bomb = data("hostile_billion_laughs.xml");
    let xxe = data("hostile_xxe.xml");
    let (code, out) = validate(&[&bomb, &xxe, "/nonexistent/alert.xml"]);
    assert_eq!(code, Some(1));
    assert!(
        out.lines()
            .any(|l| l.starts_with(&bomb) && l.contains("error")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(&xxe) && l.contains("error")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("/nonexistent/alert.xml: error: cannot read")),
        "{out}"
    );
    assert!(!out.contains("lol"), "{out}");
}

#[test]
fn missing_file_argument_is_bad_usage() {
    let (code, _) = validate(&[]);
    assert_eq!(code, Some(2));
}
