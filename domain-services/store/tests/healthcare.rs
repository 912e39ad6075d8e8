//! Healthcare and education in the store, on SQLite and PostgreSQL: no double booking (also
//! under many concurrent bookings), cancel and reschedule free slots, the provider's waiting
//! queue order, consultations completing appointments, FHIR record versions, epidemic
//! detection, courses, enrollments and classes.

#![allow(clippy::unwrap_used)]

use nexus_store::testing::{fresh_postgres_store, sqlite_store};
use nexus_store::{
    AppointmentRecord, AppointmentStatus, Backend, CaseReportRecord, ClassRecord,
    ConsultationRecord, CourseRecord, EnrollmentRecord, FhirRecord, NewEvent, ProviderQuery,
    ProviderRecord, SlotRecord, Store, StoreError,
};

/// Runs `scenario` on a fresh SQLite store and, when configured, a fresh PostgreSQL store.
macro_rules! on_every_backend {
    ($name:ident, $scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let sqlite = sqlite_store(dir.path()).await;
            assert_eq!(sqlite.backend(), Backend::Sqlite);
            $scenario(sqlite).await;
            if let Some(pg) = fresh_postgres_store().await {
                assert_eq!(pg.backend(), Backend::Postgres);
                $scenario(pg).await;
            }
        }
    };
}

const HOUR: i64 = 3_600_000;

async fn provider(store: &Store, id: &str, specialty: &str, languages: &[&str]) {
    store
        .create_provider(
            &ProviderRecord {
                id: id.into(),
                user_id: format!("user-{id}"),
                specialty: specialty.into(),
                languages: languages.iter().map(|l| l.to_string()).collect(),
                bio: None,
                created_at: 1,
            },
            &[],
        )
        .await
        .unwrap();
}

fn slot(id: &str, provider: &str, start: i64) -> SlotRecord {
    SlotRecord {
        id: id.into(),
        provider_id: provider.into(),
        start_at: start,
        end_at: start + HOUR / 2,
        appointment_id: None,
        created_at: 1,
    }
}

fn appointment(id: &str, s: &SlotRecord, patient: &str, priority: i64) -> AppointmentRecord {
    AppointmentRecord {
        id: id.into(),
        slot_id: s.id.clone(),
        provider_id: s.provider_id.clone(),
        patient_id: patient.into(),
        reason: "cough".into(),
        status: AppointmentStatus::Booked,
        triage_priority: priority,
        start_at: s.start_at,
        end_at: s.end_at,
        created_at: 2,
        updated_at: 2,
    }
}

fn created(id: &str) -> NewEvent {
    NewEvent::new("nexus.healthcare", id, "appointment.created", "{}")
}

async fn a_slot_is_booked_once_even_under_concurrency(store: Store) {
    provider(&store, "p1", "pediatrics", &["en", "fr"]).await;
    let s1 = slot("s1", "p1", 10 * HOUR);
    store.add_slot(&s1, &[]).await.unwrap();
    let overlap = store
        .add_slot(&slot("s1b", "p1", 10 * HOUR + 60_000), &[])
        .await;
    assert!(
        matches!(overlap, Err(StoreError::Conflict(_))),
        "{overlap:?}"
    );

    store
        .book_appointment(&appointment("a1", &s1, "pat1", 3), &[created("a1")])
        .await
        .unwrap();
    let again = store
        .book_appointment(&appointment("a2", &s1, "pat2", 3), &[created("a2")])
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert!(store.appointment("a2").await.unwrap().is_none());
    assert!(store.events_for("a2").await.unwrap().is_empty());
    assert_eq!(
        store
            .slot("s1")
            .await
            .unwrap()
            .unwrap()
            .appointment_id
            .as_deref(),
        Some("a1")
    );

    // Many patients at once on one slot: exactly one wins, every other gets a conflict.
    let s2 = slot("s2", "p1", 20 * HOUR);
    store.add_slot(&s2, &[]).await.unwrap();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let store = store.clone();
            let a = appointment(&format!("c{i}"), &s2, &format!("pat{i}"), 3);
            tokio::spawn(async move { store.book_appointment(&a, &[created(&a.id)]).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 1);

    // The search sees languages, specialty and free slots.
    provider(&store, "p2", "cardiology", &["de"]).await;
    let q = |specialty: Option<&str>, language: Option<&str>, from: Option<i64>| ProviderQuery {
        specialty: specialty.map(str::to_string),
        language: language.map(str::to_string),
        available_from: from,
        after: None,
        limit: 10,
    };
    let ids = |v: Vec<ProviderRecord>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.search_providers(&q(None, None, None)).await.unwrap()),
        ["p1", "p2"]
    );
    assert_eq!(
        ids(store
            .search_providers(&q(None, Some("fr"), None))
            .await
            .unwrap()),
        ["p1"]
    );
    assert_eq!(
        ids(store
            .search_providers(&q(Some("cardiology"), None, None))
            .await
            .unwrap()),
        ["p2"]
    );
    // Both of p1's slots are taken: nobody is available.
    assert!(
        store
            .search_providers(&q(None, None, Some(0)))
            .await
            .unwrap()
            .is_empty()
    );
}
on_every_backend!(
    a_slot_is_booked_once_even_under_concurrency_on_every_backend,
    a_slot_is_booked_once_even_under_concurrency
);

/// The overlap check probes only the last slot starting before the new one ends; every way of
/// overlapping is still refused, and back-to-back slots on either side are accepted.
async fn overlapping_slots_are_refused_in_every_arrangement(store: Store) {
    provider(&store, "p1", "general_practice", &["en"]).await;
    let at = |id: &str, start: i64, end: i64| SlotRecord {
        end_at: end,
        ..slot(id, "p1", start)
    };
    for s in [at("a", 10 * HOUR, 11 * HOUR), at("b", 12 * HOUR, 13 * HOUR)] {
        store.add_slot(&s, &[]).await.unwrap();
    }
    let refused = [
        ("tail of a", 10 * HOUR + HOUR / 2, 11 * HOUR + HOUR / 2),
        ("head of a", 9 * HOUR, 10 * HOUR + 1),
        ("inside a", 10 * HOUR + 1, 11 * HOUR - 1),
        ("around a", 9 * HOUR, 11 * HOUR + 1),
        ("around a and b", 9 * HOUR, 14 * HOUR),
        ("a exactly", 10 * HOUR, 11 * HOUR),
        ("from inside a into the gap", 10 * HOUR + 1, 11 * HOUR + 1),
    ];
    for (what, start, end) in refused {
        let r = store.add_slot(&at(what, start, end), &[]).await;
        assert!(matches!(r, Err(StoreError::Conflict(_))), "{what}: {r:?}");
    }
    let accepted = [
        ("before a", 9 * HOUR, 10 * HOUR),
        ("the gap", 11 * HOUR, 12 * HOUR),
        ("after b", 13 * HOUR, 14 * HOUR),
    ];
    for (what, start, end) in accepted {
        store
            .add_slot(&at(what, start, end), &[])
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}
on_every_backend!(
    overlapping_slots_are_refused_in_every_arrangement_on_every_backend,
    overlapping_slots_are_refused_in_every_arrangement
);

async fn cancel_and_reschedule_free_slots(store: Store) {
    provider(&store, "p1", "general_practice", &["en"]).await;
    let (s1, s2) = (slot("s1", "p1", HOUR), slot("s2", "p1", 2 * HOUR));
    store.add_slot(&s1, &[]).await.unwrap();
    store.add_slot(&s2, &[]).await.unwrap();
    store
        .book_appointment(&appointment("a1", &s1, "pat1", 3), &[])
        .await
        .unwrap();
    let moved = store
        .reschedule_appointment("a1", &s2, 5, &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((moved.slot_id.as_str(), moved.start_at), ("s2", 2 * HOUR));
    assert!(
        store
            .slot("s1")
            .await
            .unwrap()
            .unwrap()
            .appointment_id
            .is_none()
    );
    // The freed slot is bookable again; rescheduling onto a taken slot conflicts.
    store
        .book_appointment(&appointment("a2", &s1, "pat2", 3), &[])
        .await
        .unwrap();
    let clash = store.reschedule_appointment("a1", &s1, 6, &[]).await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");

    let cancelled = store
        .cancel_appointment("a1", 7, &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.status, AppointmentStatus::Cancelled);
    assert!(
        store
            .cancel_appointment("a1", 8, &[])
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .slot("s2")
            .await
            .unwrap()
            .unwrap()
            .appointment_id
            .is_none()
    );
    store
        .book_appointment(&appointment("a3", &s2, "pat3", 3), &[])
        .await
        .unwrap();
    assert_eq!(store.appointments_of("pat1", 100).await.unwrap().len(), 1);
    assert_eq!(
        store.appointments_of("user-p1", 100).await.unwrap().len(),
        3
    );
}
on_every_backend!(
    cancel_and_reschedule_free_slots_on_every_backend,
    cancel_and_reschedule_free_slots
);

async fn the_queue_orders_by_triage_then_time_and_end_completes(store: Store) {
    provider(&store, "p1", "general_practice", &["en"]).await;
    let mut consultations = Vec::new();
    for (i, (start, priority)) in [(3, 3), (1, 3), (2, 1), (4, 5)].into_iter().enumerate() {
        let s = slot(&format!("s{i}"), "p1", start * HOUR);
        store.add_slot(&s, &[]).await.unwrap();
        let a = appointment(&format!("a{i}"), &s, &format!("pat{i}"), priority);
        store.book_appointment(&a, &[]).await.unwrap();
        let c = ConsultationRecord {
            id: format!("c{i}"),
            appointment_id: a.id.clone(),
            room: format!("consult-{i}"),
            waiting_since: None,
            admitted_at: None,
            created_at: 3,
            ended_at: None,
        };
        store.create_consultation(&c, &[]).await.unwrap();
        consultations.push(c);
    }
    let dup = ConsultationRecord {
        id: "other".into(),
        ..consultations[0].clone()
    };
    assert!(matches!(
        store.create_consultation(&dup, &[]).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.provider_queue("user-p1").await.unwrap().is_empty());
    for c in &consultations {
        store.consultation_waiting(&c.id, 10).await.unwrap();
    }
    store.consultation_admitted("c3", 11, &[]).await.unwrap();
    let order: Vec<String> = store
        .provider_queue("user-p1")
        .await
        .unwrap()
        .into_iter()
        .map(|(c, _)| c.id)
        .collect();
    // Priority 1 first; then the two priority-3 patients by appointment time; c3 was admitted.
    assert_eq!(order, ["c2", "c1", "c0"]);
    assert!(
        store
            .provider_queue("someone-else")
            .await
            .unwrap()
            .is_empty()
    );

    assert!(store.treats("user-p1", "pat0").await.unwrap());
    assert!(!store.treats("user-p1", "stranger").await.unwrap());
    let ended = NewEvent::new("nexus.healthcare", "a0", "appointment.completed", "{}");
    assert!(
        store
            .end_consultation("c0", 20, &[], &[ended])
            .await
            .unwrap()
    );
    assert!(!store.end_consultation("c0", 21, &[], &[]).await.unwrap());
    let a0 = store.appointment("a0").await.unwrap().unwrap();
    assert_eq!(a0.status, AppointmentStatus::Completed);
    assert_eq!(
        store.consultation("c0").await.unwrap().unwrap().ended_at,
        Some(20)
    );
    assert_eq!(store.events_for("a0").await.unwrap().len(), 1);
    // A completed appointment still makes its provider a treating provider.
    assert!(store.treats("user-p1", "pat0").await.unwrap());
    assert_eq!(store.provider_queue("user-p1").await.unwrap().len(), 2);
}
on_every_backend!(
    the_queue_orders_by_triage_then_time_and_end_completes_on_every_backend,
    the_queue_orders_by_triage_then_time_and_end_completes
);

async fn records_are_versioned_per_patient(store: Store) {
    let obs = FhirRecord {
        id: "o1".into(),
        patient_id: "pat1".into(),
        resource_type: "Observation".into(),
        resource: serde_json::json!({"resourceType": "Observation", "status": "final"}),
        version: 0,
        author_id: Some("doc".into()),
        created_at: 5,
        updated_at: 5,
    };
    let v1 = store.put_record(&obs, &[]).await.unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.resource["id"], "o1");
    assert_eq!(v1.resource["meta"]["versionId"], "1");
    let mut changed = obs.clone();
    changed.resource["status"] = "amended".into();
    changed.updated_at = 9;
    let v2 = store
        .put_record_audited(&changed, &[], Some("doc"))
        .await
        .unwrap();
    assert_eq!((v2.version, v2.created_at), (2, 5));
    let stolen = FhirRecord {
        patient_id: "pat2".into(),
        ..obs.clone()
    };
    assert!(matches!(
        store.put_record_audited(&stolen, &[], Some("doc")).await,
        Err(StoreError::Conflict(_))
    ));
    // The audited write left its entry; the refused one left none (its transaction rolled
    // back).
    let audit = store.audit_for("pat1").await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (audit[0].1.as_deref(), audit[0].2.as_str()),
        (Some("doc"), "record.write")
    );
    assert!(store.audit_for("pat2").await.unwrap().is_empty());
    let all = store.records_of("pat1", None, 10).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].resource["status"], "amended");
    assert!(
        store
            .records_of("pat1", Some("Condition"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.records_of("pat2", None, 10).await.unwrap().is_empty());
}
on_every_backend!(
    records_are_versioned_per_patient_on_every_backend,
    records_are_versioned_per_patient
);

async fn cases_over_the_threshold_detect_one_epidemic(store: Store) {
    let case = |i: i64, region: &str, onset: i64| CaseReportRecord {
        id: format!("r{i}-{region}"),
        syndrome: "cholera".into(),
        region: region.into(),
        lat: 1.0,
        lon: 2.0,
        onset_at: onset,
        reported_by: None,
        created_at: 1_000 * HOUR,
    };
    let detect = |n: i64| {
        vec![NewEvent::new(
            "nexus.healthcare",
            "cholera",
            "epidemic.detected",
            format!("{{\"cases\":{n}}}"),
        )]
    };
    let mut detected = Vec::new();
    for i in 0..5 {
        let out = store
            .report_case(&case(i, "north", 100 * HOUR + i), 24 * HOUR, 3, detect)
            .await
            .unwrap();
        assert_eq!(out.cases_in_window, i + 1);
        detected.push(out.epidemic_detected);
    }
    assert_eq!(detected, [false, false, true, false, false]);
    // Another region, and cases outside the window, count separately.
    let out = store
        .report_case(&case(0, "south", 100 * HOUR), 24 * HOUR, 3, detect)
        .await
        .unwrap();
    assert_eq!((out.cases_in_window, out.epidemic_detected), (1, false));
    let out = store
        .report_case(&case(9, "north", 200 * HOUR), 24 * HOUR, 3, detect)
        .await
        .unwrap();
    assert_eq!(out.cases_in_window, 1);
    assert_eq!(store.events_for("cholera").await.unwrap().len(), 1);
}
on_every_backend!(
    cases_over_the_threshold_detect_one_epidemic_on_every_backend,
    cases_over_the_threshold_detect_one_epidemic
);

async fn courses_enrollments_and_classes(store: Store) {
    let course = CourseRecord {
        id: "k1".into(),
        teacher_id: "t1".into(),
        title: "First aid".into(),
        description: "Basics".into(),
        created_at: 1,
    };
    store.create_course(&course, &[]).await.unwrap();
    assert_eq!(store.course("k1").await.unwrap().unwrap(), course);
    assert_eq!(store.courses(None, 10).await.unwrap(), vec![course.clone()]);
    assert!(store.courses(Some("k1"), 10).await.unwrap().is_empty());
    let e = EnrollmentRecord {
        id: "e1".into(),
        course_id: "k1".into(),
        student_id: "s1".into(),
        progress: 0,
        created_at: 2,
    };
    let ev = NewEvent::new("nexus.education", "e1", "enrollment.created", "{}");
    store.enroll(&e, &[ev]).await.unwrap();
    let again = store
        .enroll(
            &EnrollmentRecord {
                id: "e2".into(),
                ..e.clone()
            },
            &[],
        )
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(store.enrollment_in("k1", "s1").await.unwrap().unwrap(), e);
    assert_eq!(store.enrollment("e1").await.unwrap().unwrap(), e);
    assert!(store.enrollment_in("k1", "s2").await.unwrap().is_none());
    let class = ClassRecord {
        id: "c1".into(),
        course_id: "k1".into(),
        teacher_id: "t1".into(),
        room: "class-c1".into(),
        starts_at: 50,
        created_at: 3,
    };
    store.create_class(&class, &[]).await.unwrap();
    assert_eq!(store.class("c1").await.unwrap().unwrap(), class);
    assert_eq!(store.events_for("e1").await.unwrap().len(), 1);
}
on_every_backend!(
    courses_enrollments_and_classes_on_every_backend,
    courses_enrollments_and_classes
);

async fn reminders_are_claimed_once_and_erasure_removes_health_data(store: Store) {
    provider(&store, "p1", "general_practice", &["en"]).await;
    let (soon, later) = (slot("s1", "p1", 10 * HOUR), slot("s2", "p1", 40 * HOUR));
    store.add_slot(&soon, &[]).await.unwrap();
    store.add_slot(&later, &[]).await.unwrap();
    store
        .book_appointment(&appointment("a1", &soon, "pat1", 3), &[])
        .await
        .unwrap();
    store
        .book_appointment(&appointment("a2", &later, "pat1", 3), &[])
        .await
        .unwrap();
    // At 0 h with a 24 h lead only a1 is due; a second pass (another node) finds nothing.
    let ids = |v: Vec<AppointmentRecord>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    let (a, b) = tokio::join!(
        store.claim_due_reminders(0, 24 * HOUR, 10),
        store.claim_due_reminders(0, 24 * HOUR, 10)
    );
    let mut both = ids(a.unwrap());
    both.extend(ids(b.unwrap()));
    assert_eq!(both, ["a1"]);
    store.release_reminder("a1").await.unwrap();
    assert_eq!(
        ids(store.claim_due_reminders(1, 24 * HOUR, 10).await.unwrap()),
        ["a1"]
    );
    assert_eq!(
        ids(store
            .claim_due_reminders(20 * HOUR, 24 * HOUR, 10)
            .await
            .unwrap()),
        ["a2"]
    );

    // Erasing the patient's account removes their record and appointment reasons.
    let user = nexus_store::UserRecord::new("pat1", "p@x.org", "P", "$h", vec![], 1);
    store.create_user(&user, &[]).await.unwrap();
    let rec = FhirRecord {
        id: "o1".into(),
        patient_id: "pat1".into(),
        resource_type: "Observation".into(),
        resource: serde_json::json!({"resourceType": "Observation"}),
        version: 0,
        author_id: None,
        created_at: 1,
        updated_at: 1,
    };
    store.put_record(&rec, &[]).await.unwrap();
    assert!(store.erase_user("pat1", &[]).await.unwrap());
    assert!(store.records_of("pat1", None, 10).await.unwrap().is_empty());
    assert_eq!(store.appointment("a1").await.unwrap().unwrap().reason, "");
}
on_every_backend!(
    reminders_are_claimed_once_and_erasure_removes_health_data_on_every_backend,
    reminders_are_claimed_once_and_erasure_removes_health_data
);

async fn assessments_move_progress_and_certify_once(store: Store) {
    use nexus_store::{AssessmentRecord, CertificateRecord, SubmissionRecord};
    let course = CourseRecord {
        id: "k1".into(),
        teacher_id: "t1".into(),
        title: "Triage".into(),
        description: String::new(),
        created_at: 1,
    };
    store.create_course(&course, &[]).await.unwrap();
    for id in ["q1", "q2"] {
        let a = AssessmentRecord {
            id: id.into(),
            course_id: "k1".into(),
            title: id.into(),
            questions: serde_json::json!([{"prompt": "?", "choices": ["a", "b"], "answer": 0}]),
            pass_score: 100,
            created_at: 2,
        };
        store.create_assessment(&a, &[]).await.unwrap();
    }
    assert_eq!(store.assessments_of("k1").await.unwrap().len(), 2);
    let sub = |id: &str, assessment: &str, student: &str, passed: bool| SubmissionRecord {
        id: id.into(),
        assessment_id: assessment.into(),
        student_id: student.into(),
        answers: serde_json::json!([0]),
        score: if passed { 100 } else { 0 },
        passed,
        created_at: 3,
    };
    // Not enrolled: nothing is recorded.
    assert!(
        store
            .submit_assessment(&sub("x", "q1", "s1", true), &[])
            .await
            .unwrap()
            .is_none()
    );
    let e = EnrollmentRecord {
        id: "e1".into(),
        course_id: "k1".into(),
        student_id: "s1".into(),
        progress: 0,
        created_at: 2,
    };
    store.enroll(&e, &[]).await.unwrap();
    let progress = |v: Option<nexus_store::Standing>| v.map(|s| (s.progress, s.completed));
    let ev = NewEvent::new("nexus.education", "x1", "assessment.submitted", "{}");
    assert_eq!(
        progress(
            store
                .submit_assessment(&sub("x1", "q1", "s1", false), &[ev])
                .await
                .unwrap()
        ),
        Some((0, false))
    );
    assert_eq!(
        progress(
            store
                .submit_assessment(&sub("x2", "q1", "s1", true), &[])
                .await
                .unwrap()
        ),
        Some((50, false))
    );
    assert_eq!(
        progress(
            store
                .submit_assessment(&sub("x3", "q1", "s1", true), &[])
                .await
                .unwrap()
        ),
        Some((50, false))
    );
    assert_eq!(
        progress(
            store
                .submit_assessment(&sub("x4", "q2", "s1", true), &[])
                .await
                .unwrap()
        ),
        Some((100, true))
    );
    assert_eq!(store.enrollment("e1").await.unwrap().unwrap().progress, 100);
    assert_eq!(store.events_for("x1").await.unwrap().len(), 1);

    let cert = CertificateRecord {
        id: "c1".into(),
        course_id: "k1".into(),
        student_id: "s1".into(),
        payload: "{}".into(),
        signature: "sig".into(),
        issued_at: 4,
    };
    store.issue_certificate(&cert, &[]).await.unwrap();
    let again = store
        .issue_certificate(
            &CertificateRecord {
                id: "c2".into(),
                ..cert.clone()
            },
            &[],
        )
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(store.certificates_of("s1").await.unwrap(), vec![cert]);

    // The first signing key stored wins; later candidates get it back.
    assert_eq!(store.signing_key_or_insert("k-a").await.unwrap(), "k-a");
    assert_eq!(store.signing_key_or_insert("k-b").await.unwrap(), "k-a");
}
on_every_backend!(
    assessments_move_progress_and_certify_once_on_every_backend,
    assessments_move_progress_and_certify_once
);
