-- data_codec is how an entry's data is stored: NULL for the bytes themselves (every entry
-- written before this migration, and small ones), 's2' for an S2 block of them
-- (github.com/klauspost/compress/s2). The chain hashes the data as recorder made it,
-- before compression: readers decompress, and what they return is byte for byte what was
-- appended.
ALTER TABLE entries ADD COLUMN data_codec TEXT;
