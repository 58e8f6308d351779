-- export_cursors holds how far each push export (recorder.export) has delivered, and which
-- replica may push it now, as in store/sqlite (its migration 0006). after_seq is the chain
-- sequence number of the last exchange the receiver acknowledged: the export resumes after
-- it. holder and lease_until_ns are the lease: one replica at a time pushes a name, until
-- lease_until_ns unless it renews it, so that replicas sharing the database do not each
-- deliver everything. updated_ns is when after_seq last moved.
CREATE TABLE export_cursors (
    name           TEXT   COLLATE "C" PRIMARY KEY,
    after_seq      BIGINT NOT NULL,
    updated_ns     BIGINT NOT NULL,
    holder         TEXT   NOT NULL,
    lease_until_ns BIGINT NOT NULL
);
