-- entries is the hash chain: one row per recorder.Entry, in sequence order. A row is
-- never updated; retention deletes a prefix of the chain and appends a checkpoint.
-- The columns after hash copy the Entry's index fields so that an Entry reads back
-- whole; verification trusts none of them.
-- Types are plain so that a PostgreSQL schema can mirror this one column for column
-- (INTEGER -> BIGINT, BLOB -> BYTEA).
CREATE TABLE entries (
    seq         INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,
    exchange_id TEXT    NOT NULL,
    at_ns       INTEGER NOT NULL,
    data        BLOB    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    route       TEXT    NOT NULL,
    decision    TEXT    NOT NULL,
    method      TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    status      INTEGER NOT NULL
);

-- exchanges indexes the chain for listing: one row per exchange id, made by its first
-- request entry and completed by its first response entry. It is derived data: the
-- chain is the record.
CREATE TABLE exchanges (
    id           TEXT    PRIMARY KEY,
    received_ns  INTEGER NOT NULL,
    subject      TEXT    NOT NULL,
    route        TEXT    NOT NULL,
    decision     TEXT    NOT NULL,
    status       INTEGER,
    request_seq  INTEGER NOT NULL,
    response_seq INTEGER
) WITHOUT ROWID;

-- WITHOUT ROWID: the table is its primary key's B-tree, one B-tree fewer to write per
-- exchange. List pages newest first by id; each common equality filter has an index
-- ending in id so a filtered page is read in order without a sort. A status filter walks
-- the id order instead: an index on it would cost every completion an index update.
CREATE INDEX exchanges_received ON exchanges (received_ns);
CREATE INDEX exchanges_subject ON exchanges (subject, id);
CREATE INDEX exchanges_route ON exchanges (route, id);
CREATE INDEX exchanges_decision ON exchanges (decision, id);
