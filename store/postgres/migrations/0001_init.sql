-- The PostgreSQL schema mirrors store/sqlite's (migrations 0001 to 0004 there) column for
-- column: INTEGER -> BIGINT, BLOB -> BYTEA, the 0/1 closed flag -> BOOLEAN. Times are Unix
-- nanoseconds, as there, so that an Entry reads back exactly as it was hashed. Ids are
-- COLLATE "C": pages are ordered and cut by id byte by byte, as SQLite compares them,
-- whatever collation the database was created with.

-- entries is the hash chain: one row per recorder.Entry, in sequence order. A row is never
-- updated; retention deletes a prefix of the chain and appends a checkpoint. The columns
-- after hash copy the Entry's index fields; verification trusts none of them.
CREATE TABLE entries (
    seq         BIGINT PRIMARY KEY,
    kind        TEXT   NOT NULL,
    exchange_id TEXT   NOT NULL,
    at_ns       BIGINT NOT NULL,
    data        BYTEA  NOT NULL,
    prev_hash   TEXT   NOT NULL,
    hash        TEXT   NOT NULL,
    subject     TEXT   NOT NULL,
    route       TEXT   NOT NULL,
    decision    TEXT   NOT NULL,
    method      TEXT   NOT NULL,
    path        TEXT   NOT NULL,
    status      BIGINT NOT NULL,
    tool        TEXT   NOT NULL DEFAULT ''
);

-- chain_head is the one row every appending transaction locks (SELECT ... FOR UPDATE):
-- it serialises appends from every replica, so the chain stays one line, and it holds the
-- sequence number and hash of the last entry, so an append does not search entries for it.
-- seq 0 and the genesis hash until the first entry.
CREATE TABLE chain_head (
    one  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    seq  BIGINT  NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO chain_head (one, seq, hash)
VALUES (TRUE, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- exchanges indexes the chain for listing: one row per exchange id, made by its first
-- request entry and completed by its first response entry. It is derived data: the chain
-- is the record. List pages newest first by id; each equality filter has an index ending
-- in id.
CREATE TABLE exchanges (
    id           TEXT   COLLATE "C" PRIMARY KEY,
    received_ns  BIGINT NOT NULL,
    subject      TEXT   NOT NULL,
    route        TEXT   NOT NULL,
    decision     TEXT   NOT NULL,
    status       BIGINT,
    request_seq  BIGINT NOT NULL,
    response_seq BIGINT,
    tool         TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX exchanges_received ON exchanges (received_ns);
CREATE INDEX exchanges_subject ON exchanges (subject, id);
CREATE INDEX exchanges_route ON exchanges (route, id);
CREATE INDEX exchanges_decision ON exchanges (decision, id);
CREATE INDEX exchanges_tool ON exchanges (tool, id);

-- approvals holds requests waiting for, or given, a human's decision: one row per
-- approvals.Approval, as in store/sqlite. closed is TRUE once the binding is free for a
-- new approval of the same request. body is BYTEA because a redacted body need not be
-- valid UTF-8. requester_groups and requester_scopes are JSON arrays of strings ('[]'
-- when empty); headers is the JSON object of the request headers the approval covers.
CREATE TABLE approvals (
    id                  TEXT    COLLATE "C" PRIMARY KEY,
    binding             TEXT    NOT NULL,
    route               TEXT    NOT NULL,
    method              TEXT    NOT NULL,
    path                TEXT    NOT NULL,
    query               TEXT    NOT NULL,
    headers             TEXT    NOT NULL,
    body                BYTEA   NOT NULL,
    body_size           BIGINT  NOT NULL,
    body_hash           TEXT    NOT NULL,
    requester_issuer    TEXT    NOT NULL,
    requester_subject   TEXT    NOT NULL,
    requester_client_id TEXT    NOT NULL,
    requester_groups    TEXT    NOT NULL,
    requester_scopes    TEXT    NOT NULL,
    reason              TEXT    NOT NULL,
    exchange_id         TEXT    NOT NULL,
    created_ns          BIGINT  NOT NULL,
    expires_ns          BIGINT  NOT NULL,
    min_approvals       BIGINT  NOT NULL,
    state               TEXT    NOT NULL,
    closed              BOOLEAN NOT NULL,
    decided_ns          BIGINT,
    used_ns             BIGINT,
    used_by             TEXT    NOT NULL,
    tool                TEXT    NOT NULL DEFAULT ''
);
-- At most one open approval per binding, whoever writes.
CREATE UNIQUE INDEX approvals_open_binding ON approvals (binding) WHERE NOT closed;
CREATE INDEX approvals_state ON approvals (state, id);
CREATE INDEX approvals_route ON approvals (route, id);
CREATE INDEX approvals_subject ON approvals (requester_subject, id);
CREATE INDEX approvals_due ON approvals (state, closed, expires_ns);

-- approval_decisions holds each approver's verdict, seq numbering them 1, 2, ... within
-- their approval. An approver (by subject, whatever the issuer) decides an approval once.
CREATE TABLE approval_decisions (
    approval_id        TEXT   COLLATE "C" NOT NULL REFERENCES approvals (id) ON DELETE CASCADE,
    seq                BIGINT NOT NULL,
    approver_issuer    TEXT   NOT NULL,
    approver_subject   TEXT   NOT NULL,
    approver_client_id TEXT   NOT NULL,
    approver_groups    TEXT   NOT NULL,
    approver_scopes    TEXT   NOT NULL,
    verdict            TEXT   NOT NULL,
    comment            TEXT   NOT NULL,
    at_ns              BIGINT NOT NULL,
    -- how the approver decided (approvals.Decision.Via): "api" or "console"
    via                TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (approval_id, seq),
    UNIQUE (approval_id, approver_subject)
);

-- probe is the row Probe and Sync update: a synchronously committed write that changes
-- nothing a reader sees.
CREATE TABLE probe (
    one       BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    probed_ns BIGINT  NOT NULL
);
INSERT INTO probe (one, probed_ns) VALUES (TRUE, 0);
