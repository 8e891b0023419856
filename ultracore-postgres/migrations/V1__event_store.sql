-- UltraCore event store, version 1.
--
-- uc_events is the log. `position` is assigned by the single writer (the engine) and checked
-- under a transaction-scoped advisory lock, so positions are gapless and commit-ordered: a
-- reader that follows `position > last_seen` never skips an event that commits late.
-- Nothing is ever updated or deleted here. Event ids are derived from (log id, position), so
-- the primary key already makes them unique; no second index is paid for on every insert.
CREATE TABLE uc_events (
    position        BIGINT      NOT NULL,
    stream          TEXT        NOT NULL,
    stream_version  BIGINT      NOT NULL,
    event_id        TEXT        NOT NULL,
    event_type      TEXT        NOT NULL,
    schema_version  SMALLINT    NOT NULL,
    -- Transaction and valid time in microseconds since the Unix epoch, exactly as in the log.
    recorded_at     BIGINT      NOT NULL,
    effective_at    BIGINT      NOT NULL,
    correlation_id  TEXT,
    causation_id    TEXT,
    actor           TEXT,
    -- JSON, not JSONB: stored as written (validated, not converted), which halves the cost
    -- of an insert; SQL can still read it with the json operators.
    payload         JSON        NOT NULL,
    CONSTRAINT uc_events_pkey PRIMARY KEY (position),
    CONSTRAINT uc_events_stream_version UNIQUE (stream, stream_version),
    CONSTRAINT uc_events_position_positive CHECK (position > 0),
    CONSTRAINT uc_events_version_positive CHECK (stream_version > 0)
);

-- Snapshots: a disposable cache of folded state (losing one only costs a longer replay).
CREATE TABLE uc_snapshots (
    scope               TEXT        NOT NULL PRIMARY KEY,
    position            BIGINT      NOT NULL,
    schema_fingerprint  BIGINT      NOT NULL,
    bytes               BYTEA       NOT NULL,
    saved_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);
