// 16 clients at once for 20 s (DS4_CONC_SECONDS) against the shared server
// (queue limit 4): every request is answered or refused with 429, replies
// are never mixed up between clients, and the server survives.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BASE, parseSSE } from './helpers.mjs';

const SECONDS = Number(process.env.DS4_CONC_SECONDS || 20);
const MARKERS = { CONC_A: 'Reply alpha one two three.', CONC_B: 'Reply beta four five six.', CONC_C: 'Reply gamma seven eight nine.', CONC_D: 'Reply delta ten eleven twelve.' };
const KEYS = Object.keys(MARKERS);

async function one(client, n) {
  const key = KEYS[(client + n) % 4];
  const stream = (client + n) % 2 === 0;
  const anthropic = client % 3 === 0;
  const path = anthropic ? '/v1/messages' : '/v1/chat/completions';
  const body = { stream, max_tokens: 64, messages: [{ role: 'user', content: `client ${client} request ${n}: ${key}` }] };
  const r = await fetch(`${BASE}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await r.text();
  if (r.status === 429) {
    assert.match(JSON.parse(text).error.message, /busy/); // both error envelopes have error.message
    return 'busy';
  }
  assert.equal(r.status, 200, text);
  let content = '';
  if (!stream) {
    const j = JSON.parse(text);
    content = anthropic ? j.content.filter((b) => b.type === 'text').map((b) => b.text).join('') : j.choices[0].message.content;
  } else {
    const ids = new Set();
    for (const ev of parseSSE(text)) {
      if (!ev.data || ev.data === '[DONE]') continue;
      const d = JSON.parse(ev.data);
      if (anthropic) {
        if (d.type === 'message_start') ids.add(d.message.id);
        if (d.type === 'content_block_delta' && d.delta.type === 'text_delta') content += d.delta.text;
      } else {
        ids.add(d.id);
        content += d.choices[0]?.delta?.content || '';
      }
    }
    assert.equal(ids.size, 1, 'one id per stream');
  }
  assert.equal(content, MARKERS[key], `client ${client} request ${n} got another client's reply`);
  return 'ok';
}

test(`16 concurrent clients for ${SECONDS} s`, async () => {
  const end = Date.now() + SECONDS * 1000;
  const counts = { ok: 0, busy: 0 };
  await Promise.all(Array.from({ length: 16 }, async (_, c) => {
    for (let n = 0; Date.now() < end; n++) {
      const r = await one(c, n);
      counts[r]++;
      if (r === 'busy') await new Promise((res) => setTimeout(res, 50)); // back off like a real client
    }
  }));
  console.log(`concurrency: ${counts.ok} answered, ${counts.busy} refused with 429`);
  assert.ok(counts.ok > 16, JSON.stringify(counts));
  const h = await fetch(`${BASE}/health`);
  assert.equal(h.status, 200);
});
