-- +goose NO TRANSACTION
-- The relay's record of what the event stream holds (see the relay package).
-- A row is marked once the stream has stored it: published_at and stream_seq,
-- the stream sequence it was stored at. relay_stream_mark is the highest
-- sequence whose rows are all marked; the stream's messages after it are read
-- back and marked before the relay backfills or polls, so a relay that died
-- between an acknowledgement and its mark repeats nothing. The CDC relay
-- marks in the background (it finds its place from the stream's last message).
-- Unmarked rows are what a relay backfills; an outbox prune deletes marked
-- rows only.
--
-- Without a transaction, so that the index is built concurrently and the
-- outbox stays writable; each statement is idempotent.

-- +goose Up
ALTER TABLE outbox_events ADD COLUMN IF NOT EXISTS stream_seq bigint;

CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_events_unpublished ON outbox_events (seq) WHERE published_at IS NULL;

CREATE TABLE IF NOT EXISTS relay_stream_mark (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_seq   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per replication slot the relay created: the snapshot exported with
-- the slot. Exactly the transactions visible in it are not streamed by the
-- slot, so they are what the relay backfills before it streams. backfilled_seq
-- is the stream's last sequence once that was done: the messages after it are
-- the slot's own, so only their commit positions say where the slot resumes
-- (after a PostgreSQL failover, LSNs may repeat those of an older slot).
CREATE TABLE IF NOT EXISTS relay_slots (
    slot_name      text PRIMARY KEY,
    snapshot       pg_snapshot NOT NULL,
    consistent_lsn pg_lsn NOT NULL,
    backfilled_seq bigint,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE IF EXISTS relay_slots;
DROP TABLE IF EXISTS relay_stream_mark;
DROP INDEX CONCURRENTLY IF EXISTS outbox_events_unpublished;
ALTER TABLE outbox_events DROP COLUMN IF EXISTS stream_seq;
