-- CAP alerting, second step (sqlite): the approval of an alert by a second alert authority,
-- and the lookup of subscriptions by phone number (an SMS reply STOP ends them).
--
-- An alert waiting for approval has `status = 'pending'`; it supersedes nothing and is
-- delivered to nobody until `approved_by` (a different authority) approves it.
ALTER TABLE alerts ADD COLUMN approved_by TEXT;
ALTER TABLE alerts ADD COLUMN approved_at INTEGER;
CREATE INDEX alert_subscriptions_phone ON alert_subscriptions(phone);
