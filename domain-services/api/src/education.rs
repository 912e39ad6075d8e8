//! `/api/v1/education/*`: courses, enrollments and live classes in SFU rooms.
//!
//! A teacher creates a course and schedules classes for it; each class is a `class` room.
//! `POST /education/classes/{id}/join` gives the course's teacher a room token with grants
//! `publish, subscribe, admin` and an enrolled student one with `subscribe` (students ask to
//! speak with the room protocol's raise-hand, and the teacher grants publish); anyone else
//! gets 403.
//!
//! # Assessments and certificates
//! A course's teacher adds auto-graded multiple-choice assessments; an enrolled student's
//! submission is graded at once (`assessment.submitted`) and moves their progress (percent of
//! the course's assessments passed). Passing the last one completes the course
//! (`course.completed`) and issues a certificate (`certificate.issued`): a canonical JSON
//! `payload` and its Ed25519 `signature`, verifiable offline with the key from
//! `GET /education/certificates/public-key` ([`verify_certificate`] shows how).

use crate::extract::ApiJson;
use crate::healthcare::{RoomToken, event, parse_time, rfc3339, room_token};
use crate::problem::{FieldError, Problem};
use crate::rbac::{Action, Principal};
use crate::state::ApiState;
use crate::validate::Checks;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nexus_auth::{Grant, Role, RoomKind};
use nexus_events::EventType;
use nexus_store::{
    AssessmentRecord, CertificateRecord, ClassRecord, CourseRecord, EnrollmentRecord,
    SubmissionRecord, now_ms,
};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(create_course, list_courses))
        .routes(routes!(get_course))
        .routes(routes!(enroll))
        .routes(routes!(progress))
        .routes(routes!(schedule_class))
        .routes(routes!(join_class))
        .routes(routes!(create_assessment, list_assessments))
        .routes(routes!(submit_assessment))
        .routes(routes!(my_certificates))
        .routes(routes!(public_key))
}

/// A course.
#[derive(Debug, Serialize, ToSchema)]
pub struct CourseView {
    /// Course id.
    pub id: String,
    /// The teacher's user id.
    pub teacher_id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

impl From<CourseRecord> for CourseView {
    fn from(c: CourseRecord) -> Self {
        CourseView {
            id: c.id,
            teacher_id: c.teacher_id,
            title: c.title,
            description: c.description,
            created_at: rfc3339(c.created_at),
        }
    }
}

/// A page of courses.
#[derive(Debug, Serialize, ToSchema)]
pub struct CoursePage {
    /// Courses by id.
    pub items: Vec<CourseView>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// A new course.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CourseRequest {
    /// Title, 1 to 200 characters.
    pub title: String,
    /// Description, at most 10000 characters.
    #[serde(default)]
    pub description: String,
}

/// Enrolling in a course.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The course.
    pub course_id: String,
}

/// An enrollment and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentView {
    /// Enrollment id.
    pub id: String,
    /// The course.
    pub course_id: String,
    /// The student's user id.
    pub student_id: String,
    /// Progress, percent.
    pub progress: i64,
    /// Enrollment time (RFC 3339).
    pub created_at: String,
}

impl From<EnrollmentRecord> for EnrollmentView {
    fn from(e: EnrollmentRecord) -> Self {
        EnrollmentView {
            id: e.id,
            course_id: e.course_id,
            student_id: e.student_id,
            progress: e.progress,
            created_at: rfc3339(e.created_at),
        }
    }
}

/// Scheduling a live class.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassRequest {
    /// The course.
    pub course_id: String,
    /// Start (RFC 3339).
    pub starts_at: String,
}

/// A live class.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClassView {
    /// Class id.
    pub id: String,
    /// The course.
    pub course_id: String,
    /// The teacher's user id.
    pub teacher_id: String,
    /// SFU room name (kind `class`).
    pub room: String,
    /// Start (RFC 3339).
    pub starts_at: String,
}

impl From<ClassRecord> for ClassView {
    fn from(c: ClassRecord) -> Self {
        ClassView {
            id: c.id,
            course_id: c.course_id,
            teacher_id: c.teacher_id,
            room: c.room,
            starts_at: rfc3339(c.starts_at),
        }
    }
}

fn me(who: &Principal) -> Result<&str, Problem> {
    who.user_id()
        .ok_or_else(|| Problem::forbidden("this endpoint is for users, not API keys"))
}

async fn existing_course(state: &ApiState, id: &str) -> Result<CourseRecord, Problem> {
    state
        .store
        .course(id)
        .await?
        .ok_or_else(|| Problem::not_found("no such course"))
}

/// Create a course (teachers and admins).
#[utoipa::path(post, path = "/education/courses", tag = "education", request_body = CourseRequest,
    responses((status = 201, body = CourseView), (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn create_course(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(req): ApiJson<CourseRequest>,
) -> Result<(StatusCode, Json<CourseView>), Problem> {
    who.authorize(Action::ManageCourses, None)?;
    let teacher = me(&who)?;
    Checks::new()
        .name("/title", &req.title)
        .check(
            req.description.chars().count() <= 10_000,
            "/description",
            "must be at most 10000 characters",
        )
        .finish()?;
    let c = CourseRecord {
        id: uuid::Uuid::now_v7().to_string(),
        teacher_id: teacher.to_string(),
        title: req.title.trim().to_string(),
        description: req.description,
        created_at: now_ms(),
    };
    // The catalogue has no course.created type: courses are reference data.
    state.store.create_course(&c, &[]).await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

/// Courses, by id, a page at a time (any signed-in user).
#[utoipa::path(get, path = "/education/courses", tag = "education",
    params(("limit" = Option<u32>, Query, description = "Page size, default 50, max 1000"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, body = CoursePage), (status = 400, body = Problem)),
    security(("bearer" = [])))]
async fn list_courses(
    State(state): State<ApiState>,
    who: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<CoursePage>, Problem> {
    who.authorize(Action::ReadCourses, None)?;
    let limit = match params.get("limit") {
        None => 50,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                Problem::validation(vec![FieldError {
                    pointer: "/limit".into(),
                    detail: "must be 1 to 1000".into(),
                }])
            })?,
    };
    let page = state
        .store
        .courses(params.get("cursor").map(String::as_str), limit)
        .await?;
    let next_cursor = (page.len() as i64 == limit)
        .then(|| page.last().map(|c| c.id.clone()))
        .flatten();
    Ok(Json(CoursePage {
        items: page.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// One course (any signed-in user).
#[utoipa::path(get, path = "/education/courses/{id}", tag = "education",
    params(("id" = String, Path, description = "Course id")),
    responses((status = 200, body = CourseView), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_course(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<CourseView>, Problem> {
    who.authorize(Action::ReadCourses, None)?;
    Ok(Json(existing_course(&state, &id).await?.into()))
}

/// Enroll in a course (students); enrolled already → 409.
#[utoipa::path(post, path = "/education/enrollments", tag = "education", request_body = EnrollRequest,
    responses((status = 201, body = EnrollmentView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn enroll(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollmentView>), Problem> {
    who.authorize(Action::Enroll, None)?;
    let student = me(&who)?;
    let course = existing_course(&state, &req.course_id).await?;
    let e = EnrollmentRecord {
        id: uuid::Uuid::now_v7().to_string(),
        course_id: course.id,
        student_id: student.to_string(),
        progress: 0,
        created_at: now_ms(),
    };
    let ev = event(
        EventType::EnrollmentCreated,
        &e.id,
        json!({"id": e.id, "course_id": e.course_id, "student_id": e.student_id}),
    )?;
    state.store.enroll(&e, &[ev]).await?;
    Ok((StatusCode::CREATED, Json(e.into())))
}

/// An enrollment's progress (the student, the course's teacher, or an admin).
#[utoipa::path(get, path = "/education/enrollments/{id}/progress", tag = "education",
    params(("id" = String, Path, description = "Enrollment id")),
    responses((status = 200, body = EnrollmentView), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn progress(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<EnrollmentView>, Problem> {
    let e = state
        .store
        .enrollment(&id)
        .await?
        .ok_or_else(|| Problem::not_found("no such enrollment"))?;
    let course = existing_course(&state, &e.course_id).await?;
    let mine = who.user_id() == Some(e.student_id.as_str())
        || who.user_id() == Some(course.teacher_id.as_str());
    who.authorize(Action::ReadProgress, mine.then(|| who.user_id()).flatten())?;
    Ok(Json(e.into()))
}

/// Schedule a live class for a course (its teacher, or an admin); `class.scheduled`.
#[utoipa::path(post, path = "/education/classes", tag = "education", request_body = ClassRequest,
    responses((status = 201, body = ClassView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn schedule_class(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(req): ApiJson<ClassRequest>,
) -> Result<(StatusCode, Json<ClassView>), Problem> {
    who.authorize(Action::ManageCourses, None)?;
    let mut checks = Checks::new();
    let starts_at = parse_time(&mut checks, "/starts_at", &req.starts_at);
    checks.finish()?;
    let course = existing_course(&state, &req.course_id).await?;
    let admin = who.roles().contains(&Role::Admin);
    if who.user_id() != Some(course.teacher_id.as_str()) && !admin {
        return Err(Problem::forbidden(
            "only the course's teacher schedules its classes",
        ));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let c = ClassRecord {
        room: format!("class-{id}"),
        id,
        course_id: course.id,
        teacher_id: course.teacher_id,
        starts_at: starts_at.unwrap_or_default(),
        created_at: now_ms(),
    };
    let ev = event(
        EventType::ClassScheduled,
        &c.id,
        json!({"id": c.id, "course_id": c.course_id, "room": c.room, "starts_at": rfc3339(c.starts_at)}),
    )?;
    state.store.create_class(&c, &[ev]).await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

/// A `class` room token: the course's teacher publishes (and moderates), enrolled students
/// subscribe; anyone else gets 403.
#[utoipa::path(post, path = "/education/classes/{id}/join", tag = "education",
    params(("id" = String, Path, description = "Class id")),
    responses((status = 200, body = RoomToken), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn join_class(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<RoomToken>, Problem> {
    who.authorize(Action::JoinClass, None)?;
    let user = me(&who)?;
    let class = state
        .store
        .class(&id)
        .await?
        .ok_or_else(|| Problem::not_found("no such class"))?;
    let grants = if class.teacher_id == user {
        vec![Grant::Publish, Grant::Subscribe, Grant::Admin]
    } else if state
        .store
        .enrollment_in(&class.course_id, user)
        .await?
        .is_some()
    {
        vec![Grant::Subscribe]
    } else {
        return Err(Problem::forbidden(
            "only the course's teacher and enrolled students join its classes",
        ));
    };
    room_token(&state, user, &class.room, RoomKind::Class, grants).await
}

/// One multiple-choice question.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// The question.
    pub prompt: String,
    /// The choices (2 to 10).
    pub choices: Vec<String>,
    /// Index of the right choice; never shown to students.
    #[serde(default, skip_serializing)]
    pub answer: Option<usize>,
}

/// A new assessment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssessmentRequest {
    /// Title, 1 to 200 characters.
    pub title: String,
    /// 1 to 100 questions, each with its `answer`.
    pub questions: Vec<Question>,
    /// Percent of right answers needed to pass (default 70).
    #[serde(default)]
    pub pass_score: Option<i64>,
}

/// An assessment as students see it (no answers).
#[derive(Debug, Serialize, ToSchema)]
pub struct AssessmentView {
    /// Assessment id.
    pub id: String,
    /// The course.
    pub course_id: String,
    /// Title.
    pub title: String,
    /// The questions, without their answers.
    pub questions: Vec<Question>,
    /// Percent needed to pass.
    pub pass_score: i64,
}

impl AssessmentView {
    fn of(a: AssessmentRecord) -> Self {
        let questions = serde_json::from_value(a.questions).unwrap_or_default();
        AssessmentView {
            id: a.id,
            course_id: a.course_id,
            title: a.title,
            questions,
            pass_score: a.pass_score,
        }
    }
}

/// A list of assessments.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssessmentPage {
    /// Assessments, oldest first.
    pub items: Vec<AssessmentView>,
    /// Always null.
    pub next_cursor: Option<String>,
}

/// Answers to an assessment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The chosen choice index for each question, in order.
    pub answers: Vec<usize>,
}

/// The grade of a submission.
#[derive(Debug, Serialize, ToSchema)]
pub struct Grade {
    /// Submission id.
    pub id: String,
    /// Percent of right answers.
    pub score: i64,
    /// Whether it reached the pass score.
    pub passed: bool,
    /// Course progress after it: percent of the course's assessments passed.
    pub progress: i64,
    /// Whether the course is now completed.
    pub course_completed: bool,
    /// The certificate issued by this submission, if any.
    pub certificate_id: Option<String>,
}

/// A signed certificate.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateView {
    /// Certificate id.
    pub id: String,
    /// The course.
    pub course_id: String,
    /// The student's user id.
    pub student_id: String,
    /// The signed statement: canonical JSON text, signed byte for byte.
    pub payload: String,
    /// Ed25519 signature of `payload`, base64url without padding.
    pub signature: String,
    /// Signature algorithm: `Ed25519`.
    pub algorithm: String,
    /// Issue time (RFC 3339).
    pub issued_at: String,
}

/// A list of certificates.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificatePage {
    /// The caller's certificates, oldest first.
    pub items: Vec<CertificateView>,
    /// Always null.
    pub next_cursor: Option<String>,
}

/// The certificate-verification key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublicKeyView {
    /// `Ed25519`.
    pub algorithm: String,
    /// The raw 32-byte public key, base64url without padding.
    pub public_key: String,
    /// The same key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), for `openssl pkeyutl -verify`.
    pub public_key_pem: String,
}

/// The platform's certificate-signing key pair, created and stored on first use.
async fn signing_key(state: &ApiState) -> Result<Ed25519KeyPair, Problem> {
    let rng = ring::rand::SystemRandom::new();
    let candidate = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| Problem::internal(&e))?;
    let stored = state
        .store
        .signing_key_or_insert(&URL_SAFE_NO_PAD.encode(candidate.as_ref()))
        .await?;
    let pkcs8 = URL_SAFE_NO_PAD
        .decode(stored)
        .map_err(|e| Problem::internal(&e))?;
    Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| Problem::internal(&e))
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Checks a certificate offline: `signature` (base64url) is `public_key`'s (base64url, raw
/// 32 bytes) Ed25519 signature of `payload`.
///
/// ```
/// assert!(!nexus_api::education::verify_certificate("AAAA", "{}", "AAAA"));
/// ```
pub fn verify_certificate(public_key: &str, payload: &str, signature: &str) -> bool {
    let (Ok(key), Ok(sig)) = (
        URL_SAFE_NO_PAD.decode(public_key),
        URL_SAFE_NO_PAD.decode(signature),
    ) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, key)
        .verify(payload.as_bytes(), &sig)
        .is_ok()
}

fn certificate_view(c: CertificateRecord) -> CertificateView {
    CertificateView {
        id: c.id,
        course_id: c.course_id,
        student_id: c.student_id,
        payload: c.payload,
        signature: c.signature,
        algorithm: "Ed25519".into(),
        issued_at: rfc3339(c.issued_at),
    }
}

/// Add an auto-graded assessment to a course (its teacher, or an admin).
#[utoipa::path(post, path = "/education/courses/{id}/assessments", tag = "education",
    params(("id" = String, Path, description = "Course id")), request_body = AssessmentRequest,
    responses((status = 201, body = AssessmentView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn create_assessment(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AssessmentRequest>,
) -> Result<(StatusCode, Json<AssessmentView>), Problem> {
    who.authorize(Action::ManageCourses, None)?;
    let course = existing_course(&state, &id).await?;
    if who.user_id() != Some(course.teacher_id.as_str()) && !who.roles().contains(&Role::Admin) {
        return Err(Problem::forbidden(
            "only the course's teacher adds assessments",
        ));
    }
    let pass_score = req.pass_score.unwrap_or(70);
    let mut checks = Checks::new();
    checks
        .name("/title", &req.title)
        .check(
            (1..=100).contains(&req.questions.len()),
            "/questions",
            "must hold 1 to 100 questions",
        )
        .check(
            (0..=100).contains(&pass_score),
            "/pass_score",
            "must be 0 to 100",
        );
    for (i, q) in req.questions.iter().enumerate() {
        checks
            .check(
                (1..=2000).contains(&q.prompt.chars().count()),
                &format!("/questions/{i}/prompt"),
                "must be 1 to 2000 characters",
            )
            .check(
                (2..=10).contains(&q.choices.len()),
                &format!("/questions/{i}/choices"),
                "must hold 2 to 10 choices",
            )
            .check(
                q.answer.is_some_and(|a| a < q.choices.len()),
                &format!("/questions/{i}/answer"),
                "must be the index of one of the choices",
            );
    }
    checks.finish()?;
    let questions: Vec<serde_json::Value> = req
        .questions
        .iter()
        .map(|q| json!({"prompt": q.prompt, "choices": q.choices, "answer": q.answer}))
        .collect();
    let a = AssessmentRecord {
        id: uuid::Uuid::now_v7().to_string(),
        course_id: course.id,
        title: req.title.trim().to_string(),
        questions: questions.into(),
        pass_score,
        created_at: now_ms(),
    };
    state.store.create_assessment(&a, &[]).await?;
    Ok((StatusCode::CREATED, Json(AssessmentView::of(a))))
}

/// A course's assessments, without answers (any signed-in user).
#[utoipa::path(get, path = "/education/courses/{id}/assessments", tag = "education",
    params(("id" = String, Path, description = "Course id")),
    responses((status = 200, body = AssessmentPage), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn list_assessments(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<AssessmentPage>, Problem> {
    who.authorize(Action::ReadCourses, None)?;
    existing_course(&state, &id).await?;
    let items = state.store.assessments_of(&id).await?;
    Ok(Json(AssessmentPage {
        items: items.into_iter().map(AssessmentView::of).collect(),
        next_cursor: None,
    }))
}

/// Submit answers (enrolled students): graded at once; passing the course's last assessment
/// completes the course and issues a signed certificate.
#[utoipa::path(post, path = "/education/assessments/{id}/submit", tag = "education",
    params(("id" = String, Path, description = "Assessment id")), request_body = SubmitRequest,
    responses((status = 200, body = Grade), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn submit_assessment(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SubmitRequest>,
) -> Result<Json<Grade>, Problem> {
    who.authorize(Action::Enroll, None)?;
    let student = me(&who)?.to_string();
    let a = state
        .store
        .assessment(&id)
        .await?
        .ok_or_else(|| Problem::not_found("no such assessment"))?;
    let questions: Vec<Question> =
        serde_json::from_value(a.questions.clone()).map_err(|e| Problem::internal(&e))?;
    if req.answers.len() != questions.len() {
        return Err(Problem::validation(vec![FieldError {
            pointer: "/answers".into(),
            detail: format!(
                "must hold one answer for each of the {} questions",
                questions.len()
            ),
        }]));
    }
    let right = questions
        .iter()
        .zip(&req.answers)
        .filter(|(q, given)| q.answer == Some(**given))
        .count();
    let score = i64::try_from(right * 100 / questions.len()).unwrap_or(0);
    let passed = score >= a.pass_score;
    let s = SubmissionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        assessment_id: a.id.clone(),
        student_id: student.clone(),
        answers: json!(req.answers),
        score,
        passed,
        created_at: now_ms(),
    };
    let ev = event(
        EventType::AssessmentSubmitted,
        &s.id,
        json!({"id": s.id, "assessment_id": a.id, "student_id": student, "score": score, "passed": passed}),
    )?;
    let Some(standing) = state.store.submit_assessment(&s, &[ev]).await? else {
        return Err(Problem::forbidden(
            "enroll in the course before submitting its assessments",
        ));
    };
    let mut certificate_id = None;
    if standing.completed {
        certificate_id = issue_certificate(&state, &a.course_id, &student).await?;
    }
    Ok(Json(Grade {
        id: s.id,
        score,
        passed,
        progress: standing.progress,
        course_completed: standing.completed,
        certificate_id,
    }))
}

/// Completes the course for the student and issues its certificate, unless issued already.
async fn issue_certificate(
    state: &ApiState,
    course_id: &str,
    student: &str,
) -> Result<Option<String>, Problem> {
    let course = existing_course(state, course_id).await?;
    let key = signing_key(state).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let issued_at = now_ms();
    // serde_json writes object keys in sorted order: the payload text is canonical.
    let payload = json!({
        "certificate_id": id,
        "course_id": course.id,
        "course_title": course.title,
        "issued_at": rfc3339(issued_at),
        "issuer": "nexus",
        "student_id": student,
    })
    .to_string();
    let signature = URL_SAFE_NO_PAD.encode(key.sign(payload.as_bytes()).as_ref());
    let c = CertificateRecord {
        id: id.clone(),
        course_id: course.id.clone(),
        student_id: student.to_string(),
        payload,
        signature,
        issued_at,
    };
    let events = [
        event(
            EventType::CourseCompleted,
            &course.id,
            json!({"course_id": course.id, "student_id": student}),
        )?,
        event(
            EventType::CertificateIssued,
            &id,
            json!({"id": id, "course_id": course.id, "student_id": student}),
        )?,
    ];
    match state.store.issue_certificate(&c, &events).await {
        Ok(()) => Ok(Some(id)),
        Err(nexus_store::StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The caller's certificates.
#[utoipa::path(get, path = "/education/certificates", tag = "education",
    responses((status = 200, body = CertificatePage), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn my_certificates(
    State(state): State<ApiState>,
    who: Principal,
) -> Result<Json<CertificatePage>, Problem> {
    let student = me(&who)?;
    let items = state.store.certificates_of(student).await?;
    Ok(Json(CertificatePage {
        items: items.into_iter().map(certificate_view).collect(),
        next_cursor: None,
    }))
}

/// The Ed25519 key that verifies certificates offline (public, no credentials needed).
#[utoipa::path(get, path = "/education/certificates/public-key", tag = "education",
    responses((status = 200, body = PublicKeyView)))]
async fn public_key(State(state): State<ApiState>) -> Result<Json<PublicKeyView>, Problem> {
    let key = signing_key(&state).await?;
    let raw = key.public_key().as_ref();
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(raw);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&spki);
    Ok(Json(PublicKeyView {
        algorithm: "Ed25519".into(),
        public_key: URL_SAFE_NO_PAD.encode(raw),
        public_key_pem: format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_verify_with_the_public_key_only() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_or_else(|_| Vec::new(), |d| d.as_ref().to_vec());
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| e.to_string());
        let Ok(key) = key else { panic!("key") };
        let public = URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
        let payload = r#"{"course_id":"c1","student_id":"s1"}"#;
        let sig = URL_SAFE_NO_PAD.encode(key.sign(payload.as_bytes()).as_ref());
        assert!(verify_certificate(&public, payload, &sig));
        assert!(!verify_certificate(
            &public,
            &payload.replace("s1", "s2"),
            &sig
        ));
        assert!(!verify_certificate(&public, payload, "not base64!"));
    }
}
