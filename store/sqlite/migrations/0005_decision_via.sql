-- via is how an approver decided (approvals.Decision.Via): "api" for the admin API and the
-- CLI, "console" for the web console; '' for decisions made before it was recorded.
ALTER TABLE approval_decisions ADD COLUMN via TEXT NOT NULL DEFAULT '';
