-- tool indexes the tool a tools/call on an mcp route called ('' for every other
-- exchange), for `tool=` in the admin API and `keyhole records list --tool`. entries
-- copies it as it copies the other index fields, so that an Entry reads back whole.
ALTER TABLE entries ADD COLUMN tool TEXT NOT NULL DEFAULT '';
ALTER TABLE exchanges ADD COLUMN tool TEXT NOT NULL DEFAULT '';
CREATE INDEX exchanges_tool ON exchanges (tool, id);
