import { isPostgresUrl, type EventStore } from './event-store.js';

/** Open the store a `--db` value names: a postgres:// URL, else a SQLite file path. */
export async function openStore(db: string): Promise<EventStore> {
  if (isPostgresUrl(db)) {
    const { PostgresStore } = await import('./postgres-store.js');
    return PostgresStore.open(db);
  }
  const { SqliteStore } = await import('./sqlite-store.js');
  return new SqliteStore(db);
}
