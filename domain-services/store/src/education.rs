//! Education: courses, enrollments, live classes (each class is an SFU room of kind
//! `class`), auto-graded assessments and signed certificates (the store keeps the signing
//! key; signing is the API's).

use crate::db::Store;
use crate::error::StoreError;
use crate::outbox::{NewEvent, insert_events};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A course, created by a teacher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CourseRecord {
    /// Course id.
    pub id: String,
    /// The teacher (user id) who owns it.
    pub teacher_id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Creation time, Unix ms.
    pub created_at: i64,
}

impl CourseRecord {
    fn from_row(r: &AnyRow) -> Result<Self, StoreError> {
        Ok(CourseRecord {
            id: r.try_get("id")?,
            teacher_id: r.try_get("teacher_id")?,
            title: r.try_get("title")?,
            description: r.try_get("description")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// A student's enrollment in a course.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentRecord {
    /// Enrollment id.
    pub id: String,
    /// The course.
    pub course_id: String,
    /// The student (user id).
    pub student_id: String,
    /// Progress, percent (0–100).
    pub progress: i64,
    /// Creation time, Unix ms.
    pub created_at: i64,
}

impl EnrollmentRecord {
    fn from_row(r: &AnyRow) -> Result<Self, StoreError> {
        Ok(EnrollmentRecord {
            id: r.try_get("id")?,
            course_id: r.try_get("course_id")?,
            student_id: r.try_get("student_id")?,
            progress: r.try_get("progress")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// A scheduled live class of a course.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassRecord {
    /// Class id.
    pub id: String,
    /// The course.
    pub course_id: String,
    /// The teacher (user id) who teaches it.
    pub teacher_id: String,
    /// SFU room name (kind `class`).
    pub room: String,
    /// Scheduled start, Unix ms.
    pub starts_at: i64,
    /// Creation time, Unix ms.
    pub created_at: i64,
}

impl ClassRecord {
    fn from_row(r: &AnyRow) -> Result<Self, StoreError> {
        Ok(ClassRecord {
            id: r.try_get("id")?,
            course_id: r.try_get("course_id")?,
            teacher_id: r.try_get("teacher_id")?,
            room: r.try_get("room")?,
            starts_at: r.try_get("starts_at")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

impl Store {
    /// Creates a course.
    pub async fn create_course(
        &self,
        c: &CourseRecord,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO ed_courses (id, teacher_id, title, description, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&c.id)
        .bind(&c.teacher_id)
        .bind(&c.title)
        .bind(&c.description)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "course id taken"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A course by id.
    pub async fn course(&self, id: &str) -> Result<Option<CourseRecord>, StoreError> {
        sqlx::query("SELECT * FROM ed_courses WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(CourseRecord::from_row)
            .transpose()
    }

    /// Courses by id, after the cursor `after`.
    pub async fn courses(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CourseRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM ed_courses WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2",
        )
        .bind(after.map(str::to_string))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(CourseRecord::from_row).collect()
    }

    /// Enrolls a student; enrolled already → [`StoreError::Conflict`].
    pub async fn enroll(
        &self,
        e: &EnrollmentRecord,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO ed_enrollments (id, course_id, student_id, progress, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&e.id)
        .bind(&e.course_id)
        .bind(&e.student_id)
        .bind(e.progress)
        .bind(e.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|err| StoreError::from_write(err, "already enrolled in this course"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// An enrollment by id.
    pub async fn enrollment(&self, id: &str) -> Result<Option<EnrollmentRecord>, StoreError> {
        sqlx::query("SELECT * FROM ed_enrollments WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(EnrollmentRecord::from_row)
            .transpose()
    }

    /// The enrollment of a student in a course.
    pub async fn enrollment_in(
        &self,
        course_id: &str,
        student_id: &str,
    ) -> Result<Option<EnrollmentRecord>, StoreError> {
        sqlx::query("SELECT * FROM ed_enrollments WHERE course_id = $1 AND student_id = $2")
            .bind(course_id)
            .bind(student_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(EnrollmentRecord::from_row)
            .transpose()
    }

    /// Schedules a class.
    pub async fn create_class(
        &self,
        c: &ClassRecord,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO ed_classes (id, course_id, teacher_id, room, starts_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&c.id)
        .bind(&c.course_id)
        .bind(&c.teacher_id)
        .bind(&c.room)
        .bind(c.starts_at)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "class id or room taken"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A class by id.
    pub async fn class(&self, id: &str) -> Result<Option<ClassRecord>, StoreError> {
        sqlx::query("SELECT * FROM ed_classes WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(ClassRecord::from_row)
            .transpose()
    }
}

/// An auto-graded quiz of a course.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssessmentRecord {
    /// Assessment id.
    pub id: String,
    /// The course.
    pub course_id: String,
    /// Title.
    pub title: String,
    /// Questions with their choices and the index of the right one (JSON array).
    pub questions: serde_json::Value,
    /// Score (percent) needed to pass.
    pub pass_score: i64,
    /// Creation time, Unix ms.
    pub created_at: i64,
}

impl AssessmentRecord {
    fn from_row(r: &AnyRow) -> Result<Self, StoreError> {
        let questions: String = r.try_get("questions")?;
        Ok(AssessmentRecord {
            id: r.try_get("id")?,
            course_id: r.try_get("course_id")?,
            title: r.try_get("title")?,
            questions: serde_json::from_str(&questions)
                .map_err(|e| StoreError::Corrupt(format!("ed_assessments.questions: {e}")))?,
            pass_score: r.try_get("pass_score")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// A graded submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionRecord {
    /// Submission id.
    pub id: String,
    /// The assessment.
    pub assessment_id: String,
    /// The student (user id).
    pub student_id: String,
    /// The chosen answers (JSON array).
    pub answers: serde_json::Value,
    /// Score, percent.
    pub score: i64,
    /// Whether the score reached the pass score.
    pub passed: bool,
    /// Submission time, Unix ms.
    pub created_at: i64,
}

/// A student's standing in a course after a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Percent of the course's assessments the student has passed.
    pub progress: i64,
    /// Whether every assessment is passed (and there is at least one).
    pub completed: bool,
}

/// A signed course certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// Certificate id.
    pub id: String,
    /// The course.
    pub course_id: String,
    /// The student (user id).
    pub student_id: String,
    /// The signed statement (canonical JSON text).
    pub payload: String,
    /// Ed25519 signature of `payload`'s bytes, base64url without padding.
    pub signature: String,
    /// Issue time, Unix ms.
    pub issued_at: i64,
}

impl CertificateRecord {
    fn from_row(r: &AnyRow) -> Result<Self, StoreError> {
        Ok(CertificateRecord {
            id: r.try_get("id")?,
            course_id: r.try_get("course_id")?,
            student_id: r.try_get("student_id")?,
            payload: r.try_get("payload")?,
            signature: r.try_get("signature")?,
            issued_at: r.try_get("issued_at")?,
        })
    }
}

impl Store {
    /// Creates an assessment.
    pub async fn create_assessment(
        &self,
        a: &AssessmentRecord,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO ed_assessments (id, course_id, title, questions, pass_score, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&a.id)
        .bind(&a.course_id)
        .bind(&a.title)
        .bind(a.questions.to_string())
        .bind(a.pass_score)
        .bind(a.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "assessment id taken"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// An assessment by id.
    pub async fn assessment(&self, id: &str) -> Result<Option<AssessmentRecord>, StoreError> {
        sqlx::query("SELECT * FROM ed_assessments WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(AssessmentRecord::from_row)
            .transpose()
    }

    /// A course's assessments, oldest first.
    pub async fn assessments_of(
        &self,
        course_id: &str,
    ) -> Result<Vec<AssessmentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM ed_assessments WHERE course_id = $1 ORDER BY created_at, id LIMIT 1000",
        )
        .bind(course_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(AssessmentRecord::from_row).collect()
    }

    /// Records a graded submission and updates the enrollment's progress (percent of the
    /// course's assessments passed), in one transaction with `events`. Returns the new
    /// standing; `None` when the student is not enrolled in the assessment's course.
    pub async fn submit_assessment(
        &self,
        s: &SubmissionRecord,
        events: &[NewEvent],
    ) -> Result<Option<Standing>, StoreError> {
        let mut tx = self.begin_write().await?;
        let course: Option<String> = sqlx::query(
            "SELECT a.course_id FROM ed_assessments a JOIN ed_enrollments e \
             ON e.course_id = a.course_id AND e.student_id = $2 WHERE a.id = $1",
        )
        .bind(&s.assessment_id)
        .bind(&s.student_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
        let Some(course) = course else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO ed_submissions (id, assessment_id, student_id, answers, score, passed, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.id)
        .bind(&s.assessment_id)
        .bind(&s.student_id)
        .bind(s.answers.to_string())
        .bind(s.score)
        .bind(i64::from(s.passed))
        .bind(s.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "submission id taken"))?;
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT), CAST(COUNT(DISTINCT CASE WHEN EXISTS ( \
               SELECT 1 FROM ed_submissions s WHERE s.assessment_id = a.id \
               AND s.student_id = $2 AND s.passed = 1) THEN a.id END) AS BIGINT) \
             FROM ed_assessments a WHERE a.course_id = $1",
        )
        .bind(&course)
        .bind(&s.student_id)
        .fetch_one(&mut *tx)
        .await?;
        let (total, passed): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let progress = if total == 0 { 0 } else { passed * 100 / total };
        sqlx::query(
            "UPDATE ed_enrollments SET progress = $3 WHERE course_id = $1 AND student_id = $2",
        )
        .bind(&course)
        .bind(&s.student_id)
        .bind(progress)
        .execute(&mut *tx)
        .await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(Some(Standing {
            progress,
            completed: total > 0 && passed == total,
        }))
    }

    /// Stores a certificate with `events`; the student holding one for the course already
    /// → [`StoreError::Conflict`] (a course certifies once).
    pub async fn issue_certificate(
        &self,
        c: &CertificateRecord,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO ed_certificates (id, course_id, student_id, payload, signature, \
             issued_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&c.id)
        .bind(&c.course_id)
        .bind(&c.student_id)
        .bind(&c.payload)
        .bind(&c.signature)
        .bind(c.issued_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "certificate already issued"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A student's certificates, oldest first.
    pub async fn certificates_of(
        &self,
        student_id: &str,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM ed_certificates WHERE student_id = $1 ORDER BY issued_at, id LIMIT 1000",
        )
        .bind(student_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(CertificateRecord::from_row).collect()
    }

    /// The certificate-signing key (PKCS#8, base64): the stored one, or `candidate` stored
    /// now when there is none. Nodes racing here all end up with the first one stored.
    pub async fn signing_key_or_insert(&self, candidate: &str) -> Result<String, StoreError> {
        let stored = sqlx::query("SELECT pkcs8 FROM ed_signing_keys WHERE id = 'certificates'")
            .fetch_optional(&self.pool)
            .await?;
        if let Some(r) = stored {
            return Ok(r.try_get(0)?);
        }
        let inserted = sqlx::query(
            "INSERT INTO ed_signing_keys (id, pkcs8, created_at) VALUES ('certificates', $1, $2)",
        )
        .bind(candidate)
        .bind(crate::now_ms())
        .execute(&self.pool)
        .await;
        match inserted.map_err(|e| StoreError::from_write(e, "key exists")) {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let row = sqlx::query("SELECT pkcs8 FROM ed_signing_keys WHERE id = 'certificates'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }
}
