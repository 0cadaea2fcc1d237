-- Webhooks: outgoing HTTP endpoints fed from the event log, and one delivery row per
-- (webhook, event). (Issue 15 numbers this 0007; the lead renumbers at merge.)

CREATE TABLE webhooks (
    name          text PRIMARY KEY,
    project       text        NOT NULL,
    url           text        NOT NULL,
    event_types   text[]      NOT NULL,
    models        text[]      NOT NULL DEFAULT '{}',
    -- The signing secret, encrypted with the server's webhook key (Fernet); never returned.
    secret        bytea       NOT NULL,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Events up to this sequence are queued as deliveries (or skipped as not matching).
    cursor        bigint      NOT NULL,
    -- The replica delivering for this webhook, until lease_expires (one replica at a time).
    lease_owner   text,
    lease_expires timestamptz
);
CREATE INDEX webhooks_project ON webhooks (project, name);

CREATE TABLE webhook_deliveries (
    id              text PRIMARY KEY,
    webhook         text        NOT NULL REFERENCES webhooks (name) ON DELETE CASCADE,
    sequence        bigint      NOT NULL,
    event_type      text        NOT NULL,
    -- The event as delivered (proto JSON), so a delivery survives the event's retention.
    event           jsonb       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        int         NOT NULL DEFAULT 0,
    redeliveries    int         NOT NULL DEFAULT 0,
    last_status     int         NOT NULL DEFAULT 0,
    last_error      text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- The first attempt of the current round (the retry window counts from here).
    first_attempt_at timestamptz,
    last_attempt_at timestamptz,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (webhook, sequence)
);
-- The worker's "oldest pending first", and ListDeliveries (newest first, failed only).
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook, sequence) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (webhook, state, sequence DESC);
