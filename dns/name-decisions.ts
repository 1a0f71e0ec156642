import { keepAnswer, type Decision, type Policy } from '../policy/index.js';
import type { WireQuestion } from './wire.js';

/**
 * The decisions of recently asked names under the current policy, so that a name asked again (most DNS traffic:
 * the same few names, over and over) is not parsed and matched against every endpoint again. A decision is a pure
 * function of the policy and the question's name (its text form, which spells every label byte); a new policy (a reload swaps the object) starts afresh. Bounded: when full
 * it is emptied, so names that are all different (a scan, a tunnel through DNS) cost one decision each, as before.
 */
export class NameDecisions {
  private policy: Policy | undefined;
  private readonly decided = new Map<string, Decision>();

  constructor(
    private readonly decide: (policy: Policy, question: WireQuestion) => Decision,
    private readonly maxNames = 4096,
  ) {}

  get(policy: Policy, question: WireQuestion): Decision {
    if (policy !== this.policy) {
      this.decided.clear();
      this.policy = policy;
    }
    return this.decided.get(question.name) ?? keepAnswer(this.decided, question.name, this.decide(policy, question), this.maxNames);
  }
}
