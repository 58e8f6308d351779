-- tool is the tool of an approval of a tools/call on an mcp route (approvals.Approval.Tool),
-- '' for an approval of an HTTP request. The admin plane reads it to tell whose
-- approvers decide the approval.
ALTER TABLE approvals ADD COLUMN tool TEXT NOT NULL DEFAULT '';
