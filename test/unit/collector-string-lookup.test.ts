import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { SqliteStore } from '../../collector/stores/sqlite-store.js';
import { testDecision } from '../helpers/aggregate-model.js';
import { hostQuery } from '../../collector/host-search.js';
import { likeShape, stringLookupSql } from '../../collector/stores/queries.js';

describe('the host search finds its dictionary strings by index where the pattern allows', () => {
  it('tells a literal, a literal after a leading %, and other patterns apart (escapes kept literal)', () => {
    assert.deepEqual(likeShape('codecov.io'), { kind: 'exact', text: 'codecov.io' });
    assert.deepEqual(likeShape('%.codecov.io'), { kind: 'suffix', text: '.codecov.io' });
    assert.deepEqual(likeShape('my\\_host.example'), { kind: 'exact', text: 'my_host.example' });
    assert.deepEqual(likeShape('%.a\\%b'), { kind: 'suffix', text: '.a%b' });
    assert.deepEqual(likeShape('uploader%.codecov.io'), { kind: 'other' });
    assert.deepEqual(likeShape('a_b'), { kind: 'other' });
    assert.deepEqual(likeShape('trailing\\'), { kind: 'other' });
  });

  it('a name and its subdomains: equality and a prefix of the reversed text', () => {
    const { likes } = hostQuery('my_host.example');
    assert.deepEqual(
      stringLookupSql('postgres', likes, (i) => `$${i}`),
      { where: "text = $1 OR reverse(text) LIKE $2 ESCAPE '\\'", params: ['my_host.example', 'elpmaxe.tsoh\\_ym.%'] },
    );
    assert.deepEqual(
      stringLookupSql('sqlite', likes, () => '?'),
      {
        where: 'text = ? OR id IN (SELECT id FROM eg_strings_reversed WHERE reversed >= ? AND reversed < ?)',
        params: ['my_host.example', 'elpmaxe.tsoh_ym.', 'elpmaxe.tsoh_ym/'],
      },
    );
    assert.deepEqual(
      stringLookupSql('postgres', hostQuery('up*.codecov.io').likes, (i) => `$${i}`),
      { where: "text LIKE $1 ESCAPE '\\'", params: ['up%.codecov.io'] },
    );
  });

  it('SQLite: subdomains found through eg_strings_reversed, not a scan; a database made before it is filled on start', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'egress-reversed-')), 'reversed.db');
    try {
      const job = { job_id: 'job-r', repository: 'org/r' };
      const hosts = ['codecov.io', 'uploader.codecov.io', 'evil-codecov.io', 'a.b.codecov.io', 'codecov.io.evil.example'];
      const search = async (store: SqliteStore, pattern: string) => {
        const query = hostQuery(pattern);
        return (await store.searchJobs({ likes: query.likes, matches: query.matches }, { limit: 10, offset: 0 })).jobs.flatMap((j) => j.hosts);
      };
      let store = new SqliteStore(path);
      await store.insert(hosts.slice(0, 3).map((host, i) => testDecision(`r-${i}`, Date.UTC(2026, 0, 1, 0, i), host, job)));
      await store.close();
      // As an earlier version left it: no reversed strings; then one more string written without them.
      let db = new Database(path);
      db.exec('DROP TABLE eg_strings_reversed');
      db.close();
      store = new SqliteStore(path);
      await store.close();
      db = new Database(path);
      db.prepare('DELETE FROM eg_strings_reversed WHERE id = (SELECT MAX(id) FROM eg_strings_reversed)').run();
      db.close();
      store = new SqliteStore(path);
      try {
        await store.insert(hosts.slice(3).map((host, i) => testDecision(`r-${3 + i}`, Date.UTC(2026, 0, 1, 1, i), host, job)));
        assert.deepEqual(await search(store, 'codecov.io'), ['a.b.codecov.io', 'codecov.io', 'uploader.codecov.io']);
        assert.deepEqual(await search(store, '*.codecov.io'), ['a.b.codecov.io', 'uploader.codecov.io']);
        const check = new Database(path, { readonly: true });
        const strings = check.prepare('SELECT COUNT(*) AS n FROM eg_strings').get() as { n: number };
        const pairs = check.prepare('SELECT s.text, r.reversed FROM eg_strings s JOIN eg_strings_reversed r ON r.id = s.id').all() as Array<{ text: string; reversed: string }>;
        assert.equal(pairs.length, strings.n, 'every string, reversed');
        for (const p of pairs) assert.equal(p.reversed, [...p.text].reverse().join(''));
        const lookup = stringLookupSql('sqlite', hostQuery('codecov.io').likes, () => '?');
        const plan = (check.prepare(`EXPLAIN QUERY PLAN SELECT id, text FROM eg_strings WHERE ${lookup.where}`).all(...lookup.params) as Array<{ detail: string }>)
          .map((r) => r.detail)
          .join('; ');
        assert.doesNotMatch(plan, /SCAN eg_strings\b/, plan);
        assert.match(plan, /eg_strings_reversed_text/, plan);
        check.close();
      } finally {
        await store.close();
      }
    } finally {
      rmSync(dirname(path), { recursive: true, force: true });
    }
  });
});
