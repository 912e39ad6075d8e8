//! The event-type catalogue: every event type Nexus emits, its domain and so its topic.

use std::fmt;
use std::str::FromStr;

/// A business domain: the CloudEvents `source` is `/nexus/<domain>` and its events go to the
/// topic `<prefix><domain>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    /// Accounts, roles, profiles.
    Users,
    /// Appointments, consultations, records, disease surveillance.
    Healthcare,
    /// Courses, classes, assessments, certificates.
    Education,
    /// Jobs, loans, payments.
    Economic,
    /// Incidents, resources, volunteers, alerts, geofences.
    Crisis,
    /// Errors, metrics and audit events of the platform itself.
    System,
}

impl Domain {
    /// Every domain, in topic order.
    pub const ALL: [Domain; 6] = [
        Domain::Users,
        Domain::Healthcare,
        Domain::Education,
        Domain::Economic,
        Domain::Crisis,
        Domain::System,
    ];

    /// The lower-case name (`users`, `crisis`, …): the topic suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Users => "users",
            Domain::Healthcare => "healthcare",
            Domain::Education => "education",
            Domain::Economic => "economic",
            Domain::Crisis => "crisis",
            Domain::System => "system",
        }
    }

    /// The CloudEvents `source`: `/nexus/<domain>`.
    pub fn source(self) -> String {
        format!("/nexus/{}", self.as_str())
    }

    /// The domain named `name` (`users`, …).
    pub fn parse(name: &str) -> Option<Domain> {
        Domain::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! catalogue {
    ($($variant:ident => $name:literal, $domain:ident;)*) => {
        /// A CloudEvents `type` Nexus emits. The catalogue lists types whose producers come
        /// later (economic) so that consumers can already be written against them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum EventType {
            $(
                #[doc = concat!("`", $name, "` (domain `", stringify!($domain), "`).")]
                $variant,
            )*
        }

        impl EventType {
            /// Every event type.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),*];

            /// The CloudEvents `type` string (`incident.reported`, …).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }

            /// The domain that emits it (which fixes `source` and topic).
            pub fn domain(self) -> Domain {
                match self {
                    $(EventType::$variant => Domain::$domain,)*
                }
            }
        }
    };
}

catalogue! {
    UserRegistered => "user.registered", Users;
    UserUpdated => "user.updated", Users;
    UserDeleted => "user.deleted", Users;
    AppointmentCreated => "appointment.created", Healthcare;
    AppointmentCompleted => "appointment.completed", Healthcare;
    AppointmentCancelled => "appointment.cancelled", Healthcare;
    AppointmentRescheduled => "appointment.rescheduled", Healthcare;
    ConsultationStarted => "consultation.started", Healthcare;
    ConsultationEnded => "consultation.ended", Healthcare;
    RecordUpdated => "record.updated", Healthcare;
    EpidemicDetected => "epidemic.detected", Healthcare;
    EnrollmentCreated => "enrollment.created", Education;
    CourseCompleted => "course.completed", Education;
    CertificateIssued => "certificate.issued", Education;
    AssessmentSubmitted => "assessment.submitted", Education;
    ClassScheduled => "class.scheduled", Education;
    JobPosted => "job.posted", Economic;
    ApplicationSubmitted => "application.submitted", Economic;
    LoanApproved => "loan.approved", Economic;
    PaymentCompleted => "payment.completed", Economic;
    IncidentReported => "incident.reported", Crisis;
    IncidentVerified => "incident.verified", Crisis;
    IncidentUpdated => "incident.updated", Crisis;
    IncidentResolved => "incident.resolved", Crisis;
    ResourceRequested => "resource.requested", Crisis;
    ResourceRegistered => "resource.registered", Crisis;
    ShelterOpened => "shelter.opened", Crisis;
    HazardDeclared => "hazard.declared", Crisis;
    VolunteerRegistered => "volunteer.registered", Crisis;
    VolunteerMoved => "volunteer.moved", Crisis;
    GeofenceCreated => "geofence.created", Crisis;
    GeofenceDeleted => "geofence.deleted", Crisis;
    GeofenceTriggered => "geofence.triggered", Crisis;
    AlertIssued => "alert.issued", Crisis;
    AlertUpdated => "alert.updated", Crisis;
    AlertCancelled => "alert.cancelled", Crisis;
    AlertSubscriptionCreated => "alert.subscription.created", Crisis;
    AlertSubscriptionEnded => "alert.subscription.ended", Crisis;
    AlertSubscriptionLocated => "alert.subscription.located", Crisis;
    ErrorOccurred => "error.occurred", System;
    MetricRecorded => "metric.recorded", System;
    AuditLogged => "audit.logged", System;
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type string is not in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type `{0}`")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_and_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for t in EventType::ALL {
            assert!(seen.insert(t.as_str()), "duplicate {t}");
            assert_eq!(t.as_str().parse::<EventType>(), Ok(*t));
        }
        assert!("incident.exploded".parse::<EventType>().is_err());
    }

    #[test]
    fn the_issue_types_are_in_their_domains() {
        assert_eq!(EventType::IncidentReported.domain(), Domain::Crisis);
        assert_eq!(EventType::UserRegistered.domain().source(), "/nexus/users");
        assert_eq!(EventType::PaymentCompleted.domain(), Domain::Economic);
        assert_eq!(EventType::AuditLogged.domain(), Domain::System);
        assert_eq!(Domain::parse("healthcare"), Some(Domain::Healthcare));
    }
}
