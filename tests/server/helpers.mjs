// Shared helpers of the ds4-server node tests. The driver script
// (tests/scripts/server.sh) starts the server and exports:
//   DS4_SERVER_URL   base URL of the shared server (loopback only)
//   DS4_SERVER_BIN   the ds4-server binary (tests that need their own server)
//   DS4_TEST_MODEL   the tiny synthetic model
//   DS4_TEST_WORK    a scratch directory
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';

export const BASE = process.env.DS4_SERVER_URL || 'http://127.0.0.1:8000';
export const BIN = process.env.DS4_SERVER_BIN || 'build/bin/ds4-server';
export const MODEL = process.env.DS4_TEST_MODEL || '/tmp/tiny.gguf';
export const WORK = process.env.DS4_TEST_WORK || '/tmp';
export const SCRIPT = path.resolve('tests/server/script.txt');

export async function stats(base = BASE) {
  const r = await fetch(`${base}/ds4/stats`);
  return r.json();
}

export async function postJSON(p, body, headers = {}, base = BASE) {
  const r = await fetch(`${base}${p}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

// Parse an SSE body into [{event, data}] (comments kept as {comment}).
export function parseSSE(text) {
  const out = [];
  for (const block of text.split('\n\n')) {
    if (!block.trim()) continue;
    const ev = {};
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) ev.comment = line.slice(1).trim();
      else if (line.startsWith('event: ')) ev.event = line.slice(7);
      else if (line.startsWith('data: ')) ev.data = line.slice(6);
    }
    out.push(ev);
  }
  return out;
}

// One raw HTTP exchange over a socket: write the chunks (with optional
// pauses), then read until the server closes. Resolves {status, head, body, raw}.
export function rawHTTP(port, chunks, { pauseMs = 0, timeoutMs = 20000, host = '127.0.0.1' } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, host);
    const bufs = [];
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('raw HTTP timeout')); }, timeoutMs);
    sock.on('data', (d) => bufs.push(d));
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      const raw = Buffer.concat(bufs).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(raw);
      const i = raw.indexOf('\r\n\r\n');
      resolve({ status: m ? Number(m[1]) : 0, head: i >= 0 ? raw.slice(0, i) : raw, body: i >= 0 ? raw.slice(i + 4) : '', raw });
    });
    sock.on('connect', async () => {
      for (const c of chunks) {
        if (sock.destroyed) break;
        sock.write(c);
        if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
      }
    });
  });
}

export function portOf(base = BASE) { return Number(new URL(base).port); }

export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

// Start a private ds4-server; resolves {base, proc, log(), stop()}.
export async function startServer(extraArgs = [], { script = SCRIPT } = {}) {
  const port = await freePort();
  const args = ['-m', MODEL, '--cpu', '-t', '2', '--ctx', '8192', '--port', String(port), '--host', '127.0.0.1', ...extraArgs];
  if (script) args.push('--test-only-scripted-output', script);
  const proc = spawn(BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr.on('data', (d) => { log += d.toString(); });
  const exited = new Promise((resolve) => proc.on('exit', (code, sig) => resolve({ code, sig })));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try { const r = await fetch(`${base}/health`); if (r.ok) break; } catch { /* not yet */ }
    if (proc.exitCode !== null) throw new Error(`server exited: ${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    base, proc, port,
    log: () => log,
    async stop(signal = 'SIGTERM') { proc.kill(signal); return exited; },
  };
}

export const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } }, required: ['city'] },
  },
};
