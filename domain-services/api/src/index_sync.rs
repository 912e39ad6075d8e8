//! Keeps this node's geo index in step with writes that other nodes took.
//!
//! The node that takes a crisis write updates its own index in the request, right after the
//! commit, so its reads see the change at once. Every other node learns of it from the event
//! bus: [`GeoIndexSync`] runs as a [`Scope::Node`](nexus_events::Scope::Node) consumer on each
//! node, and for every crisis event about an indexed object (incidents, resources, shelters,
//! hazards, volunteers and their moves, geofences) it reads the object back from the store —
//! the source of truth — and puts it into the index. Events therefore carry ids, not
//! positions: a volunteer's position is personal data and stays out of the log.
//!
//! Applying an event is idempotent: the index ignores an object version older than the one
//! it holds, a fence it already has is left alone, and a missing row removes the object.
//! Fence transitions computed here are dropped: the node that took the write recorded them as
//! `geofence.triggered` events and published them, once.

use crate::crisis::record_to_object;
use crate::geo_service::{FenceRegion, GeoService, GeoServiceError};
use crate::geofences::spec_to_fence;
use nexus_events::{CloudEvent, EventType, Handler, HandlerError};
use nexus_geo::GeoError;
use nexus_store::Store;

/// Consumer name of [`GeoIndexSync`]. Every node runs it (node scope), so the name keys only
/// its dead letters.
pub const GEO_INDEX_SYNC: &str = "geo-index";

/// The event handler that applies other nodes' crisis writes to this node's geo index.
#[derive(Debug, Clone)]
pub struct GeoIndexSync {
    store: Store,
    geo: GeoService,
}

impl GeoIndexSync {
    /// A handler reading from `store` into `geo`.
    pub fn new(store: Store, geo: GeoService) -> Self {
        GeoIndexSync { store, geo }
    }

    /// Puts the stored object `id` into the index, or takes it out when it is gone.
    async fn object(&self, id: &str) -> Result<(), HandlerError> {
        match self.store.crisis_object(id).await.map_err(transient)? {
            Some(rec) => {
                let object = record_to_object(&rec).map_err(|e| {
                    HandlerError::Permanent(format!("stored object {id} cannot be indexed: {e}"))
                })?;
                // Transitions were recorded by the node that took the write.
                let _ = self
                    .geo
                    .upsert(id, object, rec.updated_at)
                    .await
                    .map_err(index_error)?;
            }
            None => {
                self.geo.remove(id).await.map_err(index_error)?;
            }
        }
        Ok(())
    }

    /// Adds the stored geofence `id` to the index (once), or removes it when it is gone.
    async fn fence(&self, id: &str) -> Result<(), HandlerError> {
        let Some(rec) = self.store.geofence(id).await.map_err(transient)? else {
            self.geo.remove_fence(id).await.map_err(index_error)?;
            return Ok(());
        };
        let spec = spec_to_fence(&rec.spec).map_err(|e| {
            HandlerError::Permanent(format!("stored geofence {id} cannot be indexed: {e:?}"))
        })?;
        if let FenceRegion::Around { anchor, .. } = &spec.region {
            // The anchor's own event is keyed by the anchor and may come later.
            self.object(anchor).await?;
        }
        match self.geo.add_fence(id, spec).await {
            Ok(()) | Err(GeoServiceError::Geo(GeoError::DuplicateFence(_))) => Ok(()),
            Err(e) => Err(index_error(e)),
        }
    }
}

#[async_trait::async_trait]
impl Handler for GeoIndexSync {
    async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        let Some(kind) = event.kind() else {
            return Ok(());
        };
        match kind {
            EventType::IncidentReported
            | EventType::IncidentVerified
            | EventType::IncidentUpdated
            | EventType::IncidentResolved
            | EventType::ResourceRegistered
            | EventType::ShelterOpened
            | EventType::HazardDeclared
            | EventType::VolunteerRegistered
            | EventType::VolunteerMoved => self.object(event.key()).await,
            EventType::GeofenceCreated => self.fence(event.key()).await,
            EventType::GeofenceDeleted => {
                self.geo
                    .remove_fence(event.key())
                    .await
                    .map_err(index_error)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn transient(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(e.to_string())
}

fn index_error(e: GeoServiceError) -> HandlerError {
    match e {
        // The anchor of a fence may not be indexed yet: try again.
        GeoServiceError::Geo(GeoError::UnknownObject(_)) | GeoServiceError::Stopped => transient(e),
        GeoServiceError::Geo(_) => HandlerError::Permanent(e.to_string()),
    }
}
