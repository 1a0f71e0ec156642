import http from 'node:http';
import https from 'node:https';

export interface PostResult {
  status: number;
  body: string;
}

/**
 * POST a body with node:http(s) directly (never through HTTP_PROXY: the proxy must not send its own
 * events through itself). Rejects on network errors and on timeout.
 */
export function post(url: URL, body: Buffer, headers: Record<string, string>, options: { timeoutMs: number; agent?: http.Agent }): Promise<PostResult> {
  return new Promise((resolve, reject) => {
    const client = url.protocol === 'https:' ? https : http;
    const req = client.request(url, {
      method: 'POST',
      headers: { ...headers, 'content-length': String(body.length) },
      agent: options.agent,
    });
    req.setTimeout(options.timeoutMs, () => req.destroy(new Error(`no answer from ${url.host} within ${options.timeoutMs} ms`)));
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= 64 * 1024) chunks.push(chunk);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.end(body);
  });
}
