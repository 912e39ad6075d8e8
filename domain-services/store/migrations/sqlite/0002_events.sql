-- Event consumers (SQLite): durable cursors over the outbox (the in-process bus's log),
-- processed event ids per consumer (idempotency) and dead letters.
CREATE TABLE consumer_cursors (
    consumer     TEXT PRIMARY KEY,
    position     INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE consumer_processed (
    consumer      TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    processed_at  INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX consumer_processed_at ON consumer_processed(consumer, processed_at);

CREATE TABLE dead_letters (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    topic        TEXT NOT NULL,
    event_key    TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    error        TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX dead_letters_consumer ON dead_letters(consumer, seq);
