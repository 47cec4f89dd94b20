-- One champion move at a time per pipeline. A move (a deploy, a rollback by hand or by the
-- watch) is opened here before any deploy target runs and closed in the transaction that
-- moves the aliases (or when its targets are put back): the unique index lets only one be
-- open per pipeline, across daemons sharing the store. Its id names the move's deliveries
-- (the deploy hook's webhook-id), stable across retries and restarts, distinct per move.
CREATE TABLE moves (
    id BIGSERIAL PRIMARY KEY,
    pipeline TEXT NOT NULL,
    kind TEXT NOT NULL,
    version_id BIGINT NOT NULL REFERENCES model_versions(id),
    from_version_id BIGINT,
    cycle_id BIGINT,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    outcome TEXT
);
CREATE UNIQUE INDEX moves_one_open ON moves(pipeline) WHERE finished_at IS NULL;
ALTER TABLE deployments ADD COLUMN move_id BIGINT;
-- Retention: when a version's files were collected (its row stays, for lineage and history).
ALTER TABLE model_versions ADD COLUMN collected_at BIGINT;
