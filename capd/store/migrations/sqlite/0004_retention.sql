-- capd schema v4 (issue 12): retention and the durable callback outbox.
-- Freed pages go back to the file system in steps (PRAGMA incremental_vacuum); a database
-- made before this takes the mode at its next VACUUM, which `capd prune` runs once.
PRAGMA auto_vacuum = INCREMENTAL;
-- when a finished task's payload, options and callback URL were dropped
ALTER TABLE tasks ADD COLUMN payload_dropped_at REAL;
-- retention: oldest finished tasks first (tasks_ended, from 0003, covers solved ones only)
CREATE INDEX tasks_finished ON tasks(ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX tasks_payload_kept ON tasks(ended_at)
    WHERE ended_at IS NOT NULL AND payload_dropped_at IS NULL;

-- callbacks waiting for delivery, written with the task's completion (no FK to tasks:
-- retention deletes tasks, and a row never outlives its task anyway)
CREATE TABLE callbacks_outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id      INTEGER NOT NULL,
    account_id   INTEGER NOT NULL REFERENCES accounts(id),
    url          TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   REAL    NOT NULL,
    next_at      REAL    NOT NULL,
    state        TEXT    NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'delivered', 'failed')),
    leased_until REAL
);
CREATE INDEX callbacks_due ON callbacks_outbox(next_at) WHERE state = 'pending';
CREATE INDEX callbacks_busy ON callbacks_outbox(account_id, leased_until)
    WHERE state = 'pending';
CREATE INDEX callbacks_task ON callbacks_outbox(task_id);
CREATE INDEX callbacks_settled ON callbacks_outbox(created_at) WHERE state <> 'pending'
