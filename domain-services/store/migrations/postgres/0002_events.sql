-- Event consumers (PostgreSQL): durable cursors over the outbox (the in-process bus's log),
-- processed event ids per consumer (idempotency) and dead letters.
CREATE TABLE consumer_cursors (
    consumer     TEXT PRIMARY KEY,
    position     BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE consumer_processed (
    consumer      TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    processed_at  BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX consumer_processed_at ON consumer_processed(consumer, processed_at);

CREATE TABLE dead_letters (
    seq          BIGSERIAL PRIMARY KEY,
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    topic        TEXT NOT NULL,
    event_key    TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    error        TEXT NOT NULL,
    attempts     BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX dead_letters_consumer ON dead_letters(consumer, seq);
