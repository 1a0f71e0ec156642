export {
  bodyMethodMatters,
  decide,
  decideName,
  decideOnAddresses,
  findEndpoint,
  literalAddress,
  type Decision,
  type DecisionRequest,
  type Outcome,
  type Reason,
} from './decide.js';
export { buildPolicy, POLICY_KEYS, type PolicySetting, type PolicySettings } from './build-policy.js';
export { parsePolicyFile, type FileSetting } from './policy-file.js';
export { splitListString, type SourcedEntry } from './policy-lists.js';
export { PolicyError, MODES, type Mode, type Policy, type DnsMode } from './policy.js';
export { canonicalHost, canonicalText, parseAddress, type Address, type CanonicalHost } from './host.js';
export { classifyAddress, embeddedIPv4 } from './address-safety.js';
export { compileHostPattern, matchHost, type HostPattern } from './host-pattern.js';
export { parseEndpoint } from './endpoint.js';
export { findCidr, parseCidr } from './cidr.js';
export { bracketed, formatHostPort, hostHeaderValue, parseAuthority } from './host-port.js';
export { ENCRYPTED_CLIENT_HELLO_REFUSED, refusal } from './refusal.js';
export { normalisePath, compilePathPattern, matchPath, type NormalisedPath, type PathPattern } from './request-path.js';
export { isRequestRule, type EndpointRule } from './endpoint.js';
export { keepAnswer } from './kept-answers.js';
