-- Guardrails: every champion move (deploy or rollback) with who and why, and the ids of
-- signed requests already accepted (replay protection for Slack and webhook decisions).
CREATE TABLE deployments (
    id BIGSERIAL PRIMARY KEY,
    pipeline TEXT NOT NULL,
    kind TEXT NOT NULL,
    version_id BIGINT NOT NULL REFERENCES model_versions(id),
    from_version_id BIGINT,
    cycle_id BIGINT,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX deployments_by_pipeline ON deployments(pipeline, id);

CREATE TABLE seen_requests (
    channel TEXT NOT NULL,
    id TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (channel, id)
);
