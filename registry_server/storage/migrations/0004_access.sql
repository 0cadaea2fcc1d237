-- Identity and access: projects own models; principals authenticate with hashed tokens
-- and hold roles through role bindings. Events carry their project so watch streams can be
-- filtered to what the watcher may read; history rows name the token used.

CREATE TABLE projects (
    name        text PRIMARY KEY,
    description text        NOT NULL DEFAULT '',
    created_by  text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO projects (name, created_by) VALUES ('default', 'modelreg');
UPDATE models SET project = 'default' WHERE project = '';
INSERT INTO projects (name, created_by) SELECT DISTINCT project, 'modelreg' FROM models ON CONFLICT DO NOTHING;
ALTER TABLE models ALTER COLUMN project SET DEFAULT 'default';
-- A project that still owns models cannot be deleted.
ALTER TABLE models ADD CONSTRAINT models_project_fkey FOREIGN KEY (project) REFERENCES projects (name);

CREATE TABLE principals (
    name            text PRIMARY KEY,
    service_account boolean     NOT NULL DEFAULT false,
    created_by      text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Only the sha256 of a token's secret is stored (the secret has 256 random bits, so a fast
-- hash is enough: nothing to brute-force).
CREATE TABLE api_tokens (
    name         text PRIMARY KEY,
    principal    text        NOT NULL REFERENCES principals (name) ON DELETE CASCADE,
    hash         text        NOT NULL UNIQUE,
    created_by   text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_tokens_principal ON api_tokens (principal, name);

-- project '' is the global binding of `admin`; other roles name a project.
CREATE TABLE role_bindings (
    principal  text        NOT NULL REFERENCES principals (name) ON DELETE CASCADE,
    role       text        NOT NULL,
    project    text        NOT NULL,
    created_by text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, principal, role),
    CHECK ((role = 'admin') = (project = ''))
);

-- One row once the first admin token has been created: never bootstrap twice.
CREATE TABLE auth_bootstrap (
    id         int PRIMARY KEY CHECK (id = 1),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- NULL: an access event (or one whose model's project is unknown), which only admins see.
ALTER TABLE events ADD COLUMN project text;
UPDATE events e SET project = m.project FROM models m WHERE e.model = m.name;
UPDATE events SET project = 'default' WHERE project IS NULL AND model <> '';

ALTER TABLE stage_transitions
    ADD COLUMN token_name   text NOT NULL DEFAULT '',
    ADD COLUMN on_behalf_of text NOT NULL DEFAULT '';
ALTER TABLE deployment_history
    ADD COLUMN token_name   text NOT NULL DEFAULT '',
    ADD COLUMN on_behalf_of text NOT NULL DEFAULT '';
