import type pg from 'pg';

const DAY = 86_400_000;

/** `eg_events_pYYYYMMDD`, as the PostgreSQL store names a day partition. */
export const dayPartitionName = (day: number) => `eg_events_p${new Date(day).toISOString().slice(0, 10).replace(/-/g, '')}`;

/** Statements in transactions of `perTransaction` statements each (a small lock table holds no more at once). */
export async function inBatches(client: pg.Client, statements: readonly string[], perTransaction = 20): Promise<void> {
  for (let i = 0; i < statements.length; i += perTransaction) await client.query(`BEGIN; ${statements.slice(i, i + perTransaction).join('; ')}; COMMIT`);
}

/**
 * A store's database turned into the layout before eg_events_job_linked and eg_events_unlinked (pg-event-indexes.ts):
 * the job index (job_id) with its nulls. Cheap while it has few partitions (each index statement locks all of them).
 */
export async function toEarlierJobIndexLayout(client: pg.Client): Promise<void> {
  await client.query('DROP INDEX eg_events_job_linked, eg_events_unlinked; CREATE INDEX eg_events_job_id ON eg_events (job_id)');
}

/** `count` day partitions of eg_events from `firstDay` on (those there already kept), 20 a transaction. */
export async function addDayPartitions(client: pg.Client, firstDay: number, count: number): Promise<void> {
  const days = Array.from({ length: count }, (_, i) => firstDay + i * DAY);
  await inBatches(
    client,
    days.map((day) => `CREATE TABLE IF NOT EXISTS ${dayPartitionName(day)} PARTITION OF eg_events FOR VALUES FROM (${day}) TO (${day + DAY})`),
  );
}
