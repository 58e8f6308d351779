-- export_cursors holds how far each push export (recorder.export) has delivered, and which
-- process may push it now. after_seq is the chain sequence number of the last exchange the
-- receiver acknowledged: the export resumes after it. holder and lease_until_ns are the
-- lease: one process at a time pushes a name, until lease_until_ns unless it renews it, so
-- that several gateways on one store do not each deliver everything. updated_ns is when
-- after_seq last moved.
CREATE TABLE export_cursors (
    name           TEXT    PRIMARY KEY,
    after_seq      INTEGER NOT NULL,
    updated_ns     INTEGER NOT NULL,
    holder         TEXT    NOT NULL,
    lease_until_ns INTEGER NOT NULL
);
