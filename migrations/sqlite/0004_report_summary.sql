-- Each report's figures the console plots (drift share, the champion's metric, realised and
-- estimated), kept beside the body so a pipeline's history reads in one query without
-- parsing every report. Reports written before this release are filled from their bodies.
ALTER TABLE reports ADD COLUMN drift_share DOUBLE;
ALTER TABLE reports ADD COLUMN metric_value DOUBLE;
ALTER TABLE reports ADD COLUMN metric_estimated BIGINT NOT NULL DEFAULT 0;
ALTER TABLE reports ADD COLUMN metric_realised DOUBLE;
UPDATE reports SET
    drift_share = json_extract(body, '$.drift.dataset.drifted_share'),
    metric_value = json_extract(body, '$.performance.current'),
    metric_estimated = CASE WHEN json_type(body, '$.performance.estimated') = 'object' THEN 1 ELSE 0 END,
    metric_realised = json_extract(body, '$.performance.estimated.realised')
WHERE json_valid(body);
CREATE INDEX reports_by_pipeline ON reports(pipeline, cycle_id);
