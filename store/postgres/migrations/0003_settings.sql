-- settings holds a few values the replicas sharing the database compare: one row per
-- name. config_fingerprint is a digest of what every replica's configuration must agree
-- on (the masking hash key, keyed so the digest does not reveal it, and the approval
-- settings); a replica whose digest differs warns at start (see keyhole serve).
CREATE TABLE settings (
    name       TEXT   COLLATE "C" PRIMARY KEY,
    value      TEXT   NOT NULL,
    updated_ns BIGINT NOT NULL
);
