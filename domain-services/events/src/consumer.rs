//! The delivery steps every bus shares: skip what was handled, call the handler, record the
//! id (and position), or dead-letter with the error.

use crate::bus::{Consumer, Scope};
use crate::envelope::CloudEvent;
use crate::error::{EventError, HandlerError};
use nexus_store::{NewEvent, Store};
use tokio_util::sync::CancellationToken;

/// What happened to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler succeeded and the id was recorded.
    Handled,
    /// The consumer had already handled this id; the handler was not called.
    Duplicate,
    /// The handler failed on this attempt.
    Failed(HandlerError),
    /// Shutdown arrived while waiting to retry.
    Interrupted,
}

/// One attempt: skips a duplicate, otherwise calls the handler and records the id (and the
/// position, for the in-process bus's cursor) on success. A [`Scope::Node`] consumer records
/// nothing and skips nothing: its handler is idempotent by contract.
pub async fn attempt(
    store: &Store,
    consumer: &Consumer,
    event: &CloudEvent,
    position: Option<i64>,
) -> Result<Outcome, EventError> {
    if let Scope::Node { .. } = consumer.scope {
        return Ok(match consumer.handler.handle(event).await {
            Ok(()) => Outcome::Handled,
            Err(e) => Outcome::Failed(e),
        });
    }
    if store
        .consumer_is_processed(&consumer.name, &event.id)
        .await?
    {
        if let Some(p) = position {
            store
                .consumer_record(&consumer.name, &event.id, Some(p))
                .await?;
        }
        return Ok(Outcome::Duplicate);
    }
    match consumer.handler.handle(event).await {
        Ok(()) => {
            store
                .consumer_record(&consumer.name, &event.id, position)
                .await?;
            Ok(Outcome::Handled)
        }
        Err(e) => Ok(Outcome::Failed(e)),
    }
}

/// Delivers with in-place retries (backoff per the consumer's policy) and dead-letters the
/// event once the attempts are used up or the error is permanent. An event that cannot even
/// be decoded (`event` is `Err`) is dead-lettered at once. Returns the final outcome.
pub async fn deliver(
    store: &Store,
    consumer: &Consumer,
    raw: &NewEvent,
    event: Result<CloudEvent, EventError>,
    position: Option<i64>,
    shutdown: &CancellationToken,
) -> Result<Outcome, EventError> {
    let event = match event {
        Ok(e) => e,
        Err(e) => {
            let error = HandlerError::Permanent(e.to_string());
            dead_letter(store, consumer, raw, &error, 1, position).await?;
            return Ok(Outcome::Failed(error));
        }
    };
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt(store, consumer, &event, position).await? {
            Outcome::Failed(e) if e.is_permanent() || tries >= consumer.retry.max_attempts => {
                dead_letter(store, consumer, raw, &e, tries, position).await?;
                return Ok(Outcome::Failed(e));
            }
            Outcome::Failed(e) => {
                tracing::debug!(consumer = %consumer.name, id = %event.id, attempt = tries, error = %e, "handler failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(consumer.retry.backoff(tries)) => {}
                    () = shutdown.cancelled() => return Ok(Outcome::Interrupted),
                }
            }
            done => return Ok(done),
        }
    }
}

/// Records a dead letter for `consumer` with the handler's error.
pub async fn dead_letter(
    store: &Store,
    consumer: &Consumer,
    raw: &NewEvent,
    error: &HandlerError,
    attempts: u32,
    position: Option<i64>,
) -> Result<(), EventError> {
    tracing::warn!(consumer = %consumer.name, id = %raw.id, r#type = %raw.event_type, attempts, error = %error, "event dead-lettered");
    store
        .consumer_dead_letter(
            &consumer.name,
            raw,
            &error.to_string(),
            i64::from(attempts),
            position,
        )
        .await?;
    Ok(())
}
