import type { Policy } from './policy.js';

/**
 * Answers of pure functions kept for the next identical question (the requests of a keep-alive connection, the
 * connections and DNS queries of a job ask about the same few hosts again and again). A kept map is bounded by
 * emptying it when full, not by evicting one answer at a time: questions that are all different (a scan, a tunnel
 * through DNS) then cost one answer each, as without it, and nothing is kept per answer for an eviction order.
 */

/** `answer`, kept in `answers` under `key`; the map is emptied first when it holds `max` answers. */
export function keepAnswer<K, V>(answers: Map<K, V>, key: K, answer: V, max: number): V {
  if (answers.size >= max) answers.clear();
  answers.set(key, answer);
  return answer;
}

/** The answers kept for `policy` (a policy is not changed once built; a reload builds a new one, which starts with none). */
export function answersOf<V>(byPolicy: WeakMap<Policy, Map<string, V>>, policy: Policy): Map<string, V> {
  let answers = byPolicy.get(policy);
  if (answers === undefined) byPolicy.set(policy, (answers = new Map()));
  return answers;
}
