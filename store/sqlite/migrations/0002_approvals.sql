-- approvals holds requests waiting for, or given, a human's decision: one row per
-- approvals.Approval. A row is created Pending and open (closed = 0); decisions move
-- it to approved or denied, a request consumes an approved one (used, closed), and
-- expiry moves pending and approved ones to expired. closed is 1 once the binding is
-- free for a new approval of the same request.
-- body is BLOB because a redacted body need not be valid UTF-8, which a
-- PostgreSQL TEXT column would refuse. requester_groups and requester_scopes are JSON
-- arrays of strings ('[]' when empty); headers is the JSON object of the request
-- headers the approval covers. decided_ns and used_ns are NULL until then.
-- Types are plain so that a PostgreSQL schema can mirror this one column for column
-- (INTEGER -> BIGINT, BLOB -> BYTEA), the partial index included.
CREATE TABLE approvals (
    id                  TEXT    PRIMARY KEY,
    binding             TEXT    NOT NULL,
    route               TEXT    NOT NULL,
    method              TEXT    NOT NULL,
    path                TEXT    NOT NULL,
    query               TEXT    NOT NULL,
    headers             TEXT    NOT NULL,
    body                BLOB    NOT NULL,
    body_size           INTEGER NOT NULL,
    body_hash           TEXT    NOT NULL,
    requester_issuer    TEXT    NOT NULL,
    requester_subject   TEXT    NOT NULL,
    requester_client_id TEXT    NOT NULL,
    requester_groups    TEXT    NOT NULL,
    requester_scopes    TEXT    NOT NULL,
    reason              TEXT    NOT NULL,
    exchange_id         TEXT    NOT NULL,
    created_ns          INTEGER NOT NULL,
    expires_ns          INTEGER NOT NULL,
    min_approvals       INTEGER NOT NULL,
    state               TEXT    NOT NULL,
    closed              INTEGER NOT NULL,
    decided_ns          INTEGER,
    used_ns             INTEGER,
    used_by             TEXT    NOT NULL
);

-- At most one open approval per binding: a second request for the same approval
-- finds the first rather than asking the approvers twice. CreateApproval checks
-- first and returns ErrOpen; the index is what holds if anything else writes.
CREATE UNIQUE INDEX approvals_open_binding ON approvals (binding) WHERE closed = 0;

-- List pages newest first by id; each equality filter has an index ending in id.
CREATE INDEX approvals_state ON approvals (state, id);
CREATE INDEX approvals_route ON approvals (route, id);
CREATE INDEX approvals_subject ON approvals (requester_subject, id);
-- Expiry and the count of pending approvals look for open rows by state and time.
CREATE INDEX approvals_due ON approvals (state, closed, expires_ns);

-- approval_decisions holds each approver's verdict, seq numbering them 1, 2, ... within
-- their approval in the order the store accepted them. An approver (by subject, whatever
-- the issuer: one person known to two issuers is still one person) decides an approval once. approver_groups and approver_scopes are JSON
-- arrays like the requester's.
CREATE TABLE approval_decisions (
    approval_id        TEXT    NOT NULL REFERENCES approvals (id) ON DELETE CASCADE,
    seq                INTEGER NOT NULL,
    approver_issuer    TEXT    NOT NULL,
    approver_subject   TEXT    NOT NULL,
    approver_client_id TEXT    NOT NULL,
    approver_groups    TEXT    NOT NULL,
    approver_scopes    TEXT    NOT NULL,
    verdict            TEXT    NOT NULL,
    comment            TEXT    NOT NULL,
    at_ns              INTEGER NOT NULL,
    PRIMARY KEY (approval_id, seq),
    UNIQUE (approval_id, approver_subject)
);
