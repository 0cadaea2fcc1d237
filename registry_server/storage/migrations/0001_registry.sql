-- Models, versions, stage history, blobs and the event outbox.

CREATE TABLE models (
    name               text PRIMARY KEY,
    description        text        NOT NULL DEFAULT '',
    project            text        NOT NULL DEFAULT '',
    model_type         text        NOT NULL DEFAULT '',
    default_config     jsonb       NOT NULL DEFAULT '{}',
    tags               jsonb       NOT NULL DEFAULT '{}',
    -- Per-model version counter: UPDATE ... SET last_version = last_version + 1 holds the
    -- row lock to commit, so numbers are race-free and gap-free (never max()+1).
    last_version       bigint      NOT NULL DEFAULT 0,
    -- Hot pointer to the production version, kept in the promote transaction.
    production_version bigint,
    created_by         text        NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX models_project_name ON models (project, name);

-- One row per stored blob (content-addressed by sha256).
CREATE TABLE blobs (
    sha256     text PRIMARY KEY,
    size_bytes bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE model_versions (
    model          text        NOT NULL REFERENCES models (name) ON DELETE CASCADE,
    version        bigint      NOT NULL,
    stage          text        NOT NULL DEFAULT 'none'
                   CHECK (stage IN ('none', 'staging', 'production', 'archived')),
    format         text        NOT NULL,
    model_type     text        NOT NULL DEFAULT '',
    config         jsonb       NOT NULL DEFAULT '{}',
    metrics        jsonb       NOT NULL DEFAULT '{}',
    metric_history jsonb       NOT NULL DEFAULT '{}',
    dataset_id     text        NOT NULL DEFAULT '',
    dataset_hash   text        NOT NULL DEFAULT '',
    parent_version bigint      NOT NULL DEFAULT 0,
    run_id         text        NOT NULL DEFAULT '',
    code_revision  text        NOT NULL DEFAULT '',
    tags           jsonb       NOT NULL DEFAULT '{}',
    description    text        NOT NULL DEFAULT '',
    created_by     text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    sha256         text        NOT NULL REFERENCES blobs (sha256),
    size_bytes     bigint      NOT NULL,
    filename       text        NOT NULL DEFAULT '',
    request_id     text,
    PRIMARY KEY (model, version)
);
-- Idempotent registration: one version per (model, request id).
CREATE UNIQUE INDEX model_versions_request_id ON model_versions (model, request_id)
    WHERE request_id IS NOT NULL;
-- Never two production versions of one model.
CREATE UNIQUE INDEX model_versions_one_production ON model_versions (model)
    WHERE stage = 'production';
-- List by stage, newest first.
CREATE INDEX model_versions_stage ON model_versions (model, stage, version DESC);
-- Blob reference counting.
CREATE INDEX model_versions_sha256 ON model_versions (sha256);

CREATE TABLE stage_transitions (
    id         bigserial PRIMARY KEY,
    model      text        NOT NULL,
    version    bigint      NOT NULL,
    from_stage text        NOT NULL,
    to_stage   text        NOT NULL,
    actor      text        NOT NULL,
    reason     text        NOT NULL DEFAULT '',
    sequence   bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stage_transitions_model ON stage_transitions (model, id DESC);

-- The outbox. One row per change, written in the change's transaction. `sequence` comes
-- from event_sequence under its row lock, held until commit, so sequences are gap-free
-- and commit-ordered: a reader that has seen n never later finds a committed row below n.
CREATE TABLE event_sequence (
    id   int PRIMARY KEY CHECK (id = 1),
    last bigint NOT NULL
);
INSERT INTO event_sequence (id, last) VALUES (1, 0);

CREATE TABLE events (
    sequence   bigint PRIMARY KEY,
    type       text        NOT NULL,
    model      text        NOT NULL,
    version    bigint      NOT NULL DEFAULT 0,
    from_stage text        NOT NULL DEFAULT '',
    to_stage   text        NOT NULL DEFAULT '',
    actor      text        NOT NULL DEFAULT '',
    reason     text        NOT NULL DEFAULT '',
    details    jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX events_model_sequence ON events (model, sequence);
CREATE INDEX events_created_at ON events (created_at);
