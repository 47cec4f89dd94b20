-- Each report's figures the console plots (drift share, the champion's metric, realised and
-- estimated), kept beside the body so a pipeline's history reads in one query without
-- parsing every report. Reports written before this release are filled from their bodies.
ALTER TABLE reports ADD COLUMN drift_share DOUBLE PRECISION;
ALTER TABLE reports ADD COLUMN metric_value DOUBLE PRECISION;
ALTER TABLE reports ADD COLUMN metric_estimated BIGINT NOT NULL DEFAULT 0;
ALTER TABLE reports ADD COLUMN metric_realised DOUBLE PRECISION;
UPDATE reports SET
    drift_share = (body::jsonb #>> '{drift,dataset,drifted_share}')::double precision,
    metric_value = (body::jsonb #>> '{performance,current}')::double precision,
    metric_estimated = CASE WHEN jsonb_typeof(body::jsonb #> '{performance,estimated}') = 'object' THEN 1 ELSE 0 END,
    metric_realised = (body::jsonb #>> '{performance,estimated,realised}')::double precision
WHERE left(body, 1) = '{';
CREATE INDEX reports_by_pipeline ON reports(pipeline, cycle_id);
