//! Roles of platform users and grants inside SFU rooms.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A platform role, carried in the `roles` claim of access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Receives care: books appointments, joins consultations, owns a health record.
    Patient,
    /// Gives care: publishes availability, runs consultations, writes records.
    Provider,
    /// Enrols in courses and attends live classes.
    Student,
    /// Creates courses and runs live classes.
    Teacher,
    /// Field responder: reports and verifies incidents, moves on the crisis map.
    Responder,
    /// Crisis coordinator: triages incidents, assigns responders and resources.
    Coordinator,
    /// May issue, update and cancel CAP alerts.
    AlertAuthority,
    /// Administers users, roles and API keys.
    Admin,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 8] = [
        Role::Patient,
        Role::Provider,
        Role::Student,
        Role::Teacher,
        Role::Responder,
        Role::Coordinator,
        Role::AlertAuthority,
        Role::Admin,
    ];

    /// The roles a user may pick when registering; the others are granted by an admin.
    pub const SELF_SERVICE: [Role; 3] = [Role::Patient, Role::Student, Role::Responder];

    /// The wire name (`alert_authority`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Provider => "provider",
            Role::Student => "student",
            Role::Teacher => "teacher",
            Role::Responder => "responder",
            Role::Coordinator => "coordinator",
            Role::AlertAuthority => "alert_authority",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`"))
    }
}

/// What a room token lets its holder do inside one SFU room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// Send audio, video and data.
    Publish,
    /// Receive the room's tracks.
    Subscribe,
    /// Moderate: admit from the waiting room, grant publish, remove participants.
    Admin,
}

impl FromStr for Grant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "publish" => Ok(Grant::Publish),
            "subscribe" => Ok(Grant::Subscribe),
            "admin" => Ok(Grant::Admin),
            other => Err(format!(
                "unknown grant `{other}` (publish, subscribe, admin)"
            )),
        }
    }
}

/// The two kinds of SFU room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// Private consultation, 2–8 participants, with a waiting room.
    Consultation,
    /// Live class: few publishers, many subscribers, raise-hand to publish.
    Class,
}

impl FromStr for RoomKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "consultation" => Ok(RoomKind::Consultation),
            "class" => Ok(RoomKind::Class),
            other => Err(format!("unknown room kind `{other}` (consultation, class)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip_through_serde_and_from_str() {
        for role in Role::ALL {
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("superuser".parse::<Role>().is_err());
    }

    #[test]
    fn grants_and_room_kinds_parse() {
        assert_eq!("publish".parse::<Grant>().unwrap(), Grant::Publish);
        assert!("write".parse::<Grant>().is_err());
        assert_eq!("class".parse::<RoomKind>().unwrap(), RoomKind::Class);
        assert!("webinar".parse::<RoomKind>().is_err());
    }
}
