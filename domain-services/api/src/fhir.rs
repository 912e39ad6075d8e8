//! `/api/v1/healthcare/records/{patient_id}`: the patient's health record as FHIR R4 JSON.
//!
//! Stored resource types: `Patient`, `Condition`, `AllergyIntolerance`,
//! `MedicationStatement`, `Observation` and `Encounter`, each checked for its required
//! elements (cardinality 1..1 in R4) and for the required-binding value sets of its status
//! codes; a reference to the subject must name the record's patient (`Patient/{id}`).
//!
//! As FHIR servers do, these endpoints answer errors with an `OperationOutcome`
//! (`application/fhir+json`), not problem+json — authentication failures included.
//!
//! Access: the patient, their treating providers (a provider with a booked or completed
//! appointment with them) and admins read; treating providers and admins write (and the
//! patient their own `Patient` resource). Every read and write — and every refused
//! attempt — goes to the audit log; every write records `record.updated`.

use crate::healthcare::event;
use crate::problem::Problem;
use crate::rbac::{Action, Principal};
use crate::state::ApiState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nexus_auth::Role;
use nexus_events::EventType;
use nexus_store::{AppointmentRecord, ConsultationRecord, FhirRecord, StoreError, now_ms};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The media type of FHIR JSON.
pub const FHIR_JSON: &str = "application/fhir+json";

/// The resource types the record stores.
pub const RESOURCE_TYPES: [&str; 6] = [
    "Patient",
    "Condition",
    "AllergyIntolerance",
    "MedicationStatement",
    "Observation",
    "Encounter",
];

/// Routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(read_record, write_record))
}

/// One issue of an [`OperationOutcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Issue {
    /// `fatal`, `error`, `warning` or `information`.
    pub severity: String,
    /// FHIR issue type: `required`, `value`, `invalid`, `structure`, `not-supported`,
    /// `login`, `forbidden`, `not-found`, `conflict`, `exception`.
    pub code: String,
    /// What is wrong.
    pub diagnostics: String,
    /// FHIRPath of the element at fault, e.g. `Observation.status`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expression: Vec<String>,
}

/// A FHIR `OperationOutcome`: the error body of the FHIR endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OperationOutcome {
    /// Always `OperationOutcome`.
    #[serde(rename = "resourceType")]
    pub resource_type: String,
    /// The issues.
    pub issue: Vec<Issue>,
    /// HTTP status to answer with.
    #[serde(skip)]
    pub status: u16,
}

impl OperationOutcome {
    /// An outcome with one error issue.
    pub fn error(status: StatusCode, code: &str, diagnostics: impl Into<String>) -> Self {
        OperationOutcome {
            resource_type: "OperationOutcome".into(),
            issue: vec![Issue {
                severity: "error".into(),
                code: code.into(),
                diagnostics: diagnostics.into(),
                expression: Vec::new(),
            }],
            status: status.as_u16(),
        }
    }

    /// A 400 outcome listing validation issues.
    pub fn invalid(issue: Vec<Issue>) -> Self {
        OperationOutcome {
            resource_type: "OperationOutcome".into(),
            issue,
            status: 400,
        }
    }
}

impl From<Problem> for OperationOutcome {
    fn from(p: Problem) -> Self {
        let code = match p.status {
            400 => "invalid",
            401 => "login",
            403 => "forbidden",
            404 => "not-found",
            409 => "conflict",
            413 => "too-costly",
            415 => "not-supported",
            429 => "throttled",
            _ => "exception",
        };
        let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        OperationOutcome::error(status, code, p.detail.unwrap_or(p.title))
    }
}

impl From<StoreError> for OperationOutcome {
    fn from(e: StoreError) -> Self {
        Problem::from(e).into()
    }
}

impl IntoResponse for OperationOutcome {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        fhir_response(status, &self)
    }
}

fn fhir_response(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (status, bytes).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// Who may do what to a record.
async fn access(
    state: &ApiState,
    who: &Principal,
    patient_id: &str,
    action: Action,
) -> Result<(), OperationOutcome> {
    if who.authorize(action, Some(patient_id)).is_ok() {
        return Ok(());
    }
    if let Some(me) = who.user_id()
        && who.roles().contains(&Role::Provider)
        && state.store.treats(me, patient_id).await?
    {
        return Ok(());
    }
    let verb = if action == Action::ReadRecord {
        "read"
    } else {
        "write"
    };
    state
        .store
        .audit(
            who.user_id(),
            &format!("record.{verb}.denied"),
            Some(patient_id),
            &json!({}),
        )
        .await?;
    Err(OperationOutcome::error(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("only the patient, their treating providers and admins may {verb} this record"),
    ))
}

/// Read a patient's record: a FHIR `Bundle` (type `searchset`) of their resources, oldest
/// first; `_type` narrows to one resource type. The patient, their treating providers and
/// admins only; audited.
#[utoipa::path(get, path = "/healthcare/records/{patient_id}", tag = "healthcare",
    params(("patient_id" = String, Path, description = "The patient's user id"),
        ("_type" = Option<String>, Query, description = "One resource type")),
    responses((status = 200, description = "FHIR Bundle", content_type = "application/fhir+json", body = Object),
        (status = 401, body = OperationOutcome, content_type = "application/fhir+json"),
        (status = 403, body = OperationOutcome, content_type = "application/fhir+json")),
    security(("bearer" = [])))]
async fn read_record(
    State(state): State<ApiState>,
    who: Result<Principal, Problem>,
    Path(patient_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, OperationOutcome> {
    let who = who?;
    access(&state, &who, &patient_id, Action::ReadRecord).await?;
    let kind = params.get("_type").map(String::as_str);
    if let Some(k) = kind
        && !RESOURCE_TYPES.contains(&k)
    {
        return Err(OperationOutcome::error(
            StatusCode::BAD_REQUEST,
            "not-supported",
            format!("_type must be one of {}", RESOURCE_TYPES.join(", ")),
        ));
    }
    let records = state.store.records_of(&patient_id, kind, 10_000).await?;
    state
        .store
        .audit(
            who.user_id(),
            "record.read",
            Some(&patient_id),
            &json!({"resources": records.len(), "_type": kind}),
        )
        .await?;
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": records.len(),
        "entry": records.into_iter().map(|r| json!({
            "fullUrl": format!("{}/{}", r.resource_type, r.id),
            "resource": r.resource,
        })).collect::<Vec<_>>(),
    });
    Ok(fhir_response(StatusCode::OK, &bundle))
}

/// Write one resource to a patient's record: `201` with the stored resource (`id` and
/// `meta.versionId` set), or `200` when it updated a resource with the same `id`. Validation
/// errors are a 400 `OperationOutcome` naming each element. Treating providers and admins
/// (and the patient, for their own `Patient` resource); audited; `record.updated`.
#[utoipa::path(post, path = "/healthcare/records/{patient_id}", tag = "healthcare",
    params(("patient_id" = String, Path, description = "The patient's user id")),
    request_body(content = Object, description = "A FHIR R4 resource", content_type = "application/fhir+json"),
    responses((status = 201, description = "The stored resource", content_type = "application/fhir+json", body = Object),
        (status = 200, description = "The updated resource", content_type = "application/fhir+json", body = Object),
        (status = 400, body = OperationOutcome, content_type = "application/fhir+json"),
        (status = 403, body = OperationOutcome, content_type = "application/fhir+json"),
        (status = 409, body = OperationOutcome, content_type = "application/fhir+json")),
    security(("bearer" = [])))]
async fn write_record(
    State(state): State<ApiState>,
    who: Result<Principal, Problem>,
    Path(patient_id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, OperationOutcome> {
    let who = who?;
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || m == FHIR_JSON
        });
    if !json_body {
        return Err(OperationOutcome::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "send the resource as application/fhir+json",
        ));
    }
    let body =
        body.map_err(|r| OperationOutcome::error(r.status(), "too-costly", r.body_text()))?;
    let resource: Value = serde_json::from_slice(&body).map_err(|e| {
        OperationOutcome::error(
            StatusCode::BAD_REQUEST,
            "structure",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let own_patient = resource_type == "Patient" && who.user_id() == Some(patient_id.as_str());
    if !own_patient {
        access(&state, &who, &patient_id, Action::WriteRecord).await?;
    }
    let issues = validate(&resource, &patient_id);
    if !issues.is_empty() {
        return Err(OperationOutcome::invalid(issues));
    }
    let id = if resource_type == "Patient" {
        patient_id.clone()
    } else {
        resource
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
    };
    let now = now_ms();
    let rec = FhirRecord {
        id,
        patient_id: patient_id.clone(),
        resource_type: resource_type.clone(),
        resource,
        version: 0,
        author_id: who.user_id().map(str::to_string),
        created_at: now,
        updated_at: now,
    };
    let ev = event(
        EventType::RecordUpdated,
        &patient_id,
        json!({"patient_id": patient_id, "resource_type": resource_type, "id": rec.id}),
    )?;
    let stored = state
        .store
        .put_record_audited(&rec, &[ev], who.user_id())
        .await?;
    let status = if stored.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = fhir_response(status, &stored.resource);
    if let Ok(etag) = HeaderValue::from_str(&format!("W/\"{}\"", stored.version)) {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    Ok(resp)
}

const CONDITION_CLINICAL: &[&str] = &[
    "active",
    "recurrence",
    "relapse",
    "inactive",
    "remission",
    "resolved",
];
const CONDITION_VERIFICATION: &[&str] = &[
    "unconfirmed",
    "provisional",
    "differential",
    "confirmed",
    "refuted",
    "entered-in-error",
];
const ALLERGY_CLINICAL: &[&str] = &["active", "inactive", "resolved"];
const ALLERGY_VERIFICATION: &[&str] = &["unconfirmed", "confirmed", "refuted", "entered-in-error"];
const MEDICATION_STATUS: &[&str] = &[
    "active",
    "completed",
    "entered-in-error",
    "intended",
    "stopped",
    "on-hold",
    "unknown",
    "not-taken",
];
const OBSERVATION_STATUS: &[&str] = &[
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
];
const ENCOUNTER_STATUS: &[&str] = &[
    "planned",
    "arrived",
    "triaged",
    "in-progress",
    "onleave",
    "finished",
    "cancelled",
    "entered-in-error",
    "unknown",
];

/// Collects the validation issues of a resource.
struct Validator<'a> {
    resource: &'a Value,
    kind: &'a str,
    issues: Vec<Issue>,
}

impl Validator<'_> {
    fn issue(&mut self, code: &str, path: &str, diagnostics: String) {
        self.issues.push(Issue {
            severity: "error".into(),
            code: code.into(),
            diagnostics,
            expression: vec![format!("{}.{path}", self.kind)],
        });
    }

    fn required(&mut self, element: &str) -> Option<&Value> {
        let v = self.resource.get(element).filter(|v| !v.is_null());
        if v.is_none() {
            self.issue(
                "required",
                element,
                format!("{}.{element} is required (1..1)", self.kind),
            );
        }
        // Re-borrow from the resource: `self` was borrowed mutably for the issue.
        self.resource.get(element).filter(|v| !v.is_null())
    }

    /// A `code` element whose value must be in `set`.
    fn code(&mut self, element: &str, set: &[&str], required: bool) {
        let v = if required {
            self.required(element)
        } else {
            self.resource.get(element)
        };
        match v {
            None => {}
            Some(Value::String(s)) if set.contains(&s.as_str()) => {}
            Some(other) => {
                let shown = other.to_string();
                self.issue(
                    "value",
                    element,
                    format!("{shown} is not one of {}", set.join(", ")),
                );
            }
        }
    }

    /// A `CodeableConcept` whose codings must use codes from `set`.
    fn concept_in(&mut self, element: &str, set: &[&str]) {
        let Some(v) = self.resource.get(element) else {
            return;
        };
        let codes: Option<Vec<&str>> = v.get("coding").and_then(Value::as_array).map(|cs| {
            cs.iter()
                .map(|c| c.get("code").and_then(Value::as_str).unwrap_or(""))
                .collect()
        });
        match codes {
            Some(codes) if !codes.is_empty() && codes.iter().all(|c| set.contains(c)) => {}
            _ => self.issue(
                "value",
                element,
                format!(
                    "must be a CodeableConcept whose coding codes are among {}",
                    set.join(", ")
                ),
            ),
        }
    }

    /// A `CodeableConcept` with at least a coding or a text.
    fn concept(&mut self, element: &str, required: bool) {
        let v = if required {
            self.required(element)
        } else {
            self.resource.get(element)
        };
        let Some(v) = v else { return };
        let ok = v.is_object()
            && (v.get("text").is_some_and(Value::is_string)
                || v.get("coding")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| !cs.is_empty() && cs.iter().all(Value::is_object)));
        if !ok {
            self.issue(
                "structure",
                element,
                "must be a CodeableConcept with `coding` or `text`".into(),
            );
        }
    }

    /// A `Reference` that must point at the record's patient.
    fn patient_ref(&mut self, element: &str, patient_id: &str, required: bool) {
        let v = if required {
            self.required(element)
        } else {
            self.resource.get(element)
        };
        let Some(v) = v else { return };
        let expected = format!("Patient/{patient_id}");
        if v.get("reference").and_then(Value::as_str) != Some(expected.as_str()) {
            self.issue(
                "invalid",
                element,
                format!("must be a Reference to this record's patient ({expected})"),
            );
        }
    }
}

/// Validates a resource for the record of `patient_id`; empty when valid.
pub fn validate(resource: &Value, patient_id: &str) -> Vec<Issue> {
    let Some(kind) = resource.get("resourceType").and_then(Value::as_str) else {
        return vec![Issue {
            severity: "error".into(),
            code: "structure".into(),
            diagnostics: "a FHIR resource object with `resourceType` is required".into(),
            expression: Vec::new(),
        }];
    };
    if !RESOURCE_TYPES.contains(&kind) {
        return vec![Issue {
            severity: "error".into(),
            code: "not-supported".into(),
            diagnostics: format!(
                "resourceType `{kind}` is not stored here; use one of {}",
                RESOURCE_TYPES.join(", ")
            ),
            expression: vec!["resourceType".into()],
        }];
    }
    let mut v = Validator {
        resource,
        kind,
        issues: Vec::new(),
    };
    if let Some(id) = resource.get("id") {
        let ok = id.as_str().is_some_and(|s| {
            (1..=64).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        });
        if !ok {
            v.issue("value", "id", "must match [A-Za-z0-9\\-\\.]{1,64}".into());
        } else if kind == "Patient" && id.as_str() != Some(patient_id) {
            v.issue(
                "invalid",
                "id",
                format!("must be the record's patient id ({patient_id})"),
            );
        }
    }
    match kind {
        "Patient" => {
            v.code("gender", &["male", "female", "other", "unknown"], false);
            if let Some(b) = resource.get("birthDate") {
                let ok = b.as_str().is_some_and(|s| {
                    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
                        || (s.len() == 4 && s.bytes().all(|c| c.is_ascii_digit()))
                        || (s.len() == 7
                            && chrono::NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
                                .is_ok())
                });
                if !ok {
                    v.issue(
                        "value",
                        "birthDate",
                        "must be a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)".into(),
                    );
                }
            }
            if resource.get("active").is_some_and(|a| !a.is_boolean()) {
                v.issue("structure", "active", "must be a boolean".into());
            }
        }
        "Condition" => {
            v.patient_ref("subject", patient_id, true);
            v.concept_in("clinicalStatus", CONDITION_CLINICAL);
            v.concept_in("verificationStatus", CONDITION_VERIFICATION);
            v.concept("code", false);
            let entered_in_error = resource
                .pointer("/verificationStatus/coding/0/code")
                .and_then(Value::as_str)
                == Some("entered-in-error");
            if entered_in_error && resource.get("clinicalStatus").is_some() {
                v.issue(
                    "invariant",
                    "clinicalStatus",
                    "con-5: clinicalStatus SHALL NOT be present if verificationStatus is entered-in-error".into(),
                );
            }
        }
        "AllergyIntolerance" => {
            v.patient_ref("patient", patient_id, true);
            v.concept_in("clinicalStatus", ALLERGY_CLINICAL);
            v.concept_in("verificationStatus", ALLERGY_VERIFICATION);
            v.code("type", &["allergy", "intolerance"], false);
            v.code("criticality", &["low", "high", "unable-to-assess"], false);
            if let Some(c) = resource.get("category") {
                let set = ["food", "medication", "environment", "biologic"];
                let ok = c.as_array().is_some_and(|a| {
                    a.iter()
                        .all(|x| x.as_str().is_some_and(|s| set.contains(&s)))
                });
                if !ok {
                    v.issue(
                        "value",
                        "category",
                        format!("must be an array of {}", set.join(", ")),
                    );
                }
            }
        }
        "MedicationStatement" => {
            v.code("status", MEDICATION_STATUS, true);
            v.patient_ref("subject", patient_id, true);
            match (
                resource.get("medicationCodeableConcept"),
                resource.get("medicationReference"),
            ) {
                (Some(_), None) => v.concept("medicationCodeableConcept", true),
                (None, Some(r)) => {
                    if !r.get("reference").is_some_and(Value::is_string) {
                        v.issue("structure", "medicationReference", "must be a Reference".into());
                    }
                }
                (None, None) => v.issue(
                    "required",
                    "medication[x]",
                    "MedicationStatement.medication[x] is required (1..1): give medicationCodeableConcept or medicationReference".into(),
                ),
                (Some(_), Some(_)) => v.issue(
                    "invalid",
                    "medication[x]",
                    "give only one of medicationCodeableConcept and medicationReference".into(),
                ),
            }
        }
        "Observation" => {
            v.code("status", OBSERVATION_STATUS, true);
            v.concept("code", true);
            v.patient_ref("subject", patient_id, false);
        }
        "Encounter" => {
            v.code("status", ENCOUNTER_STATUS, true);
            if let Some(class) = v.required("class")
                && !class.get("code").is_some_and(Value::is_string)
            {
                v.issue(
                    "structure",
                    "class",
                    "must be a Coding with a `code`".into(),
                );
            }
            v.patient_ref("subject", patient_id, false);
        }
        _ => {}
    }
    v.issues
}

/// The `Encounter` a finished consultation leaves in the patient's record, with the
/// provider's notes as its narrative.
pub fn consultation_encounter(
    c: &ConsultationRecord,
    a: &AppointmentRecord,
    now: i64,
    notes: Option<&str>,
) -> Value {
    let rfc = crate::healthcare::rfc3339;
    let mut enc = json!({
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR", "display": "virtual"},
        "subject": {"reference": format!("Patient/{}", a.patient_id)},
        "participant": [{"individual": {"reference": format!("Practitioner/{}", a.provider_id)}}],
        "appointment": [{"reference": format!("Appointment/{}", a.id)}],
        "period": {"start": rfc(c.admitted_at.unwrap_or(c.created_at)), "end": rfc(now)},
        "reasonCode": [{"text": a.reason}],
    });
    if let Some(notes) = notes.filter(|n| !n.trim().is_empty()) {
        let escaped = notes
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        enc["text"] = json!({
            "status": "generated",
            "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{escaped}</div>"),
        });
    }
    enc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(issues: &[Issue]) -> Vec<(String, String)> {
        issues
            .iter()
            .map(|i| (i.code.clone(), i.expression.join(",")))
            .collect()
    }

    #[test]
    fn required_elements_and_status_value_sets_are_checked() {
        let obs = json!({"resourceType": "Observation", "status": "done"});
        assert_eq!(
            codes(&validate(&obs, "p1")),
            [
                ("value".to_string(), "Observation.status".to_string()),
                ("required".to_string(), "Observation.code".to_string())
            ]
        );
        let ok = json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "heart rate"}, "subject": {"reference": "Patient/p1"},
            "valueQuantity": {"value": 72, "unit": "/min"}});
        assert!(validate(&ok, "p1").is_empty());
        assert_eq!(
            codes(&validate(&ok, "p2")),
            [("invalid".to_string(), "Observation.subject".to_string())]
        );
        let med = json!({"resourceType": "MedicationStatement", "status": "active",
            "subject": {"reference": "Patient/p1"}});
        assert_eq!(codes(&validate(&med, "p1"))[0].0, "required");
        let cond = json!({"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {"coding": [{"code": "cured"}]}});
        assert_eq!(
            codes(&validate(&cond, "p1"))[0].1,
            "Condition.clinicalStatus"
        );
        let allergy = json!({"resourceType": "AllergyIntolerance", "criticality": "high"});
        assert_eq!(
            codes(&validate(&allergy, "p1"))[0].1,
            "AllergyIntolerance.patient"
        );
        let enc = json!({"resourceType": "Encounter", "status": "finished"});
        assert_eq!(codes(&validate(&enc, "p1"))[0].1, "Encounter.class");
        assert_eq!(
            validate(&json!({"resourceType": "Claim"}), "p1")[0].code,
            "not-supported"
        );
        assert!(
            validate(
                &json!({"resourceType": "Patient", "gender": "female", "birthDate": "1980-02"}),
                "p1"
            )
            .is_empty()
        );
    }

    #[test]
    fn consultation_encounters_validate() {
        let a = AppointmentRecord {
            id: "a".into(),
            slot_id: "s".into(),
            provider_id: "pr".into(),
            patient_id: "p1".into(),
            reason: "cough".into(),
            status: nexus_store::AppointmentStatus::Booked,
            triage_priority: 3,
            start_at: 0,
            end_at: 1,
            created_at: 0,
            updated_at: 0,
        };
        let c = ConsultationRecord {
            id: "c".into(),
            appointment_id: "a".into(),
            room: "r".into(),
            waiting_since: None,
            admitted_at: Some(5),
            created_at: 1,
            ended_at: None,
        };
        let enc = consultation_encounter(&c, &a, 10, Some("rest <2 days>"));
        assert!(validate(&enc, "p1").is_empty());
        assert!(
            enc["text"]["div"]
                .as_str()
                .unwrap_or("")
                .contains("&lt;2 days&gt;")
        );
    }
}
