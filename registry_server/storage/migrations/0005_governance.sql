-- Governance: gate policies per model and target, promotion requests and their approvals,
-- model cards, and named aliases. Every change here is audited (history rows, events).

-- One policy per (model, target); target is a stage name or an alias name.
CREATE TABLE gate_policies (
    model      text        NOT NULL REFERENCES models (name) ON DELETE CASCADE,
    target     text        NOT NULL,
    policy     jsonb       NOT NULL,
    updated_by text        NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, target)
);

CREATE TABLE gate_policy_history (
    id         bigserial PRIMARY KEY,
    model      text        NOT NULL,
    target     text        NOT NULL,
    before     jsonb,
    after      jsonb,
    actor      text        NOT NULL,
    sequence   bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gate_policy_history_model ON gate_policy_history (model, id DESC);

CREATE TABLE promotion_requests (
    id                 bigserial PRIMARY KEY,
    model              text        NOT NULL REFERENCES models (name) ON DELETE CASCADE,
    version            bigint      NOT NULL,
    target             text        NOT NULL,
    state              text        NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'approved', 'rejected', 'expired', 'superseded')),
    requester          text        NOT NULL,
    reason             text        NOT NULL DEFAULT '',
    required_approvals int         NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    closed_at          timestamptz
);
-- At most one pending request per model and target: a newer one supersedes it.
CREATE UNIQUE INDEX promotion_requests_one_pending ON promotion_requests (model, target) WHERE state = 'pending';
CREATE INDEX promotion_requests_model ON promotion_requests (model, id DESC);

CREATE TABLE promotion_approvals (
    request    bigint      NOT NULL REFERENCES promotion_requests (id) ON DELETE CASCADE,
    principal  text        NOT NULL,
    approved   boolean     NOT NULL,
    reason     text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request, principal)
);

CREATE TABLE model_cards (
    model      text        NOT NULL,
    version    bigint      NOT NULL,
    card       jsonb       NOT NULL DEFAULT '{}',
    status     text        NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'pending_review', 'approved')),
    updated_by text        NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version),
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version) ON DELETE CASCADE
);

CREATE TABLE model_aliases (
    model      text        NOT NULL REFERENCES models (name) ON DELETE CASCADE,
    alias      text        NOT NULL,
    version    bigint      NOT NULL,
    protected  boolean     NOT NULL DEFAULT false,
    updated_by text        NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
);
CREATE INDEX model_aliases_version ON model_aliases (model, version);

CREATE TABLE alias_history (
    id           bigserial PRIMARY KEY,
    model        text        NOT NULL,
    alias        text        NOT NULL,
    from_version bigint      NOT NULL DEFAULT 0,
    to_version   bigint      NOT NULL DEFAULT 0,
    actor        text        NOT NULL,
    reason       text        NOT NULL DEFAULT '',
    sequence     bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alias_history_model ON alias_history (model, id DESC);
