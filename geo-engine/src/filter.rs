//! Attribute filters shared by every query.

use crate::coord::Timestamp;
use crate::object::{Attributes, Kind, KindSet, Severity, Status, StatusSet};

/// Which objects a query may return, by attributes. [`Default`] matches everything.
///
/// A criterion about an attribute an object does not have excludes the object: with
/// `min_severity` set, responders (which have no severity) never match; with a status set
/// other than [`StatusSet::ALL`], only incidents can match.
///
/// ```
/// use nexus_geo::{Filter, Kind, KindSet, Severity, StatusSet, Timestamp};
/// let f = Filter::default()
///     .kinds(KindSet::only(Kind::Incident))
///     .type_name("flood")
///     .min_severity(Severity::new(3)?)
///     .statuses(StatusSet::OPEN)
///     .since(Timestamp(1_700_000_000_000));
/// # let _ = f;
/// # Ok::<(), nexus_geo::GeoError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Kinds to return.
    pub kinds: KindSet,
    /// Exact type string (see [`Attributes::type_name`]).
    pub type_name: Option<String>,
    /// Lowest severity to return.
    pub min_severity: Option<Severity>,
    /// Incident statuses to return.
    pub statuses: StatusSet,
    /// Earliest time (inclusive), see [`Attributes::time`].
    pub since: Option<Timestamp>,
    /// Latest time (inclusive).
    pub until: Option<Timestamp>,
}

impl Filter {
    /// Restricts kinds.
    pub fn kinds(mut self, kinds: KindSet) -> Self {
        self.kinds = kinds;
        self
    }

    /// Restricts the type string.
    pub fn type_name(mut self, type_name: impl Into<String>) -> Self {
        self.type_name = Some(type_name.into());
        self
    }

    /// Restricts to severity `min` and above.
    pub fn min_severity(mut self, min: Severity) -> Self {
        self.min_severity = Some(min);
        self
    }

    /// Restricts incident statuses.
    pub fn statuses(mut self, statuses: StatusSet) -> Self {
        self.statuses = statuses;
        self
    }

    /// Restricts to objects whose time is `since` or later.
    pub fn since(mut self, since: Timestamp) -> Self {
        self.since = Some(since);
        self
    }

    /// Restricts to objects whose time is `until` or earlier.
    pub fn until(mut self, until: Timestamp) -> Self {
        self.until = Some(until);
        self
    }

    /// Whether `attrs` pass every criterion.
    pub fn matches(&self, attrs: &Attributes) -> bool {
        let prepared = Prepared::new(self);
        prepared.pass_tags(&Tags::of(attrs)) && prepared.confirm(attrs)
    }
}

/// The filterable attributes of an object, copied into its R-tree entry so that filters run
/// on the entry without touching the object (a cache miss per candidate). The type string
/// is kept as a hash: an equal hash is necessary for a type match and is confirmed on the
/// object itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tags {
    kind: Kind,
    severity: Option<Severity>,
    status: Option<Status>,
    time: Timestamp,
    type_hash: u32,
}

impl Tags {
    pub(crate) fn of(attrs: &Attributes) -> Self {
        Self {
            kind: attrs.kind(),
            severity: attrs.severity(),
            status: attrs.status(),
            time: attrs.time(),
            type_hash: type_hash(attrs.type_name()),
        }
    }
}

/// 32-bit FNV-1a.
fn type_hash(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A [`Filter`] ready to run against [`Tags`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prepared<'f> {
    filter: &'f Filter,
    type_hash: Option<u32>,
}

impl<'f> Prepared<'f> {
    pub(crate) fn new(filter: &'f Filter) -> Self {
        Self {
            filter,
            type_hash: filter.type_name.as_deref().map(type_hash),
        }
    }

    /// Every criterion, with the type compared by hash only.
    pub(crate) fn pass_tags(&self, t: &Tags) -> bool {
        let f = self.filter;
        if !f.kinds.contains(t.kind) {
            return false;
        }
        if self.type_hash.is_some_and(|h| h != t.type_hash) {
            return false;
        }
        if let Some(min) = f.min_severity
            && t.severity.is_none_or(|s| s < min)
        {
            return false;
        }
        if !f.statuses.is_all() && t.status.is_none_or(|s| !f.statuses.contains(s)) {
            return false;
        }
        !(f.since.is_some_and(|since| t.time < since) || f.until.is_some_and(|u| t.time > u))
    }

    /// Whether [`Prepared::confirm`] has anything to check.
    pub(crate) fn needs_confirm(&self) -> bool {
        self.filter.type_name.is_some()
    }

    /// The exact type comparison, for objects whose tags passed.
    pub(crate) fn confirm(&self, attrs: &Attributes) -> bool {
        self.filter
            .type_name
            .as_deref()
            .is_none_or(|t| attrs.type_name() == t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{Incident, Responder};

    fn incident(sev: u8, status: Status, t: i64) -> Attributes {
        Attributes::Incident(Incident {
            incident_type: "fire".into(),
            severity: Severity::new(sev).unwrap(),
            status,
            reported_at: Timestamp(t),
        })
    }

    #[test]
    fn each_criterion_excludes() {
        let a = incident(3, Status::Reported, 100);
        assert!(Filter::default().matches(&a));
        assert!(
            !Filter::default()
                .kinds(KindSet::only(Kind::Hazard))
                .matches(&a)
        );
        assert!(!Filter::default().type_name("flood").matches(&a));
        assert!(Filter::default().type_name("fire").matches(&a));
        assert!(
            !Filter::default()
                .min_severity(Severity::new(4).unwrap())
                .matches(&a)
        );
        assert!(
            Filter::default()
                .min_severity(Severity::new(3).unwrap())
                .matches(&a)
        );
        assert!(
            !Filter::default()
                .statuses(StatusSet::only(Status::Verified))
                .matches(&a)
        );
        assert!(!Filter::default().since(Timestamp(101)).matches(&a));
        assert!(!Filter::default().until(Timestamp(99)).matches(&a));
        assert!(
            Filter::default()
                .since(Timestamp(100))
                .until(Timestamp(100))
                .matches(&a)
        );
    }

    #[test]
    fn missing_attributes_exclude() {
        let r = Attributes::Responder(Responder {
            role: "medic".into(),
            updated_at: Timestamp(0),
        });
        assert!(
            !Filter::default()
                .min_severity(Severity::new(1).unwrap())
                .matches(&r)
        );
        assert!(!Filter::default().statuses(StatusSet::OPEN).matches(&r));
    }
}
