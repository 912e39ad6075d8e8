//! Converting CAP 1.0 and 1.1 alerts to CAP 1.2.

use crate::codes::{CapVersion, Category, Certainty, Scope};
use crate::model::Alert;

/// The MIME type given to CAP 1.0/1.1 resources that have none (required in 1.2).
pub const DEFAULT_MIME_TYPE: &str = "application/octet-stream";

/// Converts an alert read from a `from` document to CAP 1.2.
///
/// What changes, and why:
/// - `password` (CAP 1.0) is dropped: CAP 1.1 removed it.
/// - fractional seconds are cut from every date-time: CAP 1.2 does not allow them.
/// - a missing `scope` (optional in 1.0) becomes `Restricted` when there is a `restriction`,
///   `Private` when there are `addresses`, else `Public`.
/// - an info block without `category` (optional in 1.0) gets `Other`.
/// - `certainty` `Very Likely` (1.0) becomes `Likely`, as CAP 1.1 and 1.2 direct.
/// - a resource without `mimeType` gets `application/octet-stream`.
///
/// CAP 1.0 `references` that are bare identifiers cannot be completed (their sender and sent
/// time are unknown); they are kept and 1.2 validation reports them. A 1.2 alert is returned
/// unchanged.
pub fn to_cap12(mut alert: Alert, from: CapVersion) -> Alert {
    if from == CapVersion::V1_2 {
        return alert;
    }
    alert.password = None;
    alert.sent = alert.sent.truncate_fraction();
    if alert.scope.is_none() {
        alert.scope = Some(if alert.restriction.is_some() {
            Scope::Restricted
        } else if alert.addresses.is_some() {
            Scope::Private
        } else {
            Scope::Public
        });
    }
    for info in &mut alert.info {
        if info.category.is_empty() {
            info.category.push(Category::Other);
        }
        if info.certainty == Certainty::VeryLikely {
            info.certainty = Certainty::Likely;
        }
        for t in [&mut info.effective, &mut info.onset, &mut info.expires]
            .into_iter()
            .flatten()
        {
            *t = t.truncate_fraction();
        }
        for r in &mut info.resource {
            if r.mime_type.is_none() {
                r.mime_type = Some(DEFAULT_MIME_TYPE.to_owned());
            }
        }
    }
    alert
}
