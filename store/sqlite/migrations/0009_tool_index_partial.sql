-- exchanges_tool holds only the exchanges that called a tool (a tools/call on an mcp
-- route): every other exchange has tool '' and, indexed, cost a B-tree leaf in each
-- commit of its request for an index no one reads for '' (issue 17). List adds
-- `tool <> ''` to a tool filter, which lets SQLite use the partial index.
DROP INDEX exchanges_tool;
CREATE INDEX exchanges_tool ON exchanges (tool, id) WHERE tool <> '';
