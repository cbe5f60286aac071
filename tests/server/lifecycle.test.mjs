// Shutdown (SIGTERM during a generation: the stream ends with an error
// finish, the server exits 0), --dump-prompt (the exact bytes the server
// renders, from the vocabulary only), and --kv-type.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { BIN, MODEL, WORK, parseSSE, startServer } from './helpers.mjs';

test('SIGTERM during a stream: finish error, clean exit', async () => {
  // no script: the random model samples until max_tokens
  const s = await startServer([], { script: null });
  const resp = await fetch(`${s.base}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ stream: true, max_tokens: 6000, messages: [{ role: 'user', content: 'Talk for a long time.' }] }),
  });
  const reader = resp.body.getReader();
  let text = '';
  const dec = new TextDecoder();
  while (!text.includes('"delta":{"')) { const { value } = await reader.read(); text += dec.decode(value); }
  const t0 = Date.now();
  const exited = s.stop('SIGTERM');
  for (;;) { const { value, done } = await reader.read(); if (done) break; text += dec.decode(value); }
  const { code } = await exited;
  assert.equal(code, 0, s.log());
  assert.ok(Date.now() - t0 < 10000);
  const ev = parseSSE(text).filter((e) => e.data && e.data !== '[DONE]').map((e) => JSON.parse(e.data));
  assert.equal(ev.at(-1).choices[0].finish_reason, 'error');
  assert.match(s.log(), /shutting down/);
});

test('--dump-prompt renders exactly what the server renders', () => {
  const f = path.join(WORK, 'dump.json');
  const dump = (api, body) => {
    fs.writeFileSync(f, JSON.stringify(body));
    return execFileSync(BIN, ['-m', MODEL, '--dump-prompt', f, '--api', api]).toString();
  };
  assert.equal(dump('chat', { messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Hello' }] }),
    '<｜begin▁of▁sentence｜>You are terse.<｜User｜>Hello<｜Assistant｜><think>');
  assert.equal(dump('chat', { model: 'deepseek-chat', messages: [{ role: 'user', content: 'Hello' }] }),
    '<｜begin▁of▁sentence｜><｜User｜>Hello<｜Assistant｜></think>');
  assert.equal(dump('completions', { prompt: 'PROMPT' }),
    '<｜begin▁of▁sentence｜>You are a helpful assistant<｜User｜>PROMPT<｜Assistant｜><think>');
  assert.equal(dump('messages', { system: [{ type: 'text', text: 'x-anthropic-billing: 1' }, { type: 'text', text: 'Sys' }], messages: [{ role: 'user', content: 'Hi' }], thinking: { type: 'disabled' } }),
    '<｜begin▁of▁sentence｜>Sys<｜User｜>Hi<｜Assistant｜></think>');
  assert.equal(dump('responses', { instructions: 'Be brief.', input: [{ role: 'user', content: 'run pwd' }, { type: 'function_call', call_id: 'call_1', name: 'bash', arguments: '{"command":"pwd"}' }, { type: 'function_call_output', call_id: 'call_1', output: '/tmp' }] }),
    '<｜begin▁of▁sentence｜>Be brief.<｜User｜>run pwd<｜Assistant｜><think></think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="bash">\n<｜DSML｜parameter name="command" string="true">pwd</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜><｜User｜><tool_result>/tmp</tool_result><｜Assistant｜><think>');
  // a bad body fails with the HTTP status and message
  fs.writeFileSync(f, '{"messages": 5}');
  assert.throws(() => execFileSync(BIN, ['-m', MODEL, '--dump-prompt', f, '--api', 'chat'], { stdio: 'pipe' }));
});

test('--kv-type: a bad value exits 2 naming the allowed ones; fp8 serves and logs kv=fp8', async () => {
  const r = spawnSync(BIN, ['-m', MODEL, '--kv-type', 'fp16']);
  assert.equal(r.status, 2);
  assert.match(r.stderr.toString(), /--kv-type needs f16, bf16, fp8 or f32, got 'fp16'/);
  assert.match(execFileSync(BIN, ['--help']).toString(), /--kv-type T +KV cache storage: f16 \(default\), bf16, fp8/);
  const s = await startServer(['--kv-type', 'fp8']);
  const resp = await fetch(`${s.base}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ max_tokens: 4, messages: [{ role: 'user', content: 'Hello' }] }),
  });
  assert.equal(resp.status, 200);
  await resp.json();
  assert.match(s.log(), /prefill_chunk=\d+, kv=fp8,/);
  const { code } = await s.stop('SIGTERM');
  assert.equal(code, 0, s.log());
});
