-- retraind store, SQLite dialect. Timestamps are Unix milliseconds (UTC); JSON documents are TEXT.
CREATE TABLE pipelines (
    name TEXT PRIMARY KEY NOT NULL,
    created_at BIGINT NOT NULL,
    last_scheduled_at BIGINT
);

CREATE TABLE cycles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT NOT NULL REFERENCES pipelines(name),
    trigger_kind TEXT NOT NULL,
    cycle_date TEXT NOT NULL,
    state TEXT NOT NULL,
    active BIGINT NOT NULL,
    outcome TEXT,
    reason TEXT,
    inputs TEXT,
    decision TEXT,
    candidate_version BIGINT,
    gate TEXT,
    deadline_at BIGINT,
    resumes BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
-- One cycle at a time per pipeline: at most one active row.
CREATE UNIQUE INDEX cycles_one_active ON cycles(pipeline) WHERE active = 1;
CREATE INDEX cycles_by_pipeline ON cycles(pipeline, id);

CREATE TABLE transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cycle_id BIGINT NOT NULL REFERENCES cycles(id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX transitions_by_cycle ON transitions(cycle_id, id);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    pipeline TEXT NOT NULL,
    cycle_id BIGINT,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX events_by_pipeline ON events(pipeline, id);

CREATE TABLE reports (
    cycle_id BIGINT PRIMARY KEY NOT NULL REFERENCES cycles(id),
    pipeline TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    dataset_drift BIGINT NOT NULL,
    body TEXT NOT NULL
);

CREATE TABLE model_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT NOT NULL REFERENCES pipelines(name),
    version BIGINT NOT NULL,
    cycle_id BIGINT NOT NULL UNIQUE REFERENCES cycles(id),
    path TEXT NOT NULL,
    metrics TEXT NOT NULL,
    lineage TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (pipeline, version)
);

CREATE TABLE aliases (
    pipeline TEXT NOT NULL,
    alias TEXT NOT NULL,
    version_id BIGINT NOT NULL REFERENCES model_versions(id),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (pipeline, alias)
);

CREATE TABLE approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cycle_id BIGINT NOT NULL REFERENCES cycles(id),
    approver TEXT NOT NULL,
    channel TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL,
    UNIQUE (cycle_id, approver)
);

CREATE TABLE guard_state (
    pipeline TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (pipeline, key)
);
