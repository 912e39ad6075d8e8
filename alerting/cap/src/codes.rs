//! The CAP code lists (`status`, `msgType`, `scope`, `category`, `responseType`, `urgency`,
//! `severity`, `certainty`) and the protocol version.
//!
//! Each code list is a closed enum whose XML and JSON spelling is exactly the CAP code value
//! (`"Actual"`, `"CBRNE"`, `"AllClear"`, `"Very Likely"`). Every value of every CAP version is
//! representable, so a CAP 1.0 document parses into the same types; [`crate::validate_version`]
//! reports values that the document's own version does not define.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ValueError;

macro_rules! code_list {
    (
        $(#[$meta:meta])*
        $name:ident as $element:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value of the list, in the order the specification gives them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The CAP code value, as written in XML and JSON.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The CAP element name this list belongs to (for messages).
            pub const ELEMENT: &'static str = $element;

            const EXPECTED: &'static str = concat!($($text, ", "),+);
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ValueError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(ValueError::UnknownCode {
                        element: $element,
                        value: s.to_owned(),
                        expected: Self::EXPECTED.trim_end_matches(", "),
                    }),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

code_list! {
    /// `alert/status`: the appropriate handling of the alert message.
    Status as "status" {
        /// Actionable by all targeted recipients.
        Actual = "Actual",
        /// Actionable only by designated exercise participants.
        Exercise = "Exercise",
        /// For messages that support alert network internal functions.
        System = "System",
        /// Technical testing only; all recipients disregard.
        Test = "Test",
        /// A preliminary template or draft, not actionable in its current form (CAP 1.1+).
        Draft = "Draft",
    }
}

code_list! {
    /// `alert/msgType`: the nature of the alert message.
    MsgType as "msgType" {
        /// Initial information requiring attention by targeted recipients.
        Alert = "Alert",
        /// Updates and supersedes the earlier message(s) identified in `references`.
        Update = "Update",
        /// Cancels the earlier message(s) identified in `references`.
        Cancel = "Cancel",
        /// Acknowledges receipt and acceptance of the message(s) identified in `references`.
        Ack = "Ack",
        /// Indicates rejection of the message(s) identified in `references`.
        Error = "Error",
    }
}

code_list! {
    /// `alert/scope`: the intended distribution of the alert message.
    Scope as "scope" {
        /// For general dissemination to unrestricted audiences.
        Public = "Public",
        /// For dissemination only to users with a known operational requirement
        /// (see `restriction`).
        Restricted = "Restricted",
        /// For dissemination only to specified addresses (see `addresses`).
        Private = "Private",
    }
}

code_list! {
    /// `info/category`: the category of the subject event.
    Category as "category" {
        /// Geophysical (including landslide).
        Geo = "Geo",
        /// Meteorological (including flood).
        Met = "Met",
        /// General emergency and public safety.
        Safety = "Safety",
        /// Law enforcement, military, homeland and local/private security.
        Security = "Security",
        /// Rescue and recovery.
        Rescue = "Rescue",
        /// Fire suppression and rescue.
        Fire = "Fire",
        /// Medical and public health.
        Health = "Health",
        /// Pollution and other environmental.
        Env = "Env",
        /// Public and private transportation.
        Transport = "Transport",
        /// Utility, telecommunication, other non-transport infrastructure.
        Infra = "Infra",
        /// Chemical, biological, radiological, nuclear or high-yield explosive threat or
        /// attack (CAP 1.1+).
        Cbrne = "CBRNE",
        /// Other events.
        Other = "Other",
    }
}

code_list! {
    /// `info/responseType`: the recommended type of action (CAP 1.1+).
    ResponseType as "responseType" {
        /// Take shelter in place or per `instruction`.
        Shelter = "Shelter",
        /// Relocate as instructed in `instruction`.
        Evacuate = "Evacuate",
        /// Make preparations per `instruction`.
        Prepare = "Prepare",
        /// Execute a pre-planned activity identified in `instruction`.
        Execute = "Execute",
        /// Avoid the subject event as per `instruction` (CAP 1.2).
        Avoid = "Avoid",
        /// Attend to information sources as described in `instruction`.
        Monitor = "Monitor",
        /// Evaluate the information in this message (not for public warnings).
        Assess = "Assess",
        /// The subject event no longer poses a threat or concern (CAP 1.2).
        AllClear = "AllClear",
        /// No action recommended.
        None = "None",
    }
}

code_list! {
    /// `info/urgency`: the urgency of the subject event.
    Urgency as "urgency" {
        /// Responsive action should be taken immediately.
        Immediate = "Immediate",
        /// Responsive action should be taken soon (within the next hour).
        Expected = "Expected",
        /// Responsive action should be taken in the near future.
        Future = "Future",
        /// Responsive action is no longer required.
        Past = "Past",
        /// Urgency not known.
        Unknown = "Unknown",
    }
}

code_list! {
    /// `info/severity`: the severity of the subject event.
    Severity as "severity" {
        /// Extraordinary threat to life or property.
        Extreme = "Extreme",
        /// Significant threat to life or property.
        Severe = "Severe",
        /// Possible threat to life or property.
        Moderate = "Moderate",
        /// Minimal to no known threat to life or property.
        Minor = "Minor",
        /// Severity unknown.
        Unknown = "Unknown",
    }
}

code_list! {
    /// `info/certainty`: the certainty of the subject event.
    Certainty as "certainty" {
        /// Determined to have occurred or to be ongoing (CAP 1.1+).
        Observed = "Observed",
        /// CAP 1.0 only; later versions treat it as `Likely`.
        VeryLikely = "Very Likely",
        /// Likely (p > ~50%).
        Likely = "Likely",
        /// Possible but not likely (p <= ~50%).
        Possible = "Possible",
        /// Not expected to occur (p ~ 0).
        Unlikely = "Unlikely",
        /// Certainty unknown.
        Unknown = "Unknown",
    }
}

impl Severity {
    /// A rank for "minimum severity" filters: `Extreme` 4, `Severe` 3, `Moderate` 2,
    /// `Minor` 1, `Unknown` 0.
    pub const fn rank(self) -> u8 {
        match self {
            Severity::Extreme => 4,
            Severity::Severe => 3,
            Severity::Moderate => 2,
            Severity::Minor => 1,
            Severity::Unknown => 0,
        }
    }
}

/// A version of the Common Alerting Protocol, told apart by the XML namespace of `<alert>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CapVersion {
    /// CAP 1.0 (2004), namespace `http://www.incident.com/cap/1.0`.
    #[serde(rename = "1.0")]
    V1_0,
    /// CAP 1.1 (2005, errata 2007), namespace `urn:oasis:names:tc:emergency:cap:1.1`.
    #[serde(rename = "1.1")]
    V1_1,
    /// CAP 1.2 (2010), namespace `urn:oasis:names:tc:emergency:cap:1.2`.
    #[serde(rename = "1.2")]
    V1_2,
}

impl CapVersion {
    /// The XML namespace of this version's `<alert>` element.
    pub const fn namespace(self) -> &'static str {
        match self {
            CapVersion::V1_0 => "http://www.incident.com/cap/1.0",
            CapVersion::V1_1 => "urn:oasis:names:tc:emergency:cap:1.1",
            CapVersion::V1_2 => "urn:oasis:names:tc:emergency:cap:1.2",
        }
    }

    /// The version whose `<alert>` namespace is `namespace`, if any.
    pub fn from_namespace(namespace: &str) -> Option<CapVersion> {
        [CapVersion::V1_0, CapVersion::V1_1, CapVersion::V1_2]
            .into_iter()
            .find(|v| v.namespace() == namespace)
    }

    /// `"1.0"`, `"1.1"` or `"1.2"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CapVersion::V1_0 => "1.0",
            CapVersion::V1_1 => "1.1",
            CapVersion::V1_2 => "1.2",
        }
    }
}

impl fmt::Display for CapVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `version` defines this code value (the rest of the list is the same in every
/// version).
pub(crate) fn status_in(version: CapVersion, status: Status) -> bool {
    !(version == CapVersion::V1_0 && status == Status::Draft)
}

pub(crate) fn category_in(version: CapVersion, category: Category) -> bool {
    !(version == CapVersion::V1_0 && category == Category::Cbrne)
}

pub(crate) fn response_type_in(version: CapVersion, response: ResponseType) -> bool {
    match version {
        CapVersion::V1_0 => false,
        CapVersion::V1_1 => !matches!(response, ResponseType::Avoid | ResponseType::AllClear),
        CapVersion::V1_2 => true,
    }
}

pub(crate) fn certainty_in(version: CapVersion, certainty: Certainty) -> bool {
    match certainty {
        Certainty::Observed => version != CapVersion::V1_0,
        Certainty::VeryLikely => version == CapVersion::V1_0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_values_round_trip_through_their_text() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), *s);
        }
        for c in Category::ALL {
            assert_eq!(c.as_str().parse::<Category>().unwrap(), *c);
        }
        assert_eq!(
            "Very Likely".parse::<Certainty>().unwrap(),
            Certainty::VeryLikely
        );
        assert_eq!("CBRNE".parse::<Category>().unwrap(), Category::Cbrne);
    }

    #[test]
    fn unknown_code_names_the_element_and_the_choices() {
        let err = "actual".parse::<Status>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "'actual' is not a valid <status> value; expected one of Actual, Exercise, System, \
             Test, Draft"
        );
    }

    #[test]
    fn versions_know_their_namespaces() {
        for v in [CapVersion::V1_0, CapVersion::V1_1, CapVersion::V1_2] {
            assert_eq!(CapVersion::from_namespace(v.namespace()), Some(v));
        }
        assert_eq!(CapVersion::from_namespace("urn:x"), None);
    }

    #[test]
    fn version_membership_follows_the_schemas() {
        assert!(!status_in(CapVersion::V1_0, Status::Draft));
        assert!(status_in(CapVersion::V1_1, Status::Draft));
        assert!(!response_type_in(CapVersion::V1_1, ResponseType::AllClear));
        assert!(response_type_in(CapVersion::V1_1, ResponseType::Assess));
        assert!(certainty_in(CapVersion::V1_0, Certainty::VeryLikely));
        assert!(!certainty_in(CapVersion::V1_2, Certainty::VeryLikely));
        assert!(!certainty_in(CapVersion::V1_0, Certainty::Observed));
    }

    #[test]
    fn json_uses_the_cap_spelling() {
        assert_eq!(
            serde_json::to_string(&Certainty::VeryLikely).unwrap(),
            "\"Very Likely\""
        );
        assert_eq!(
            serde_json::from_str::<Category>("\"CBRNE\"").unwrap(),
            Category::Cbrne
        );
        assert!(serde_json::from_str::<Category>("\"cbrne\"").is_err());
        assert_eq!(serde_json::to_string(&CapVersion::V1_2).unwrap(), "\"1.2\"");
    }
}
