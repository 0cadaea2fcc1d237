-- Serving agents and what each reports it serves. A report replaces the agent's rows
-- (one transaction), so agent_model_status is always one consistent observation.

CREATE TABLE agents (
    agent_id    text PRIMARY KEY,
    node        text        NOT NULL DEFAULT '',
    address     text        NOT NULL DEFAULT '',
    healthy     boolean     NOT NULL DEFAULT false,
    started_at  timestamptz,
    reported_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agent_model_status (
    agent_id         text             NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    model            text             NOT NULL,
    version          bigint           NOT NULL,
    sha256           text             NOT NULL DEFAULT '',
    state            text             NOT NULL
                     CHECK (state IN ('loading', 'serving', 'failed', 'unloading')),
    error            text             NOT NULL DEFAULT '',
    desired          boolean          NOT NULL DEFAULT false,
    attempts         int              NOT NULL DEFAULT 0,
    download_seconds double precision NOT NULL DEFAULT 0,
    load_seconds     double precision NOT NULL DEFAULT 0,
    request_count    bigint           NOT NULL DEFAULT 0,
    error_count      bigint           NOT NULL DEFAULT 0,
    p95_latency_ms   double precision NOT NULL DEFAULT 0,
    state_time       timestamptz,
    PRIMARY KEY (agent_id, model, version)
);
-- "Which agents follow this model?"
CREATE INDEX agent_model_status_model ON agent_model_status (model, agent_id);

-- Agents that follow a model but hold no version yet still need a row per model.
CREATE TABLE agent_models (
    agent_id text NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    model    text NOT NULL,
    PRIMARY KEY (agent_id, model)
);
CREATE INDEX agent_models_model ON agent_models (model, agent_id);
