import { bodyMethodMatters, type Policy } from '../../policy/index.js';
import { bodyFormOf, bodyMethods } from './body-method.js';
import type { InspectedRequest } from './request-reader.js';

/**
 * The most of a POST body read before its request is decided, for a `_method` field (body-method.ts). Rack, PHP and
 * Laravel read fields from bodies far larger (Rack up to 4 MiB of URL-encoded form, PHP's post_max_size 8 MiB), so a
 * field could hide past any cap: a body past it is refused in block mode (audit mode relays it as would-block). 1 MiB
 * holds the forms and JSON of API calls and small uploads, while the bytes held per request stay bounded (max-tunnels
 * requests at once, at most). Only bodies that may matter are read: see readBodyOverride.
 */
export const BODY_READ_LIMIT = 1024 * 1024;

/** What a body adds to its request's decision: the methods its `_method` fields name, or why it could not be read. */
export interface BodyOverride {
  methodOverrides?: string[];
  unreadBody?: string;
}

/**
 * The `_method` a request's body asks for, read before the request is decided and before any of its body goes on,
 * where it can change the decision: a POST (the only method Rack, Symfony and Express's method-override take an
 * override on) with a body some server reads fields from (body-method.ts bodyFormOf), to a host and path where some
 * method is refused that POST is not. Undefined for every other request (nothing is held). Else the methods found, or
 * why the body could not be judged: larger than BODY_READ_LIMIT (told by its Content-Length at once, or as it comes),
 * or no byte of it for `idleTimeoutMs`; 'gone' when the connection ended first (nothing to decide). `host`, `port` and
 * `path`: what the request is decided on, the host as the client named it.
 */
export function readBodyOverride(
  req: InspectedRequest,
  policy: Policy,
  host: string | undefined,
  port: number,
  path: string,
  idleTimeoutMs: number,
): Promise<BodyOverride | 'gone'> | undefined {
  if (req.method !== 'POST') return undefined;
  const { headers } = req;
  const length = headers['content-length'];
  // No body (node's parser reads none without a length or a Transfer-Encoding).
  if (headers['transfer-encoding'] === undefined && (length === undefined || length === '0')) return undefined;
  const form = bodyFormOf(headers['content-type']);
  if (!form) return undefined;
  // `host` undefined: the request names none (the transparent listener decides on the destination): read.
  if (host !== undefined && !bodyMethodMatters(policy, { host, port, method: req.method, path })) return undefined;
  const limit = `${BODY_READ_LIMIT / (1024 * 1024)} MiB`;
  if (length !== undefined && Number(length) > BODY_READ_LIMIT) return Promise.resolve({ unreadBody: `its body (${length} bytes) is larger than the ${limit} egress-guard reads` });
  return req.bufferBody(BODY_READ_LIMIT, idleTimeoutMs).then((read): BodyOverride | 'gone' => {
    if (read === 'gone') return read;
    if (read === 'stalled') return { unreadBody: `its body stopped coming for ${idleTimeoutMs < 1000 ? `${idleTimeoutMs} ms` : `${Math.round(idleTimeoutMs / 1000)} s`}` };
    if (!read.whole) return { unreadBody: `its body is larger than the ${limit} egress-guard reads` };
    const methods = bodyMethods(form, Buffer.concat(read.pieces));
    return methods.length > 0 ? { methodOverrides: methods } : {};
  });
}

/** A request's override methods (method-override.ts) with its body's. */
export function withBodyOverride<T extends { methodOverrides?: readonly string[] | undefined }>(request: T, body: BodyOverride): T {
  if (body.unreadBody !== undefined) return { ...request, unreadBody: body.unreadBody };
  if (!body.methodOverrides) return request;
  return { ...request, methodOverrides: [...(request.methodOverrides ?? []), ...body.methodOverrides] };
}
