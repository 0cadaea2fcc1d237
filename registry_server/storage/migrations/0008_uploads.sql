-- Who owns the uploads in progress, so a crashed server's temporary uploads are removed soon
-- and a live replica's never are (registry_server/storage/uploads.py).
-- (Numbered 0008 in the issue; renumbered to follow the migrations on this branch.)

-- One row per running server process. Its id is part of the name of every temporary upload
-- it writes (local tmp/upload-<owner>-<uuid>, S3 tmp/<owner>/<uuid>). It is alive while it
-- renews heartbeat_at; on the machine it ran on, also while its process runs.
CREATE TABLE upload_owners (
    id              text             PRIMARY KEY,
    host            text             NOT NULL,
    pid             integer          NOT NULL,
    -- Equal non-empty values share one process-id space (boot id and pid namespace).
    machine         text             NOT NULL DEFAULT '',
    -- The process's start time (seconds since the epoch), against pid reuse.
    process_started double precision NOT NULL,
    started_at      timestamptz      NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz      NOT NULL DEFAULT now()
);

-- S3 multipart uploads staged under their final key sha256/<hex>, whose name carries no owner.
CREATE TABLE upload_multiparts (
    upload_id  text        PRIMARY KEY,
    owner      text        NOT NULL,
    key        text        NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX upload_multiparts_owner ON upload_multiparts (owner);
