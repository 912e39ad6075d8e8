//! Shared state of the API handlers.

use crate::alert_targets::AlertTargets;
use crate::alerts::AlertSettings;
use crate::geo_service::GeoService;
use crate::geocodes::GeocodeTable;
use crate::mail::Mailer;
use crate::realtime::Realtime;
use crate::rooms::Rooms;
use nexus_auth::TokenKeys;
use nexus_store::Store;
use std::sync::Arc;

/// Lifetimes and limits of the credentials the API issues.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Access-token lifetime, seconds.
    pub access_ttl_secs: u64,
    /// Refresh-token lifetime, seconds.
    pub refresh_ttl_secs: u64,
    /// Lifetime of e-mail verification and password-reset links, seconds.
    pub one_time_ttl_secs: u64,
    /// Gateway connection-token lifetime, seconds.
    pub realtime_ttl_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 30 * 24 * 3600,
            one_time_ttl_secs: 24 * 3600,
            realtime_ttl_secs: 3600,
        }
    }
}

/// What every handler can reach; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    /// The durable store.
    pub store: Store,
    /// Token signing and verification keys.
    pub keys: TokenKeys,
    /// Credential lifetimes.
    pub auth: Arc<AuthSettings>,
    /// Outgoing e-mail.
    pub mailer: Arc<dyn Mailer>,
    /// The crisis map's geo index (a task; this is its handle).
    pub geo: GeoService,
    /// Publishes to the realtime gateway's channels.
    pub realtime: Arc<dyn Realtime>,
    /// Moderates SFU rooms (admit, close) for consultations.
    pub rooms: Arc<dyn Rooms>,
    /// Alerting policy: approval, who hears non-Actual alerts, push endpoints, links.
    pub alerting: Arc<AlertSettings>,
    /// CAP geocode → polygons, for alert targeting (empty unless configured).
    pub geocodes: Arc<GeocodeTable>,
    /// Where alert subscribers are (a task owning a geo index; this is its handle).
    pub targets: AlertTargets,
}
