//! Who may do what: the role-based access policy of the product API.
//!
//! The policy is one table, [`POLICY`], from [`Action`] to the roles allowed. Some actions are
//! also allowed to the user the resource belongs to ([`Action::owner_allowed`]); that rule is
//! applied by [`Principal::authorize`].

use crate::problem::Problem;
use nexus_auth::{Claims, Role};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A user with an access token.
    User {
        /// User id (`sub`).
        id: String,
        /// Roles from the token.
        roles: Vec<Role>,
    },
    /// A server-to-server caller with an API key.
    ApiKey {
        /// Key id.
        id: String,
        /// `gateway` or `admin`.
        scope: String,
    },
}

impl Principal {
    /// The principal described by verified token claims.
    pub fn from_claims(claims: Claims) -> Self {
        Principal::User {
            id: claims.sub,
            roles: claims.roles,
        }
    }

    /// The user id, when a user is calling.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Principal::User { id, .. } => Some(id),
            Principal::ApiKey { .. } => None,
        }
    }

    /// Roles of the caller; an `admin`-scoped API key acts as an admin.
    pub fn roles(&self) -> &[Role] {
        match self {
            Principal::User { roles, .. } => roles,
            Principal::ApiKey { scope, .. } if scope == "admin" => &[Role::Admin],
            Principal::ApiKey { .. } => &[],
        }
    }

    /// Allows `action` on a resource owned by `owner` (if any), or returns 403.
    pub fn authorize(&self, action: Action, owner: Option<&str>) -> Result<(), Problem> {
        if action.owner_allowed() && owner.is_some() && self.user_id() == owner {
            return Ok(());
        }
        if allowed(self.roles(), action) {
            return Ok(());
        }
        Err(Problem::forbidden(format!(
            "your roles do not allow {}",
            action.describe()
        )))
    }
}

/// Everything the API authorizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Read a user's profile.
    ReadUser,
    /// Change a user's name, phone or settings.
    UpdateUser,
    /// Erase a user (GDPR).
    EraseUser,
    /// Export a user's data (GDPR portability).
    ExportUser,
    /// Replace a user's roles.
    ManageRoles,
    /// Create and revoke API keys.
    ManageApiKeys,
    /// Read the crisis map: incidents, resources, shelters, hazards, clusters.
    ReadCrisisMap,
    /// Report an incident or file a situation report.
    ReportIncident,
    /// Vote to confirm or dispute an incident (crowdsourced verification).
    VerifyIncident,
    /// Resolve, reject or assign responders to incidents.
    ManageIncidents,
    /// Create resources, shelters and hazard areas.
    ManageCrisisAssets,
    /// Create, read and delete geofences.
    ManageGeofences,
    /// Register oneself as a volunteer.
    RegisterVolunteer,
    /// Update a volunteer's location (the volunteer themself, or a coordinator).
    UpdateVolunteer,
    /// See responders' (volunteers') positions on the map.
    ViewResponders,
    /// Create one's provider profile and publish availability slots.
    ManageProviderProfile,
    /// Search providers and read their profiles and slots.
    SearchProviders,
    /// Book an appointment in a provider's slot.
    BookAppointment,
    /// Read an appointment or its consultation (its patient and provider as owners).
    ReadAppointment,
    /// Reschedule or cancel an appointment (its patient and provider as owners).
    ChangeAppointment,
    /// Open the consultation of an appointment (its patient and provider as owners).
    OpenConsultation,
    /// Take a consultation room token (only the appointment's patient and provider).
    JoinConsultation,
    /// Admit from the waiting room, end consultations, see the waiting queue.
    ModerateConsultation,
    /// Read a patient's health record (the patient as owner; treating providers too).
    ReadRecord,
    /// Write to a patient's health record (treating providers too).
    WriteRecord,
    /// Report a case for disease surveillance.
    ReportCase,
    /// Create courses and schedule live classes.
    ManageCourses,
    /// Browse courses.
    ReadCourses,
    /// Enroll in a course.
    Enroll,
    /// Read an enrollment's progress (the student and the course's teacher as owners).
    ReadProgress,
    /// Take a class room token (the course's teacher and enrolled students).
    JoinClass,
    /// Issue CAP alerts (Alert, Update, Cancel) and see non-public ones.
    IssueAlert,
    /// See an alert's per-recipient delivery report.
    ReadAlertDeliveries,
    /// Subscribe a location to public alerts.
    SubscribeAlerts,
    /// Approve another authority's pending alert (the approval step).
    ApproveAlert,
    /// Count an alert's recipients per channel without issuing it.
    PreviewAlert,
}

impl Action {
    /// Every action, for the policy matrix test.
    pub const ALL: [Action; 36] = [
        Action::ReadUser,
        Action::UpdateUser,
        Action::EraseUser,
        Action::ExportUser,
        Action::ManageRoles,
        Action::ManageApiKeys,
        Action::ReadCrisisMap,
        Action::ReportIncident,
        Action::VerifyIncident,
        Action::ManageIncidents,
        Action::ManageCrisisAssets,
        Action::ManageGeofences,
        Action::RegisterVolunteer,
        Action::UpdateVolunteer,
        Action::ViewResponders,
        Action::ManageProviderProfile,
        Action::SearchProviders,
        Action::BookAppointment,
        Action::ReadAppointment,
        Action::ChangeAppointment,
        Action::OpenConsultation,
        Action::JoinConsultation,
        Action::ModerateConsultation,
        Action::ReadRecord,
        Action::WriteRecord,
        Action::ReportCase,
        Action::ManageCourses,
        Action::ReadCourses,
        Action::Enroll,
        Action::ReadProgress,
        Action::JoinClass,
        Action::IssueAlert,
        Action::ReadAlertDeliveries,
        Action::SubscribeAlerts,
        Action::ApproveAlert,
        Action::PreviewAlert,
    ];

    /// Whether the owner of the resource may do this regardless of role.
    pub fn owner_allowed(self) -> bool {
        matches!(
            self,
            Action::ReadUser
                | Action::UpdateUser
                | Action::EraseUser
                | Action::ExportUser
                | Action::UpdateVolunteer
                | Action::ReadAppointment
                | Action::ChangeAppointment
                | Action::OpenConsultation
                | Action::JoinConsultation
                | Action::ReadRecord
                | Action::ReadProgress
        )
    }

    fn describe(self) -> &'static str {
        match self {
            Action::ReadUser => "reading this user",
            Action::UpdateUser => "changing this user",
            Action::EraseUser => "erasing this user",
            Action::ExportUser => "exporting this user's data",
            Action::ManageRoles => "changing roles",
            Action::ManageApiKeys => "managing API keys",
            Action::ReadCrisisMap => "reading the crisis map",
            Action::ReportIncident => "reporting incidents",
            Action::VerifyIncident => "verifying incidents",
            Action::ManageIncidents => "resolving, rejecting or assigning incidents",
            Action::ManageCrisisAssets => "managing resources, shelters and hazards",
            Action::ManageGeofences => "managing geofences",
            Action::RegisterVolunteer => "registering as a volunteer",
            Action::UpdateVolunteer => "updating this volunteer",
            Action::ViewResponders => "seeing responders' positions",
            Action::ManageProviderProfile => "managing provider profiles and slots",
            Action::SearchProviders => "searching providers",
            Action::BookAppointment => "booking appointments",
            Action::ReadAppointment => "reading this appointment",
            Action::ChangeAppointment => "changing this appointment",
            Action::OpenConsultation => "opening this consultation",
            Action::JoinConsultation => "joining this consultation",
            Action::ModerateConsultation => "moderating consultations",
            Action::ReadRecord => "reading this health record",
            Action::WriteRecord => "writing this health record",
            Action::ReportCase => "reporting surveillance cases",
            Action::ManageCourses => "managing courses and classes",
            Action::ReadCourses => "browsing courses",
            Action::Enroll => "enrolling in courses",
            Action::ReadProgress => "reading this enrollment",
            Action::JoinClass => "joining classes",
            Action::IssueAlert => "issuing alerts",
            Action::ReadAlertDeliveries => "reading alert deliveries",
            Action::SubscribeAlerts => "subscribing to alerts",
            Action::ApproveAlert => "approving alerts",
            Action::PreviewAlert => "previewing alert recipients",
        }
    }
}

/// The policy table: which roles may perform each action on anyone's resources.
pub const POLICY: &[(Action, &[Role])] = &[
    (Action::ReadUser, &[Role::Admin]),
    (Action::UpdateUser, &[Role::Admin]),
    (Action::EraseUser, &[Role::Admin]),
    (Action::ExportUser, &[Role::Admin]),
    (Action::ManageRoles, &[Role::Admin]),
    (Action::ManageApiKeys, &[Role::Admin]),
    (Action::ReadCrisisMap, &Role::ALL),
    (Action::ReportIncident, &Role::ALL),
    (
        Action::VerifyIncident,
        &[Role::Responder, Role::Coordinator, Role::Admin],
    ),
    (Action::ManageIncidents, &[Role::Coordinator, Role::Admin]),
    (
        Action::ManageCrisisAssets,
        &[Role::Coordinator, Role::Admin],
    ),
    (Action::ManageGeofences, &[Role::Coordinator, Role::Admin]),
    (
        Action::RegisterVolunteer,
        &[Role::Responder, Role::Coordinator, Role::Admin],
    ),
    (Action::UpdateVolunteer, &[Role::Coordinator, Role::Admin]),
    (Action::ViewResponders, &[Role::Coordinator, Role::Admin]),
    (
        Action::ManageProviderProfile,
        &[Role::Provider, Role::Admin],
    ),
    (Action::SearchProviders, &Role::ALL),
    (Action::BookAppointment, &[Role::Patient]),
    (Action::ReadAppointment, &[Role::Admin]),
    (Action::ChangeAppointment, &[Role::Admin]),
    (Action::OpenConsultation, &[Role::Admin]),
    // Only the appointment's two parties: no role opens another's consultation room.
    (Action::JoinConsultation, &[]),
    (Action::ModerateConsultation, &[Role::Provider, Role::Admin]),
    (Action::ReadRecord, &[Role::Admin]),
    (Action::WriteRecord, &[Role::Admin]),
    (Action::ReportCase, &[Role::Provider, Role::Admin]),
    (Action::ManageCourses, &[Role::Teacher, Role::Admin]),
    (Action::ReadCourses, &Role::ALL),
    (Action::Enroll, &[Role::Student]),
    (Action::ReadProgress, &[Role::Admin]),
    (
        Action::JoinClass,
        &[Role::Teacher, Role::Student, Role::Admin],
    ),
    (Action::IssueAlert, &[Role::AlertAuthority, Role::Admin]),
    (
        Action::ReadAlertDeliveries,
        &[Role::AlertAuthority, Role::Admin],
    ),
    (Action::SubscribeAlerts, &Role::ALL),
    // The second pair of eyes is another alert authority (the handler refuses the issuer).
    (Action::ApproveAlert, &[Role::AlertAuthority]),
    (Action::PreviewAlert, &[Role::AlertAuthority, Role::Admin]),
];

/// Whether any of `roles` may perform `action` (ownership aside).
pub fn allowed(roles: &[Role], action: Action) -> bool {
    POLICY
        .iter()
        .find(|(a, _)| *a == action)
        .is_some_and(|(_, allowed)| roles.iter().any(|r| allowed.contains(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_is_in_the_policy_table() {
        for action in Action::ALL {
            assert!(
                POLICY.iter().any(|(a, _)| *a == action),
                "{action:?} missing"
            );
        }
    }

    #[test]
    fn owners_act_on_their_own_resources_only() {
        let me = Principal::User {
            id: "u1".into(),
            roles: vec![Role::Patient],
        };
        assert!(me.authorize(Action::ReadUser, Some("u1")).is_ok());
        assert!(me.authorize(Action::ReadUser, Some("u2")).is_err());
        assert!(me.authorize(Action::ManageRoles, Some("u1")).is_err());
        let key = Principal::ApiKey {
            id: "k".into(),
            scope: "admin".into(),
        };
        assert!(key.authorize(Action::ManageRoles, Some("u1")).is_ok());
        let gw = Principal::ApiKey {
            id: "k".into(),
            scope: "gateway".into(),
        };
        assert!(gw.authorize(Action::ReadUser, Some("u1")).is_err());
    }
}
