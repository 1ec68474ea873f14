-- capd schema v7 (issue 15): the human fallback. A task whose built-in reading failed can
-- be handed back to the queue for humans: the built-in readers (the in-process OCR and
-- `capd worker`) never claim it again, external workers do.
ALTER TABLE tasks ADD COLUMN for_humans INTEGER NOT NULL DEFAULT 0;
