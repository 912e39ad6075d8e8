-- CAP alerting, third step (PostgreSQL): a subscription's last known device location and
-- its WebSocket preference.
--
-- `device_lat`/`device_lon`/`device_at`: where the subscriber's device last said it was
-- (Unix ms); overwritten by each report, never accumulated, and targeting ignores it once
-- older than the configured age. `websocket`: 1 when a subscription owned by a user is
-- delivered to that user's personal gateway channel (`user#<id>`).
ALTER TABLE alert_subscriptions ADD COLUMN device_lat DOUBLE PRECISION;
ALTER TABLE alert_subscriptions ADD COLUMN device_lon DOUBLE PRECISION;
ALTER TABLE alert_subscriptions ADD COLUMN device_at BIGINT;
ALTER TABLE alert_subscriptions ADD COLUMN websocket BIGINT NOT NULL DEFAULT 1;
