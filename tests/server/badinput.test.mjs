// Malformed and hostile requests: each gets the right 4xx with a JSON error
// body in its API's shape, and the server keeps answering normal requests.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BASE, postJSON, rawHTTP, portOf, startServer } from './helpers.mjs';

const user = [{ role: 'user', content: 'Say hello' }];
const deep = (n) => '['.repeat(n) + ']'.repeat(n);

// [name, path, body (object or raw string/bytes), expected status, message regexp]
const cases = [
  ['truncated JSON', '/v1/chat/completions', '{"messages":[', 400, /invalid JSON/],
  ['not JSON', '/v1/chat/completions', 'hello', 400, /invalid JSON/],
  ['empty body', '/v1/chat/completions', '', 400, /invalid JSON/],
  ['array body', '/v1/chat/completions', '[]', 400, /invalid JSON/],
  ['trailing garbage', '/v1/chat/completions', '{"messages":[]} x', 400, /invalid JSON/],
  ['missing messages', '/v1/chat/completions', {}, 400, /missing messages/],
  ['messages not an array', '/v1/chat/completions', { messages: 'hi' }, 400, /messages/],
  ['message not an object', '/v1/chat/completions', { messages: [1] }, 400, /messages/],
  ['role is a number', '/v1/chat/completions', { messages: [{ role: 5, content: 'x' }] }, 400, /role/],
  ['role is null', '/v1/chat/completions', { messages: [{ role: null, content: 'x' }] }, 400, /role/],
  ['max_tokens is a string', '/v1/chat/completions', { messages: user, max_tokens: '10' }, 400, /max_tokens/],
  ['temperature is a string', '/v1/chat/completions', { messages: user, temperature: 'hot' }, 400, /temperature/],
  ['stream is a string', '/v1/chat/completions', { messages: user, stream: 'yes' }, 400, /stream/],
  ['stop is a number', '/v1/chat/completions', { messages: user, stop: 5 }, 400, /stop/],
  ['tools not an array', '/v1/chat/completions', { messages: user, tools: {} }, 400, /tools/],
  ['tool without a name', '/v1/chat/completions', { messages: user, tools: [{ type: 'function', function: { description: 'x' } }] }, 400, /name/],
  ['unknown reasoning effort', '/v1/chat/completions', { messages: user, reasoning_effort: 'extreme' }, 400, /effort/],
  ['thinking is a string', '/v1/chat/completions', { messages: user, thinking: 'yes' }, 400, /thinking/],
  ['tool_call_id is a number', '/v1/chat/completions', { messages: [{ role: 'tool', tool_call_id: 5, content: 'x' }] }, 400, /tool_call_id/],
  ['nesting deeper than 256', '/v1/chat/completions', `{"messages":[],"x":${deep(300)}}`, 400, /invalid JSON/],
  ['invalid UTF-8', '/v1/chat/completions', Buffer.concat([Buffer.from('{"messages":[{"role":"user","content":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}]}')]), 400, /invalid JSON/],
  ['lone surrogate escape', '/v1/chat/completions', '{"messages":[{"role":"user","content":"\\ud800"}]}', 400, /invalid JSON/],
  ['missing prompt', '/v1/completions', {}, 400, /missing prompt/],
  ['missing input', '/v1/responses', {}, 400, /missing input/],
  ['unknown input item', '/v1/responses', { input: [{ type: 'bogus' }] }, 400, /bogus/],
  ['tool_choice required', '/v1/responses', { input: 'x', tool_choice: 'required' }, 400, /tool_choice=required/],
  ['forced tool_choice', '/v1/responses', { input: 'x', tool_choice: { type: 'function', name: 'f' } }, 400, /forced/],
  ['function_call without call_id', '/v1/responses', { input: [{ type: 'function_call', name: 'f', arguments: '{}' }] }, 400, /call_id/],
  ['in-progress item', '/v1/responses', { input: [{ type: 'message', role: 'user', content: 'x', status: 'in_progress' }] }, 400, /status/],
  ['image content in Responses', '/v1/responses', { input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'x' }] }] }, 400, /input_image/],
  ['conversation state', '/v1/responses', { input: 'x', conversation: 'c1' }, 400, /conversation/],
  ['tool_use without id', '/v1/messages', { max_tokens: 5, messages: [{ role: 'assistant', content: [{ type: 'tool_use', name: 'f', input: {} }] }] }, 400, /tool_use/],
  ['tool_result without id', '/v1/messages', { max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'tool_result', content: 'x' }] }] }, 400, /tool_use_id/],
  ['content is a number', '/v1/messages', { max_tokens: 5, messages: [{ role: 'user', content: 5 }] }, 400, /content/],
  ['system is a number', '/v1/messages', { max_tokens: 5, system: 5, messages: user }, 400, /system/],
  ['Anthropic missing messages', '/v1/messages', { max_tokens: 5 }, 400, /missing messages/],
];

test(`${cases.length} malformed requests get 4xx JSON errors`, async () => {
  for (const [name, p, body, status, re] of cases) {
    const r = await postJSON(p, body);
    assert.equal(r.status, status, `${name}: ${r.status} ${r.text}`);
    assert.ok(r.json, `${name}: JSON error body`);
    const msg = p === '/v1/messages' ? (assert.equal(r.json.type, 'error'), r.json.error.message) : r.json.error.message;
    assert.match(msg, re, name);
    assert.ok(r.text.endsWith('\n'));
  }
});

test('accepted oddities: huge and negative numbers clamp, unknown roles are dropped', async () => {
  let r = await postJSON('/v1/chat/completions', { messages: user, max_tokens: 1e308, temperature: 1e308, seed: -7, top_k: 1e300 });
  assert.equal(r.status, 200, r.text);
  r = await postJSON('/v1/chat/completions', { messages: user, max_tokens: -5 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.choices[0].finish_reason, 'length');
  assert.equal(r.json.usage.completion_tokens, 0);
  r = await postJSON('/v1/chat/completions', { messages: [{ role: 'wizard', content: 'zap' }, ...user] });
  assert.equal(r.status, 200, r.text);
  r = await postJSON('/v1/chat/completions', `{"messages":[{"role":"user","content":"hi"}],"ignored":${deep(250)}}`);
  assert.equal(r.status, 200, r.text);
});

test('context overflow says the token counts', async () => {
  const long = 'alpha beta gamma delta '.repeat(10000); // > 32768 tokens (the shared server's --ctx)
  let r = await postJSON('/v1/chat/completions', { messages: [{ role: 'user', content: long }] });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'context_length_exceeded');
  assert.equal(r.json.error.param, 'messages');
  assert.equal(r.json.error.n_ctx, 32768);
  assert.ok(r.json.error.n_prompt_tokens >= 32768);
  assert.match(r.json.error.message, /Prompt has \d+ tokens, but the configured context size is 32768 tokens/);
  r = await postJSON('/v1/messages', { max_tokens: 5, messages: [{ role: 'user', content: long }] });
  assert.equal(r.status, 400);
  assert.equal(r.json.type, 'error');
  assert.equal(r.json.error.n_ctx, 32768);
});

test('routes, methods and body limits', async () => {
  let r = await fetch(`${BASE}/v1/nope`);
  assert.equal(r.status, 404);
  assert.match((await r.json()).error.message, /unknown endpoint/);
  r = await fetch(`${BASE}/v1/models/gpt-9`);
  assert.equal(r.status, 404);
  r = await fetch(`${BASE}/v1/chat/completions`, { method: 'PUT', body: '{}' });
  assert.equal(r.status, 405);
  r = await fetch(`${BASE}/v1/chat/completions`, { method: 'GET' });
  assert.equal(r.status, 405);
  // 10 MB body (the test server's limit is 8 MiB)
  // (raw socket: the server answers and closes before the client is done sending)
  const big = JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(10 << 20) }] });
  const rb = await rawHTTP(portOf(), [`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${big.length}\r\n\r\n`, big]);
  assert.equal(rb.status, 413, rb.raw.slice(0, 200));
  assert.match(JSON.parse(rb.body).error.message, /too large/);
  // the same without a Content-Length (chunked): cut off while reading
  const chunk = 'x'.repeat(1 << 20);
  const parts = ['POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'];
  for (let i = 0; i < 10; i++) parts.push(`${(chunk.length).toString(16)}\r\n${chunk}\r\n`);
  parts.push('0\r\n\r\n');
  const rc = await rawHTTP(portOf(), parts);
  assert.equal(rc.status, 413, rc.raw.slice(0, 200));
});

test('slow and partial requests are dropped without blocking others', async () => {
  const port = portOf();
  const t0 = Date.now();
  // headers promise 100 bytes, 10 arrive, then silence: dropped at the 10 s timeout
  const partialBody = rawHTTP(port, ['POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"message'], { timeoutMs: 30000 });
  // headers that never end
  const partialHead = rawHTTP(port, ['POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: 1'], { timeoutMs: 30000 });
  // bytes trickling in: header lines one every 1.5 s, never finishing within the timeout
  const trickle = rawHTTP(port, Array.from({ length: 5 }, (_, i) => (i === 0 ? 'GET /v1/models HTTP/1.1\r\n' : `X-${i}: y\r\n`)), { pauseMs: 1500, timeoutMs: 40000 });
  // meanwhile the server answers normally
  const ok = await postJSON('/v1/chat/completions', { messages: user });
  assert.equal(ok.status, 200);
  assert.ok(Date.now() - t0 < 5000, 'a normal request is not held up by slow clients');
  const [a, b] = await Promise.all([partialBody, partialHead]);
  assert.ok(a.status === 0 || a.status >= 400, a.raw.slice(0, 100));
  assert.ok(b.status === 0 || b.status >= 400, b.raw.slice(0, 100));
  await trickle; // ends either way (closed or answered)
  const h = await fetch(`${BASE}/health`);
  assert.equal(h.status, 200);
});

test('chunked upload with a bad body and a client that disconnects mid-stream', async () => {
  const port = portOf();
  const r = await rawHTTP(port, ['POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"mes\r\n0\r\n\r\n']);
  assert.equal(r.status, 400);
  // a streaming client that goes away: its generation is cancelled, the next request is served
  const ctl = new AbortController();
  const resp = await fetch(`${BASE}/v1/chat/completions`, {
    method: 'POST', signal: ctl.signal, headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ stream: true, messages: [{ role: 'user', content: 'LONG_MARKER' }] }),
  });
  const reader = resp.body.getReader();
  await reader.read();
  ctl.abort();
  const ok = await postJSON('/v1/chat/completions', { messages: user });
  assert.equal(ok.status, 200);
  assert.equal(ok.json.choices[0].message.content, 'Hello there!');
});

test('API key, CORS and preflight', async () => {
  const s = await startServer(['--api-key', 'sekrit', '--cors']);
  try {
    let r = await fetch(`${s.base}/health`);
    assert.equal(r.status, 200);
    r = await fetch(`${s.base}/v1/models`);
    assert.equal(r.status, 401);
    assert.equal(r.headers.get('access-control-allow-origin'), '*');
    r = await fetch(`${s.base}/v1/models`, { headers: { authorization: 'Bearer wrong' } });
    assert.equal(r.status, 401);
    r = await fetch(`${s.base}/v1/models`, { headers: { authorization: 'Bearer sekrit' } });
    assert.equal(r.status, 200);
    const m = await postJSON('/v1/messages', { max_tokens: 50, messages: user }, { 'x-api-key': 'sekrit' }, s.base);
    assert.equal(m.status, 200);
    const bad = await postJSON('/v1/messages', { max_tokens: 50, messages: user }, { 'x-api-key': 'nope' }, s.base);
    assert.equal(bad.status, 401);
    assert.equal(bad.json.error.type, 'authentication_error');
    r = await fetch(`${s.base}/v1/chat/completions`, { method: 'OPTIONS' });
    assert.equal(r.status, 204);
    assert.equal(r.headers.get('content-type'), null);
    assert.equal(r.headers.get('access-control-allow-methods'), 'GET, POST, OPTIONS');
    const st = await fetch(`${s.base}/v1/chat/completions`, {
      method: 'POST', headers: { authorization: 'Bearer sekrit', 'content-type': 'application/json' },
      body: JSON.stringify({ stream: true, messages: user }),
    });
    assert.equal(st.headers.get('content-type'), 'text/event-stream');
    assert.equal(st.headers.get('access-control-allow-origin'), '*');
    await st.text();
  } finally {
    const { code } = await s.stop();
    assert.equal(code, 0, s.log());
  }
});
