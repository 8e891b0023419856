-- UltraCore read models, version 2: the bitemporal query side, projected from uc_events by
-- the `Projector` (see docs/ARCHITECTURE.md, "ultracore-postgres").
--
-- Rules every table here follows:
-- * Nothing is ever deleted. A new version closes the transaction period of the one it
--   supersedes (`superseded_position`/`transaction_to` set once, never changed again).
-- * Transaction time is the log position of the event that recorded a row, with that event's
--   `recorded_at`; valid time is the event's `effective_at`. Times are microseconds since the
--   Unix epoch (as in uc_events); the `tstzrange` periods are derived from them.
-- * Money is in minor units of the row's currency, as NUMERIC (exact, no float anywhere).
-- * The checkpoint is written in the same transaction as the rows of the events it covers.

-- Exclusion constraints mixing `=` on text with `&&` on ranges need btree_gist's operator
-- classes. Installed once per database, in `public`, so dropping one UltraCore schema never
-- drops the operator classes another schema's constraints use.
CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;

-- Microseconds since the epoch as a timestamptz. Exact (whole seconds, then microseconds), and
-- immutable in fact: a pure-microsecond interval does not depend on the session's time zone.
CREATE FUNCTION uc_ts(micros BIGINT) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT to_timestamp((micros / 1000000)::double precision)
             + (micros % 1000000) * interval '1 microsecond' $$;

-- Which projection has applied the log up to which position.
CREATE TABLE uc_projection_checkpoints (
    projection   TEXT        NOT NULL PRIMARY KEY,
    position     BIGINT      NOT NULL CHECK (position >= 0),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per projected log position: transaction time and what happened there. Resolves
-- `known_at = time` to a position, and names the cause of each restatement change.
CREATE TABLE uc_transactions (
    position     BIGINT NOT NULL PRIMARY KEY,
    recorded_at  BIGINT NOT NULL,
    event_type   TEXT   NOT NULL,
    entry_id     TEXT
);
CREATE INDEX uc_transactions_recorded_at ON uc_transactions (recorded_at);

-- Accounts, bitemporally: each row is the account's attributes over a valid period as believed
-- over a transaction period. A status or metadata change at valid time t closes the rows in
-- force from t on and inserts their replacements (the part before t unchanged, the part from t
-- changed), so for one account no two rows ever overlap on both axes.
CREATE TABLE uc_accounts (
    account_id           TEXT    NOT NULL,
    -- The account stream's version after the event that wrote this row.
    version              BIGINT  NOT NULL,
    currency             TEXT    NOT NULL,
    kind                 TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    owner                TEXT,
    branch               TEXT,
    constraints          JSON    NOT NULL,
    metadata             JSON    NOT NULL,
    valid_from           BIGINT  NOT NULL,
    valid_to             BIGINT,
    transaction_from     BIGINT  NOT NULL,
    transaction_to       BIGINT,
    recorded_position    BIGINT  NOT NULL,
    superseded_position  BIGINT,
    event_id             TEXT    NOT NULL,
    valid tstzrange GENERATED ALWAYS AS (tstzrange(uc_ts(valid_from), uc_ts(valid_to), '[)')) STORED,
    tx    tstzrange GENERATED ALWAYS AS (tstzrange(uc_ts(transaction_from), uc_ts(transaction_to), '[)')) STORED,
    CONSTRAINT uc_accounts_pkey PRIMARY KEY (account_id, recorded_position, valid_from),
    CONSTRAINT uc_accounts_no_overlap EXCLUDE USING gist (account_id WITH =, valid WITH &&, tx WITH &&),
    CONSTRAINT uc_accounts_valid_nonempty CHECK (valid_to IS NULL OR valid_to > valid_from),
    CONSTRAINT uc_accounts_tx_nonempty CHECK (transaction_to IS NULL OR transaction_to > transaction_from)
);

-- Entry versions: one row per version of an entry (the original, then one per correction),
-- believed over [recorded_at, superseded_at). At any transaction time at most one version of
-- an entry is in force.
CREATE TABLE uc_entries (
    entry_id             TEXT    NOT NULL,
    version              INTEGER NOT NULL,
    -- posted | reversal | hold
    kind                 TEXT    NOT NULL,
    effective_at         BIGINT  NOT NULL,
    -- The version's postings as core serialises them (what a correction or a hold resolution
    -- needs to know about the version it acts on).
    postings             JSON    NOT NULL,
    reversal_of          TEXT,
    hold_amount_minor    NUMERIC,
    expires_at           BIGINT,
    correction_id        TEXT,
    reason               TEXT,
    cancelled            BOOLEAN NOT NULL,
    recorded_position    BIGINT  NOT NULL,
    recorded_at          BIGINT  NOT NULL,
    superseded_position  BIGINT,
    superseded_at        BIGINT,
    event_id             TEXT    NOT NULL,
    tx tstzrange GENERATED ALWAYS AS (tstzrange(uc_ts(recorded_at), uc_ts(superseded_at), '[)')) STORED,
    CONSTRAINT uc_entries_pkey PRIMARY KEY (entry_id, version),
    CONSTRAINT uc_entries_tx_forward CHECK (superseded_position IS NULL OR superseded_position > recorded_position)
);
-- At most one version of an entry is open (in force now). With periods closed only by the
-- next version (projector) this is the "no two versions believed at once" invariant; a btree,
-- not an `EXCLUDE USING gist (entry_id WITH =, tx WITH &&)`: on the hottest table (one row per
-- transfer) the GiST exclusion made each 2,000-row COPY take ~0.45 s and capped projection
-- at ~7,000 events/s (docs/BENCHMARKS.md). uc_accounts keeps its GiST exclusion.
CREATE UNIQUE INDEX uc_entries_one_open_version ON uc_entries (entry_id)
    WHERE superseded_position IS NULL;

-- Posting versions: every change an entry version, a hold or a hold resolution makes to an
-- account, believed over [recorded_position, superseded_position). The effect on the account:
--   not pending: net (credits - debits) += amount if credit, -= amount if debit;
--   pending:     pending_debits (direction debit) or pending_credits (credit) += amount.
-- `amount_minor` is negative only for the end of a reservation (role hold_end, hold_release).
-- A correction closes the superseded version's rows; a hold resolution closes the hold's
-- end-of-reservation rows (the reservation now ends at the resolution instead).
-- Partitioned by range of recorded position (commit order, so by transaction time); the
-- projector creates partitions ahead of the log.
CREATE TABLE uc_postings (
    recorded_position    BIGINT   NOT NULL,
    leg                  SMALLINT NOT NULL,
    account_id           TEXT     NOT NULL,
    entry_id             TEXT     NOT NULL,
    entry_version        INTEGER  NOT NULL,
    -- posting | hold_start | hold_end | hold_release | hold_post
    role                 TEXT     NOT NULL,
    direction            TEXT     NOT NULL CHECK (direction IN ('debit', 'credit')),
    pending              BOOLEAN  NOT NULL,
    amount_minor         NUMERIC  NOT NULL,
    currency             TEXT     NOT NULL,
    effective_at         BIGINT   NOT NULL,
    recorded_at          BIGINT   NOT NULL,
    superseded_position  BIGINT,
    superseded_at        BIGINT,
    CONSTRAINT uc_postings_pkey PRIMARY KEY (recorded_position, leg),
    CONSTRAINT uc_postings_tx_forward CHECK (superseded_position IS NULL OR superseded_position > recorded_position)
) PARTITION BY RANGE (recorded_position);
-- As-of sums per account over a range of recorded positions (covering: index-only scans).
CREATE INDEX uc_postings_account_recorded ON uc_postings (account_id, recorded_position)
    INCLUDE (effective_at, direction, pending, amount_minor);
-- The same over superseded positions; only superseded rows are in it.
CREATE INDEX uc_postings_account_superseded ON uc_postings (account_id, superseded_position)
    INCLUDE (effective_at, direction, pending, amount_minor)
    WHERE superseded_position IS NOT NULL;
-- Statements: an account's rows over a valid-time period.
CREATE INDEX uc_postings_account_effective ON uc_postings (account_id, effective_at);

-- Partial sums for as-of balances without scanning an account's history (the design of
-- core's bitemporal index, in SQL). Each account's changes (a row recorded: +, a row superseded:
-- -) are cut, in log order, into level-0 blocks of about `BLOCK_CHANGES` changes, each a range
-- of positions (first_position, last_position]; `FANOUT` consecutive level-i blocks make a
-- level-(i+1) block. A block's sums hold, per valid instant, the cumulative deltas of its
-- changes in valid-time order. Balance at (V, P) = a few blocks' "last sum at or before V"
-- (one index probe each) + the changes after the last complete level-0 block up to P.
CREATE TABLE uc_balance_blocks (
    account_id      TEXT     NOT NULL,
    level           SMALLINT NOT NULL,
    block           BIGINT   NOT NULL,
    first_position  BIGINT   NOT NULL,
    last_position   BIGINT   NOT NULL,
    CONSTRAINT uc_balance_blocks_pkey PRIMARY KEY (account_id, level, block),
    CONSTRAINT uc_balance_blocks_range CHECK (last_position > first_position)
);
CREATE INDEX uc_balance_blocks_last ON uc_balance_blocks (account_id, level, last_position);

CREATE TABLE uc_balance_sums (
    account_id      TEXT     NOT NULL,
    level           SMALLINT NOT NULL,
    block           BIGINT   NOT NULL,
    effective_at    BIGINT   NOT NULL,
    posted          NUMERIC  NOT NULL,
    pending_debit   NUMERIC  NOT NULL,
    pending_credit  NUMERIC  NOT NULL,
    CONSTRAINT uc_balance_sums_pkey PRIMARY KEY (account_id, level, block, effective_at)
        INCLUDE (posted, pending_debit, pending_credit)
);

-- The open (not yet summarised) part of each account's changes: after `open_from`.
CREATE TABLE uc_balance_heads (
    account_id    TEXT   NOT NULL PRIMARY KEY,
    open_from     BIGINT NOT NULL,
    open_changes  BIGINT NOT NULL,
    blocks        BIGINT NOT NULL
);
