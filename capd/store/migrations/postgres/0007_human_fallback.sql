-- capd schema v7 (issue 15): the human fallback. A task whose built-in reading failed can
-- be handed back to the queue for humans: the built-in readers (the in-process OCR and
-- `capd worker`) never claim it again, external workers do.
ALTER TABLE tasks ADD COLUMN for_humans INTEGER NOT NULL DEFAULT 0;

-- when an external worker (not a `capd worker`) last asked for each type: a task is
-- handed to humans only while one serves its type
ALTER TABLE worker_seen ADD COLUMN external_seen_at DOUBLE PRECISION;
