// Prefix reuse (INTERFACES.md §6.12): a request that extends the previous
// conversation prefills only its new suffix. Checked through usage, the
// /ds4/stats endpoint and the trace file.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { BASE, postJSON, stats, parseSSE } from './helpers.mjs';

const long = 'Background: ' + Array.from({ length: 120 }, (_, i) => `fact ${i} is noted.`).join(' ');

test('thinking turn: the next request continues from the live session (thinking-visible)', async () => {
  const first = [{ role: 'user', content: `${long} Prefix test one.` }];
  const r1 = await postJSON('/v1/chat/completions', { messages: first });
  assert.equal(r1.status, 200);
  const p1 = r1.json.usage.prompt_tokens;
  const r2 = await postJSON('/v1/chat/completions', {
    messages: [...first, { role: 'assistant', content: r1.json.choices[0].message.content }, { role: 'user', content: 'And now?' }],
  });
  assert.equal(r2.status, 200);
  const st = await stats();
  assert.equal(st.last.cache_source, 'thinking-visible');
  // everything of request 1 (prompt and generated reply, including the
  // hidden reasoning) is reused; only the new turn is prefilled
  assert.equal(r2.json.usage.prompt_tokens_details.cached_tokens, p1 + r1.json.usage.completion_tokens);
  assert.equal(st.last.evaluated_tokens, r2.json.usage.prompt_tokens - r2.json.usage.prompt_tokens_details.cached_tokens);
  assert.ok(st.last.evaluated_tokens < 20, JSON.stringify(st));
  const trace = fs.readFileSync(process.env.DS4_TEST_TRACE, 'utf8');
  assert.match(trace, /cache_source: thinking-visible/);
  assert.match(trace, /--- rendered prompt ---\n<｜begin▁of▁sentence｜><｜User｜>Background:/);
});

test('non-thinking turn: exact token prefix (memory-token)', async () => {
  const first = [{ role: 'user', content: `${long} NOTHINK_MARKER` }];
  const r1 = await postJSON('/v1/chat/completions', { messages: first, thinking: { type: 'disabled' } });
  assert.equal(r1.json.choices[0].message.content, 'Plain answer.');
  const r2 = await postJSON('/v1/chat/completions', {
    thinking: { type: 'disabled' },
    messages: [...first, { role: 'assistant', content: 'Plain answer.' }, { role: 'user', content: 'More please.' }],
  });
  assert.equal(r2.status, 200);
  const st = await stats();
  assert.equal(st.last.cache_source, 'memory-token');
  assert.ok(st.last.cached_tokens > r1.json.usage.prompt_tokens, JSON.stringify(st));
  assert.ok(st.last.evaluated_tokens < 20, JSON.stringify(st));
});

test('a different conversation misses and prefills cold', async () => {
  await postJSON('/v1/chat/completions', { messages: [{ role: 'user', content: 'Something else entirely.' }] });
  const st = await stats();
  assert.equal(st.last.cache_source, 'none');
  assert.equal(st.last.cached_tokens, 0);
});

test('streams start with a prefill keepalive comment', async () => {
  const r = await fetch(`${BASE}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ stream: true, messages: [{ role: 'user', content: long }] }),
  });
  assert.equal(r.headers.get('content-type'), 'text/event-stream');
  assert.equal(r.headers.get('cache-control'), 'no-cache');
  const ev = parseSSE(await r.text());
  assert.equal(ev[0].comment, 'prefill');
  assert.equal(ev.at(-1).data, '[DONE]');
});
