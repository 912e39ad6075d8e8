-- Ingest of external CAP ATOM feeds (SQLite).
--
-- `alert_feeds`: per feed URL, the validators of the last full answer (ETag, Last-Modified)
-- for conditional polling, and the last poll's time and error.
-- `alert_ingest_entries`: feed entries already handled (feed, entry id, entry updated), so
-- a restart or a repeated poll fetches nothing again.
-- `alert_ingest`: one row per CAP alert read from a feed, unique by CAP identifier, sender
-- and sent instant (Unix ms): `outcome` is `issued` (re-broadcast: `alert_id` is the
-- issued alert), `ignored` (sender not on the allowlist: kept here, never broadcast),
-- `duplicate` (this server had it already) or `rejected` (invalid CAP, unknown
-- references; `detail` says why, the triple may be unknown).
CREATE TABLE alert_feeds (
    url            TEXT PRIMARY KEY,
    etag           TEXT,
    last_modified  TEXT,
    polled_at      INTEGER,
    last_error     TEXT
);

CREATE TABLE alert_ingest_entries (
    feed_url       TEXT NOT NULL,
    entry_id       TEXT NOT NULL,
    entry_updated  TEXT NOT NULL,
    seen_at        INTEGER NOT NULL,
    PRIMARY KEY (feed_url, entry_id, entry_updated)
);

CREATE TABLE alert_ingest (
    id          TEXT PRIMARY KEY,
    feed_url    TEXT NOT NULL,
    entry_id    TEXT NOT NULL,
    cap_url     TEXT,
    identifier  TEXT,
    sender      TEXT,
    sent_at     INTEGER,
    outcome     TEXT NOT NULL,
    alert_id    TEXT,
    detail      TEXT,
    cap_xml     TEXT,
    created_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX alert_ingest_triple ON alert_ingest(identifier, sender, sent_at);
CREATE INDEX alert_ingest_created ON alert_ingest(created_at, id);
