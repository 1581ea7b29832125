-- On TimescaleDB the batch's statement keeps `positions_5m` as before (a hypertable's triggers
-- cannot see a statement's rows, so late fixes leave no notes for a pass to find): every row is
-- exact. The function is the one readers call on either backend (the PostgreSQL variant of
-- migration 18 says why).
CREATE FUNCTION pettracker_5m_exact_before(tracker TEXT) RETURNS TIMESTAMPTZ
LANGUAGE sql STABLE AS $$
    SELECT TIMESTAMPTZ 'infinity'
$$;
