-- What one row of uc_events costs to insert, by payload type and index (docs/BENCHMARKS.md,
-- "PostgreSQL event store"). Run: psql -h 127.0.0.1 -U postgres -d postgres -f benches/sql/pg_insert_cost.sql
-- Each INSERT copies the same 100,000 transfer-shaped rows; divide its time by 100,000.
\timing on
DROP SCHEMA IF EXISTS uc_insert_cost CASCADE;
CREATE SCHEMA uc_insert_cost;
SET search_path = uc_insert_cost;
CREATE TABLE src AS
SELECT g AS position,
       'entry:t' || (g * 7919 % 1000003) AS stream,
       1::bigint AS v,
       ('{"EntryPosted":{"id":"t' || g || '","postings":[{"account":"a12","direction":"debit","amount":{"value":"12.34","currency":"USD"}},{"account":"a99","direction":"credit","amount":{"value":"12.34","currency":"USD"}}],"effective_at":"2026-01-01T00:00:00Z","metadata":{},"reversal_of":null,"fingerprint":"1234567890123"}}')::text AS payload
FROM generate_series(1, 100000) g;
CREATE TABLE jsonb_two_unique (position bigint PRIMARY KEY, stream text NOT NULL, v bigint NOT NULL, event_id text NOT NULL UNIQUE, payload jsonb NOT NULL, UNIQUE (stream, v));
CREATE TABLE json_stream_unique (position bigint PRIMARY KEY, stream text NOT NULL, v bigint NOT NULL, payload json NOT NULL, UNIQUE (stream, v));
CREATE TABLE json_no_index (position bigint PRIMARY KEY, stream text NOT NULL, v bigint NOT NULL, payload json NOT NULL);
\echo jsonb payload, unique (stream, version) and unique event_id (the first design)
INSERT INTO jsonb_two_unique SELECT position, stream, v, lpad(position::text, 32, '0'), payload::jsonb FROM src;
\echo json payload, unique (stream, version) (the design in use)
INSERT INTO json_stream_unique SELECT position, stream, v, payload::json FROM src;
\echo json payload, primary key only
INSERT INTO json_no_index SELECT position, stream, v, payload::json FROM src;
DROP SCHEMA uc_insert_cost CASCADE;
