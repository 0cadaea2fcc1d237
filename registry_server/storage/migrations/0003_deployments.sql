-- Deployments: what agents should serve per model. The stable version is
-- models.production_version; this row adds the canary, its weight, the revision (etag) and
-- the canary policy. Every change appends a deployment_history row.

CREATE TABLE deployments (
    model          text PRIMARY KEY REFERENCES models (name) ON DELETE CASCADE,
    canary_version bigint      NOT NULL DEFAULT 0,
    canary_weight  int         NOT NULL DEFAULT 0 CHECK (canary_weight BETWEEN 0 AND 100),
    revision       bigint      NOT NULL DEFAULT 0,
    policy         jsonb       NOT NULL DEFAULT '{}',
    updated_by     text        NOT NULL DEFAULT '',
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE deployment_history (
    id         bigserial PRIMARY KEY,
    model      text        NOT NULL,
    revision   bigint      NOT NULL,
    action     text        NOT NULL,
    actor      text        NOT NULL,
    reason     text        NOT NULL DEFAULT '',
    before     jsonb       NOT NULL,
    after      jsonb       NOT NULL,
    sequence   bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deployment_history_model ON deployment_history (model, id DESC);
