-- capd schema v4 (issue 12): retention and the durable callback outbox.
-- PostgreSQL returns space through (auto)vacuum; deletes run in small batches.
-- when a finished task's payload, options and callback URL were dropped
ALTER TABLE tasks ADD COLUMN payload_dropped_at DOUBLE PRECISION;
-- retention: oldest finished tasks first (tasks_ended, from 0003, covers solved ones only)
CREATE INDEX tasks_finished ON tasks(ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX tasks_payload_kept ON tasks(ended_at)
    WHERE ended_at IS NOT NULL AND payload_dropped_at IS NULL;

-- callbacks waiting for delivery, written with the task's completion (no FK to tasks:
-- retention deletes tasks, and a row never outlives its task anyway)
CREATE TABLE callbacks_outbox (
    id           BIGSERIAL        PRIMARY KEY,
    task_id      BIGINT  NOT NULL,
    account_id   BIGINT  NOT NULL REFERENCES accounts(id),
    url          TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   DOUBLE PRECISION    NOT NULL,
    next_at      DOUBLE PRECISION    NOT NULL,
    state        TEXT    NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'delivered', 'failed')),
    leased_until DOUBLE PRECISION
);
CREATE INDEX callbacks_due ON callbacks_outbox(next_at) WHERE state = 'pending';
CREATE INDEX callbacks_busy ON callbacks_outbox(account_id, leased_until)
    WHERE state = 'pending';
CREATE INDEX callbacks_task ON callbacks_outbox(task_id);
CREATE INDEX callbacks_settled ON callbacks_outbox(created_at) WHERE state <> 'pending'
