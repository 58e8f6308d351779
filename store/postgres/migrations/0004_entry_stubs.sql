-- chain_v is the chain format an entry was sealed with (recorder.ChainVersion): 1 for the
-- entries written before this migration and by a replica that predates it, whose hash
-- covers data itself; 2 hashes data through its SHA-256. data_sha256 is that SHA-256
-- (hex) once per-route retention has removed data (left empty): the entry is a stub,
-- still verifiable, vouched for by a later expiry entry.
ALTER TABLE entries ADD COLUMN chain_v SMALLINT NOT NULL DEFAULT 1, ADD COLUMN data_sha256 TEXT;
