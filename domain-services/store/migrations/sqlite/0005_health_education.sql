-- Healthcare and education (SQLite): provider profiles and availability slots, appointments
-- (one active appointment per slot, enforced twice: a conditional update claims the slot and
-- a partial unique index refuses a second active appointment), consultations wired to SFU
-- rooms, FHIR R4 resources per patient, disease-surveillance case reports; courses,
-- enrollments and live classes.
CREATE TABLE hc_providers (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL UNIQUE,
    specialty   TEXT NOT NULL,
    languages   TEXT NOT NULL,
    bio         TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX hc_providers_specialty ON hc_providers(specialty);

CREATE TABLE hc_slots (
    id              TEXT PRIMARY KEY,
    provider_id     TEXT NOT NULL REFERENCES hc_providers(id) ON DELETE CASCADE,
    start_at        INTEGER NOT NULL,
    end_at          INTEGER NOT NULL,
    appointment_id  TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX hc_slots_provider ON hc_slots(provider_id, start_at);
CREATE INDEX hc_slots_open ON hc_slots(start_at) WHERE appointment_id IS NULL;

CREATE TABLE hc_appointments (
    id               TEXT PRIMARY KEY,
    slot_id          TEXT NOT NULL REFERENCES hc_slots(id),
    provider_id      TEXT NOT NULL REFERENCES hc_providers(id),
    patient_id       TEXT NOT NULL,
    reason           TEXT NOT NULL,
    status           TEXT NOT NULL,
    triage_priority  INTEGER NOT NULL,
    start_at         INTEGER NOT NULL,
    end_at           INTEGER NOT NULL,
    reminded_at      INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX hc_appointments_active_slot ON hc_appointments(slot_id) WHERE status = 'booked';
CREATE INDEX hc_appointments_patient ON hc_appointments(patient_id, start_at);
CREATE INDEX hc_appointments_provider ON hc_appointments(provider_id, start_at);
CREATE INDEX hc_appointments_reminders ON hc_appointments(start_at) WHERE status = 'booked' AND reminded_at IS NULL;

CREATE TABLE hc_consultations (
    id              TEXT PRIMARY KEY,
    appointment_id  TEXT NOT NULL UNIQUE REFERENCES hc_appointments(id),
    room            TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL,
    waiting_since   INTEGER,
    admitted_at     INTEGER,
    created_at      INTEGER NOT NULL,
    ended_at        INTEGER
);

CREATE TABLE hc_records (
    id             TEXT PRIMARY KEY,
    patient_id     TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource       TEXT NOT NULL,
    version        INTEGER NOT NULL,
    author_id      TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX hc_records_patient ON hc_records(patient_id, resource_type, created_at);

CREATE TABLE hc_case_reports (
    id           TEXT PRIMARY KEY,
    syndrome     TEXT NOT NULL,
    region       TEXT NOT NULL,
    lat          REAL NOT NULL,
    lon          REAL NOT NULL,
    onset_at     INTEGER NOT NULL,
    reported_by  TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX hc_case_reports_cluster ON hc_case_reports(syndrome, region, onset_at);

CREATE TABLE hc_epidemics (
    id           TEXT PRIMARY KEY,
    syndrome     TEXT NOT NULL,
    region       TEXT NOT NULL,
    case_count   INTEGER NOT NULL,
    detected_at  INTEGER NOT NULL
);
CREATE INDEX hc_epidemics_cluster ON hc_epidemics(syndrome, region, detected_at);

CREATE TABLE ed_courses (
    id           TEXT PRIMARY KEY,
    teacher_id   TEXT NOT NULL,
    title        TEXT NOT NULL,
    description  TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE ed_enrollments (
    id          TEXT PRIMARY KEY,
    course_id   TEXT NOT NULL REFERENCES ed_courses(id) ON DELETE CASCADE,
    student_id  TEXT NOT NULL,
    progress    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    UNIQUE (course_id, student_id)
);
CREATE INDEX ed_enrollments_student ON ed_enrollments(student_id);

CREATE TABLE ed_classes (
    id          TEXT PRIMARY KEY,
    course_id   TEXT NOT NULL REFERENCES ed_courses(id) ON DELETE CASCADE,
    teacher_id  TEXT NOT NULL,
    room        TEXT NOT NULL UNIQUE,
    starts_at   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX ed_classes_course ON ed_classes(course_id, starts_at);

CREATE TABLE ed_assessments (
    id          TEXT PRIMARY KEY,
    course_id   TEXT NOT NULL REFERENCES ed_courses(id) ON DELETE CASCADE,
    title       TEXT NOT NULL,
    questions   TEXT NOT NULL,
    pass_score  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX ed_assessments_course ON ed_assessments(course_id);

CREATE TABLE ed_submissions (
    id             TEXT PRIMARY KEY,
    assessment_id  TEXT NOT NULL REFERENCES ed_assessments(id) ON DELETE CASCADE,
    student_id     TEXT NOT NULL,
    answers        TEXT NOT NULL,
    score          INTEGER NOT NULL,
    passed         INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
);
CREATE INDEX ed_submissions_student ON ed_submissions(student_id, assessment_id);

-- Certificates are signed with the platform's Ed25519 key (one row, created on first use
-- by whichever node needs it first).
CREATE TABLE ed_certificates (
    id          TEXT PRIMARY KEY,
    course_id   TEXT NOT NULL REFERENCES ed_courses(id) ON DELETE CASCADE,
    student_id  TEXT NOT NULL,
    payload     TEXT NOT NULL,
    signature   TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    UNIQUE (course_id, student_id)
);
CREATE INDEX ed_certificates_student ON ed_certificates(student_id);

CREATE TABLE ed_signing_keys (
    id          TEXT PRIMARY KEY,
    pkcs8       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
