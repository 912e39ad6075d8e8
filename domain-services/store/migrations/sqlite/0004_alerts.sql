-- CAP alerting (SQLite): issued alerts, alert subscriptions (who is where, reachable how) and
-- the durable per-recipient delivery queue.
--
-- An alert keeps its CAP XML and JSON forms as issued; `status` is the lifecycle state
-- (`active`, `superseded`, `cancelled`, `expired`), `cap_status` CAP's own `<status>`.
-- The CAP identifier/sender/sent triple is unique (`sent_at`: the instant, Unix ms).
-- `min_lon`..`max_lat` bound every area of the alert (targeting prefilter, geo-filtered
-- WebSocket publication); NULL when the alert has no shape.
CREATE TABLE alerts (
    id             TEXT PRIMARY KEY,
    identifier     TEXT NOT NULL,
    sender         TEXT NOT NULL,
    sent           TEXT NOT NULL,
    sent_at        INTEGER NOT NULL,
    cap_status     TEXT NOT NULL,
    msg_type       TEXT NOT NULL,
    status         TEXT NOT NULL,
    expires_at     INTEGER,
    min_lon        REAL,
    min_lat        REAL,
    max_lon        REAL,
    max_lat        REAL,
    cap_xml        TEXT NOT NULL,
    cap_json       TEXT NOT NULL,
    superseded_by  TEXT,
    created_by     TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE UNIQUE INDEX alerts_triple ON alerts(identifier, sender, sent_at);
CREATE INDEX alerts_status ON alerts(status, id);

-- Alert subscriptions: a location, channels and their addresses, a minimum severity.
CREATE TABLE alert_subscriptions (
    id            TEXT PRIMARY KEY,
    user_id       TEXT,
    lat           REAL NOT NULL,
    lon           REAL NOT NULL,
    language      TEXT,
    min_severity  TEXT,
    email         TEXT,
    phone         TEXT,
    push          TEXT,
    active        INTEGER NOT NULL DEFAULT 1,
    created_at    INTEGER NOT NULL
);
CREATE INDEX alert_subscriptions_location ON alert_subscriptions(lat, lon);
CREATE INDEX alert_subscriptions_user ON alert_subscriptions(user_id);

-- One row per (alert, recipient, channel): the idempotency key is the row id, and the
-- unique triple makes a second enqueue a no-op. `state`: queued, sending, delivered,
-- failed, expired; `attempt` counts send attempts; a `sending` row whose `lease_until`
-- passed belongs to a worker that died and is claimed again.
CREATE TABLE alert_deliveries (
    id               TEXT PRIMARY KEY,
    alert_id         TEXT NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    recipient_id     TEXT NOT NULL,
    channel          TEXT NOT NULL,
    address          TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_until      INTEGER,
    expires_at       INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX alert_deliveries_once ON alert_deliveries(alert_id, recipient_id, channel);
CREATE INDEX alert_deliveries_due ON alert_deliveries(state, next_attempt_at);
