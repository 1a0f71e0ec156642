import { CLOSE, DECISION } from './codec.js';

const DAY = 86_400_000;

/**
 * How far apart in time a decision and its close may be and still be joined (both are looked up by id within this
 * window, so that only a few day partitions are searched). Proxies close connections long before.
 */
export const LINK_WINDOW_MS = 2 * DAY;

/**
 * The PostgreSQL store's statements about closes as functions that postgres-store.ts calls, made on start with the
 * schema (CREATE OR REPLACE: a database made before gets them; nothing stored changes): linking stored closes to their
 * decisions (a close stored before its decision is a row of its own with no job until then) and the re-check after
 * commit, and (below, the same way) the closes' lookup and joining a close into its stored decision's row.
 *
 * Why: the statements they replace were planned as any statement, and their cached generic plans could read a number
 * of buffers that grew with the day's traffic: a scan of the job index's `job_id IS NULL` entries on every partition
 * (a linked close's entry stays there, dead, until the partition is vacuumed; B-tree deduplication packs the null
 * entries into posting lists, which an index scan marks dead only when every row in them is), or, after a tiny
 * partition's ANALYZE, a sequential scan of that partition kept while it grows (docs/collector.md, "Tenth round:
 * linking closes"). Now every read is a probe per key:
 * - each key is a LATERAL subquery fenced by `OFFSET 0`: a nested loop, each partition of the key's window probed by
 *   the key (run-time pruning keeps the others out); no join of the whole array to a scan of the partitions is possible
 *   (eg_join_closes: its UPDATE reads the rows by `key = ANY`, JOIN_CLOSES_SQL);
 * - the unlinked closes have an index of their own (pg-event-indexes.ts UNLINKED_INDEX: `key` where `job_id IS NULL`,
 *   one entry per close, so an index scan that finds a linked one marks it dead for good) and the job index no longer
 *   holds the nulls, so a probe reads the small index (or the (key, time) one), never the job index;
 * - the functions run with `enable_seqscan = off` and `enable_bitmapscan = off` (their SET clause applies whenever
 *   PL/pgSQL plans their statements, cached or not): a generic plan made after a tiny partition's ANALYZE was a
 *   sequential scan of it per key (checked); and with `plan_cache_mode = force_custom_plan`, planned at each call with
 *   `first_time` and `last_time` as constants. It was `force_generic_plan` (planned once per connection): a generic
 *   plan locks every partition before its run-time pruning (PostgreSQL 15), ~one lock per day partition per call, held
 *   to commit, and two collectors' 16 connections filled the lock table ("out of shared memory", every retry) with 700
 *   day partitions (no retention, on a server of 50 connections); a custom plan's partitions are the span's alone
 *   (~1.5 µs of PostgreSQL's CPU per event more, docs/collector.md, "Review of the tenth round"); `auto` still failed;
 * - `first_time` and `last_time`, the batch's windows together, prune the partitions when the plan is made: without
 *   them every partition's probe was made ready at each call and pruned per key (pgbench, 12 keys, both functions: 0.22
 *   ms a call with them, 0.47 without, against 0.20-0.31 for the statements they replace, 23 partitions, generic plans);
 * - a found close is linked by its (key, time), one row at a time (nearly always none: a close stored before its
 *   decision, at a batch's edge), not by an UPDATE joined to the array, whose plan is the planner's choice again.
 * What a call reads grows with its keys and the partitions in a key's window (±LINK_WINDOW_MS: up to five days), not
 * with the rows in them. Not tried to the end: one read of the unlinked closes' index of the batch's partitions, joined
 * by hash (fewer buffers), since its plan could read the (key, time) index whole instead (seen after a tiny partition's
 * ANALYZE, with the batch's time span as a condition).
 * Exactly one linker links a close, as before: UPDATE ... WHERE job_id IS NULL; a second one waits on the row and its
 * re-check of the WHERE (READ COMMITTED) fails once the first commits.
 */
export const CLOSE_FUNCTIONS_SQL = `
CREATE OR REPLACE FUNCTION eg_link_closes(close_keys uuid[], jobs int[], lo bigint[], hi bigint[], first_time bigint, last_time bigint)
  RETURNS TABLE (linked_key uuid, linked_bytes_in bigint, linked_bytes_out bigint) LANGUAGE plpgsql VOLATILE
  SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  found_close record;
BEGIN
  FOR found_close IN SELECT x.job, s.key, s.time FROM unnest(close_keys, jobs, lo, hi) AS x(key, job, lo, hi)
    CROSS JOIN LATERAL (SELECT s.key, s.time FROM eg_events s WHERE s.key = x.key AND s.job_id IS NULL AND s.event = ${CLOSE} AND s.time >= x.lo AND s.time <= x.hi
      AND s.time >= first_time AND s.time <= last_time OFFSET 0) AS s
  LOOP
    UPDATE eg_events c SET job_id = found_close.job WHERE c.key = found_close.key AND c.time = found_close.time AND c.job_id IS NULL
      RETURNING c.key, c.bytes_in, c.bytes_out INTO linked_key, linked_bytes_in, linked_bytes_out;
    IF FOUND THEN
      RETURN NEXT;
    END IF;
  END LOOP;
END $$;
CREATE OR REPLACE FUNCTION eg_unlinked_decisions(close_keys uuid[], decision_keys uuid[], lo bigint[], hi bigint[], first_time bigint, last_time bigint)
  RETURNS TABLE (key uuid, job_id int, host_id int, port int, decision smallint, "time" bigint) LANGUAGE plpgsql STABLE
  SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_custom_plan AS $$
BEGIN
  RETURN QUERY SELECT d.key, d.job_id, d.host_id, d.port, d.decision, d.time FROM unnest(close_keys, decision_keys, lo, hi) AS x(ckey, dkey, lo, hi)
    CROSS JOIN LATERAL (SELECT c.time FROM eg_events c WHERE c.key = x.ckey AND c.job_id IS NULL AND c.event = ${CLOSE} AND c.time >= x.lo AND c.time <= x.hi
      AND c.time >= first_time AND c.time <= last_time OFFSET 0) AS c
    CROSS JOIN LATERAL (SELECT d.key, d.job_id, d.host_id, d.port, d.decision, d.time FROM eg_events d
      WHERE d.key = x.dkey AND d.event = ${DECISION} AND d.time >= c.time - ${LINK_WINDOW_MS} AND d.time <= c.time + ${LINK_WINDOW_MS}
        AND d.time >= first_time - ${LINK_WINDOW_MS} AND d.time <= last_time + ${LINK_WINDOW_MS} OFFSET 0) AS d;
END $$;
CREATE OR REPLACE FUNCTION eg_close_lookup(decision_keys uuid[], lo bigint[], hi bigint[], close_keys uuid[], close_times bigint[], first_time bigint, last_time bigint)
  RETURNS TABLE (key uuid, job_id int, host_id int, port int, decision smallint, "time" bigint, joined boolean, own boolean) LANGUAGE plpgsql STABLE
  SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_custom_plan AS $$
BEGIN
  RETURN QUERY SELECT d.* FROM unnest(decision_keys, lo, hi) AS x(key, lo, hi) CROSS JOIN LATERAL (
      SELECT d.key, d.job_id, d.host_id, d.port, d.decision, d.time, d.close_body IS NOT NULL, false FROM eg_events d
      WHERE d.key = x.key AND d.event = ${DECISION} AND d.time >= x.lo AND d.time <= x.hi AND d.time >= first_time AND d.time <= last_time LIMIT 1) AS d
    UNION ALL
    SELECT c.* FROM unnest(close_keys, close_times) AS x(key, time) CROSS JOIN LATERAL (
      SELECT eg_decision_key(c.key), NULL::int, NULL::int, NULL::int, NULL::smallint, c.time, false, true FROM eg_events c
      WHERE c.key = x.key AND c.time = x.time AND c.time >= first_time AND c.time <= last_time LIMIT 1) AS c;
END $$;
CREATE OR REPLACE FUNCTION eg_join_closes(decision_keys uuid[], times bigint[], bodies bytea[], closes_in bigint[], closes_out bigint[], first_time bigint, last_time bigint)
  RETURNS TABLE (joined_key uuid) LANGUAGE plpgsql VOLATILE
  SET enable_seqscan = off SET enable_bitmapscan = off SET enable_nestloop = off SET plan_cache_mode = force_custom_plan AS $$
BEGIN
  RETURN QUERY WITH joined AS (UPDATE eg_events d SET close_body = x.body, bytes_in = x.bytes_in, bytes_out = x.bytes_out
      FROM unnest(decision_keys, times, bodies, closes_in, closes_out) AS x(key, time, body, bytes_in, bytes_out)
      WHERE d.key = x.key AND d.time = x.time AND d.key = ANY (decision_keys) AND d.event = ${DECISION} AND d.close_body IS NULL AND d.time >= first_time
        AND d.time <= last_time
      RETURNING d.key)
    SELECT joined.key FROM joined;
END $$;
`;

/**
 * Stored closes of these keys (in each one's window) with no job yet get the job given beside the key: their keys and
 * bytes back. $1 close keys, $2 jobs, $3 and $4 each window's first and last time, $5 and $6 the first and last of all.
 */
export const LINK_CLOSES_SQL = `SELECT linked_key AS key, linked_bytes_in AS bytes_in, linked_bytes_out AS bytes_out FROM eg_link_closes($1::uuid[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint, $6::bigint)`;

/**
 * The stored decisions of stored closes with no job yet: $1 close keys, $2 their decisions' keys, $3 and $4 each close's
 * window, $5 and $6 the first and last of all. The re-check after commit (postgres-store.ts relink).
 */
export const RELINK_SQL = `SELECT key, job_id AS "jobId", host_id AS "hostId", port, decision, time FROM eg_unlinked_decisions($1::uuid[], $2::uuid[], $3::bigint[], $4::bigint[], $5::bigint, $6::bigint)`;

/**
 * What is stored of a batch's closes: the decision rows of those whose decision is not in the batch, by the decision's
 * key near the close's time (with whether their close is in them already), and the close rows of their own, by their
 * (key, time) (a repeat has the same time; one partition probed). $1 decision keys, $2 and $3 their windows, $4 and $5
 * the closes' keys and times, $6 and $7 the first and last time of all. Each an index probe per close (LATERAL ...
 * LIMIT 1: a join of the whole array was planned as a hash join over a scan of the partitions, ~35 ms a batch at
 * 100,000 events); in eg_close_lookup, so that no probe is a sequential scan (its generic plan was one, of a tiny
 * partition after its ANALYZE).
 */
export const CLOSE_LOOKUP_SQL = `SELECT key, job_id AS "jobId", host_id AS "hostId", port, decision, time, joined, own
  FROM eg_close_lookup($1::uuid[], $2::bigint[], $3::bigint[], $4::uuid[], $5::bigint[], $6::bigint, $7::bigint)`;

/**
 * Closes put into their stored decision's row (exactly one writer: the row lock, and the id's lock, which every close's
 * writer takes): $1 decision keys, $2 their times, $3 the closes' bodies, $4 and $5 their bytes in and out, $6 and $7 the
 * first and last time. In eg_join_closes, the rows read by their keys (`key = ANY`: one index descent per key and
 * partition of the span), joined to the array by hash (nested loops off). The plain UPDATE's generic plan was a hash join
 * over sequential scans of every partition on a small history; with hash and merge joins off, up to ~2,000 rows, a
 * nested loop over the batch's time span read whole from the (key, time) index, and with `key = ANY` but nested loops
 * on, a nested loop over the keys' rows materialized, quadratic in the keys (docs/collector.md, "Review of the tenth round").
 */
export const JOIN_CLOSES_SQL = `SELECT joined_key AS key FROM eg_join_closes($1::uuid[], $2::bigint[], $3::bytea[], $4::bigint[], $5::bigint[], $6::bigint, $7::bigint)`;
