-- Signatures on versions: the inputs and outputs (name, element type, shape with symbolic
-- axes) of a version's model, as registry_server/domain/signatures.py's JSON form. NULL while
-- unknown: a version registered before this migration, or a YOLO .pt no agent has loaded yet.
-- Written at registration or once by an agent's report; never replaced.
ALTER TABLE model_versions ADD COLUMN signature jsonb;
