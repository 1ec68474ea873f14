-- capd schema v8: the retention sweep deletes the callbacks of old tasks oldest first, by
-- created_at, whatever their state; without an index of its own each batch scanned the
-- whole outbox (the partial index callbacks_settled covers only settled callbacks).
CREATE INDEX callbacks_created ON callbacks_outbox(created_at);
