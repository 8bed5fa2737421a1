-- +goose Up
CREATE TABLE products (
    sku         text PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL,
    category    text NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    attributes  jsonb NOT NULL DEFAULT '{}',
    version     bigint NOT NULL CHECK (version >= 1),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Stock per SKU. The CHECKs restate the domain invariants so that no bug in an
-- adapter can store negative availability.
CREATE TABLE inventory (
    sku        text PRIMARY KEY REFERENCES products (sku),
    on_hand    bigint NOT NULL CHECK (on_hand >= 0),
    reserved   bigint NOT NULL CHECK (reserved >= 0),
    version    bigint NOT NULL CHECK (version >= 0),
    updated_at timestamptz NOT NULL,
    CHECK (on_hand >= reserved)
);

CREATE TABLE orders (
    id             uuid PRIMARY KEY,
    user_id        text NOT NULL,
    status         text NOT NULL CHECK (status IN ('placed', 'paid', 'shipped', 'delivered', 'cancelled')),
    total_cents    bigint NOT NULL CHECK (total_cents >= 0),
    payment_method text NOT NULL,
    version        bigint NOT NULL CHECK (version >= 1),
    placed_at      timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX orders_user_placed ON orders (user_id, placed_at DESC);

CREATE TABLE order_items (
    order_id    uuid NOT NULL REFERENCES orders (id),
    line_no     int NOT NULL,
    sku         text NOT NULL REFERENCES products (sku),
    name        text NOT NULL,
    category    text NOT NULL,
    quantity    bigint NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- The outbox is the durable event log: rows are written in the same
-- transaction as the state they describe and kept until a retention policy
-- prunes them. seq orders rows by insertion; txid lets the polling relay see
-- which transactions can still commit below its position; published_at is set
-- by the polling relay only (CDC mode reads the WAL instead).
CREATE TABLE outbox_events (
    seq               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                uuid NOT NULL UNIQUE,
    aggregate_type    text NOT NULL,
    aggregate_id      text NOT NULL,
    aggregate_version bigint NOT NULL,
    event_type        text NOT NULL,
    schema_version    int NOT NULL,
    payload           jsonb NOT NULL,
    headers           jsonb NOT NULL DEFAULT '{}',
    occurred_at       timestamptz NOT NULL,
    txid              xid8 NOT NULL DEFAULT pg_current_xact_id(),
    published_at      timestamptz,
    UNIQUE (aggregate_type, aggregate_id, aggregate_version)
);

-- A command's response, stored in the command's own transaction so that a
-- replay of the same key returns exactly what the first attempt returned.
CREATE TABLE idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    result       jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE outbox_events;
DROP TABLE order_items;
DROP TABLE orders;
DROP TABLE inventory;
DROP TABLE products;
