-- Continuous aggregates take no new columns: the view is rebuilt with moving_s. Its refresh
-- policy goes with it and is added again by the next statement; real-time aggregation serves
-- every day until the policy has materialized it again.
DROP MATERIALIZED VIEW IF EXISTS daily_summaries;
