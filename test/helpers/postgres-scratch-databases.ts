import { after, before } from 'node:test';
import pg from 'pg';
import { startPostgresCluster, type PostgresCluster } from './postgres-cluster.js';

/** One database of a ScratchDatabases cluster. */
export interface ScratchDatabase {
  name: string;
  url: string;
}

export interface ScratchDatabases {
  /** A fresh, empty database on the cluster. */
  create(): Promise<ScratchDatabase>;
  drop(db: ScratchDatabase): Promise<void>;
}

/**
 * A throwaway cluster for the describe block this is called in (started in its `before`, stopped in its `after`) and
 * fresh databases on it, named `<prefix>_<n>`, so that each test or property run starts from an empty store.
 * `settings`: the cluster's server settings on top of the helper's (startPostgresCluster).
 */
export function scratchDatabases(prefix: string, settings: Readonly<Record<string, string | number>> = {}): ScratchDatabases {
  let cluster: PostgresCluster | undefined;
  let admin: pg.Client | undefined;
  let made = 0;
  before(async () => {
    cluster = await startPostgresCluster(settings);
    admin = new pg.Client({ connectionString: cluster.url });
    await admin.connect();
  });
  after(async () => {
    await admin?.end().catch(() => undefined);
    cluster?.stop();
  });
  return {
    async create() {
      const name = `${prefix}_${++made}`;
      await admin!.query(`CREATE DATABASE ${name}`);
      return { name, url: cluster!.url.replace(/\/[^/]*$/, `/${name}`) };
    },
    async drop(db) {
      await admin!.query(`DROP DATABASE ${db.name}`);
    },
  };
}
