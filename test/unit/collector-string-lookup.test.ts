import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
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

  it('a name and its subdomains: equality and, on PostgreSQL, a prefix of the reversed text', () => {
    const { likes } = hostQuery('my_host.example');
    assert.deepEqual(
      stringLookupSql('postgres', likes, (i) => `$${i}`),
      { where: "text = $1 OR reverse(text) LIKE $2 ESCAPE '\\'", params: ['my_host.example', 'elpmaxe.tsoh\\_ym.%'] },
    );
    assert.deepEqual(
      stringLookupSql('sqlite', likes, () => '?'),
      { where: "text = ? OR text LIKE ? ESCAPE '\\'", params: ['my_host.example', '%.my\\_host.example'] },
    );
    assert.deepEqual(
      stringLookupSql('postgres', hostQuery('up*.codecov.io').likes, (i) => `$${i}`),
      { where: "text LIKE $1 ESCAPE '\\'", params: ['up%.codecov.io'] },
    );
  });
});
