-- The daily-summary trigger (migration 13) joins a statement's new fixes to their `tracker_days`
-- rows. PL/pgSQL plans them once per connection and keeps the plan until the table is analyzed;
-- made while the table is small (a new deployment, a small fleet), it hashes the whole table on
-- every batch, dead row versions included, which the trigger itself leaves two of per tracker and
-- batch. A batch holds at most `ingest.batch_size` fixes and each finds its row by primary key,
-- so key probes are the right plan at every table size. Measured at 40 % of the single-fix
-- maximum, the trigger went from 43 % to 30 % of PostgreSQL's CPU (BENCHMARKS.md, issue 17).
ALTER FUNCTION pettracker_days_after_insert() SET enable_hashjoin = off SET enable_mergejoin = off;
