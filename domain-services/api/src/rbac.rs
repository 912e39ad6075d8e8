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
}

impl Action {
    /// Every action, for the policy matrix test.
    pub const ALL: [Action; 6] = [
        Action::ReadUser,
        Action::UpdateUser,
        Action::EraseUser,
        Action::ExportUser,
        Action::ManageRoles,
        Action::ManageApiKeys,
    ];

    /// Whether the owner of the resource may do this regardless of role.
    pub fn owner_allowed(self) -> bool {
        matches!(
            self,
            Action::ReadUser | Action::UpdateUser | Action::EraseUser | Action::ExportUser
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
