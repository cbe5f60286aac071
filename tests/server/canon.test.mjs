// Tool checkpoint canonicalization (INTERFACES.md §6.12.4). With exact DSML
// replay off, a client's next request renders the assistant's tool calls
// canonically from their JSON (§4.8) and closes the turn with EOS; after the
// tool turn the server makes that canonical transcript the live state, so the
// next request continues from it instead of prefilling everything again.
// Checked through /ds4/stats, the server log and the SSE byte stream.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { BASE, WORK, parseSSE, postJSON, startServer, stats, weatherTool } from './helpers.mjs';

const NO_REPLAY = '--disable-exact-dsml-tool-replay';

// The messages a stateless chat client sends back after a tool turn: the
// calls as JSON (with the reasoning, as DeepSeek clients do), then the result.
function followUp(first, reasoning, calls, result = 'SUNNY_MARKER 24C') {
  return [
    ...first,
    { role: 'assistant', content: '', reasoning_content: reasoning,
      tool_calls: calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.args } })) },
    ...calls.map((c) => ({ role: 'tool', tool_call_id: c.id, content: result })),
  ];
}

// A streamed chat completion read as raw SSE: the events in order (comments
// included), the accumulated reasoning and calls, finish and usage.
async function streamChat(base, body) {
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  assert.equal(r.status, 200);
  const events = parseSSE(await r.text());
  const calls = [];
  let reasoning = '', finish = null, usage = null;
  for (const ev of events) {
    if (!ev.data || ev.data === '[DONE]') continue;
    const ch = JSON.parse(ev.data);
    if (ch.usage) usage = ch.usage;
    const c = ch.choices?.[0];
    if (!c) continue;
    if (c.delta?.reasoning_content) reasoning += c.delta.reasoning_content;
    for (const tc of c.delta?.tool_calls || []) {
      if (tc.id) calls[tc.index] = { id: tc.id, name: tc.function.name, args: tc.function.arguments || '' };
      else calls[tc.index].args += tc.function.arguments;
    }
    if (c.finish_reason) finish = c.finish_reason;
  }
  return { events, calls, reasoning, finish, usage };
}

const REBUILD_RE = /tool checkpoint canonicalization needs (\d+) tokens rebuild \(live=(\d+) canonical=(\d+) common=(\d+) prompt=(\d+) from=(\w+):(\d+)\)/;

test('chat: only the EOS is missing -> cheap extension, next turn is a memory-token hit', async () => {
  const s = await startServer([NO_REPLAY]);
  try {
    const first = [{ role: 'user', content: 'What is the weather in Paris?' }];
    const r1 = await postJSON('/v1/chat/completions', { messages: first, tools: [weatherTool] }, {}, s.base);
    assert.equal(r1.status, 200);
    const m = r1.json.choices[0].message;
    assert.equal(r1.json.choices[0].finish_reason, 'tool_calls');
    const live = r1.json.usage.prompt_tokens + r1.json.usage.completion_tokens;
    // the scripted DSML is in canonical shape: the live tokens are a prefix
    // of the canonical ones and only the closing EOS is evaluated
    assert.match(s.log(), new RegExp(`tool checkpoint canonicalization extended the live state by 1 tokens \\(live=${live} canonical=${live + 1}\\)`));
    assert.doesNotMatch(s.log(), /tokens rebuild/);
    let st = await stats(s.base);
    assert.deepEqual(st.tool_canon, { extended: 1, rebuilt: 0, skipped: 0 });

    const calls = m.tool_calls.map((c) => ({ id: c.id, name: c.function.name, args: c.function.arguments }));
    const r2 = await postJSON('/v1/chat/completions', { messages: followUp(first, m.reasoning_content, calls), tools: [weatherTool] }, {}, s.base);
    assert.equal(r2.status, 200);
    assert.equal(r2.json.choices[0].message.content, 'It is sunny in Paris.');
    st = await stats(s.base);
    assert.equal(st.last.cache_source, 'memory-token', JSON.stringify(st));
    // the whole canonical transcript of turn 1, EOS included, was reused
    assert.equal(st.last.cached_tokens, live + 1, JSON.stringify(st));
    assert.equal(r2.json.usage.prompt_tokens_details.cached_tokens, live + 1);
    assert.ok(st.last.evaluated_tokens < 40, JSON.stringify(st));
  } finally {
    assert.equal((await s.stop()).code, 0);
  }
});

test('chat stream: non-canonical sampled DSML -> rebuild before the finish events, next turn reuses it', async () => {
  const trace = path.join(fs.mkdtempSync(path.join(WORK, 'canon-')), 'trace.txt');
  const s = await startServer([NO_REPLAY, '--trace', trace]);
  try {
    // the script samples `Rome &amp; Milan`; the client sends back
    // {"city":"Rome & Milan"}, which renders canonically without the entity
    const first = [{ role: 'user', content: 'CANON_MARKER: compare two cities.' }];
    const r1 = await streamChat(s.base, { messages: first, tools: [weatherTool] });
    assert.equal(r1.finish, 'tool_calls');
    assert.deepEqual(JSON.parse(r1.calls[0].args), { city: 'Rome & Milan' });
    const live = r1.usage.prompt_tokens + r1.usage.completion_tokens;

    const log = s.log();
    const m = REBUILD_RE.exec(log);
    assert.ok(m, log);
    const [need, liveLog, canonical, common, prompt, from, start] = m.slice(1, 8).map((x, i) => (i === 5 ? x : Number(x)));
    assert.equal(liveLog, live);
    assert.equal(prompt, r1.usage.prompt_tokens);
    assert.ok(common >= prompt && common < live, m[0]);
    assert.equal(from, 'empty'); // no disk cache: re-prefilled from token 0
    assert.equal(start, 0);
    assert.equal(need, canonical);
    assert.match(log, new RegExp(`tool checkpoint canonicalized via=empty evaluated=${canonical} tokens`));
    // it ran before the final events: its log lines come before the finish line
    assert.ok(log.indexOf(m[0]) < log.indexOf('finish=tool_calls'), log);
    // and the stream got a keepalive comment between the call and the finish chunk
    const ev = r1.events;
    const lastCall = ev.findLastIndex((e) => e.data && e.data.includes('"tool_calls":[{'));
    const fin = ev.findIndex((e) => e.data && e.data.includes('"finish_reason":"tool_calls"'));
    assert.ok(lastCall >= 0 && fin > lastCall, JSON.stringify(ev));
    assert.ok(ev.slice(lastCall + 1, fin).some((e) => e.comment === 'prefill'), JSON.stringify(ev.slice(lastCall, fin + 1)));
    assert.equal(ev.at(-1).data, '[DONE]');
    assert.deepEqual((await stats(s.base)).tool_canon, { extended: 0, rebuilt: 1, skipped: 0 });
    assert.match(fs.readFileSync(trace, 'utf8'), new RegExp(`--- trace: tool_checkpoint_canonicalization plan=rebuild live=${live} canonical=${canonical} .*canonical_state=1 ---`));

    const r2 = await postJSON('/v1/chat/completions', { messages: followUp(first, r1.reasoning, r1.calls), tools: [weatherTool] }, {}, s.base);
    assert.equal(r2.status, 200);
    assert.equal(r2.json.choices[0].message.content, 'It is sunny in Paris.');
    const st = await stats(s.base);
    assert.equal(st.last.cache_source, 'memory-token', JSON.stringify(st));
    assert.equal(st.last.cached_tokens, canonical, JSON.stringify(st));
    assert.ok(st.last.evaluated_tokens < 40, JSON.stringify(st));
  } finally {
    assert.equal((await s.stop()).code, 0);
  }
});

test('rebuild restarts from the longest disk checkpoint of the canonical text', async () => {
  const dir = fs.mkdtempSync(path.join(WORK, 'canon-kv-'));
  const s = await startServer([NO_REPLAY, '--kv-disk-dir', dir, '--kv-cache-min-tokens', '64']);
  try {
    const system = 'You are a careful assistant. ' + Array.from({ length: 60 }, (_, i) => `Rule ${i}: answer briefly.`).join(' ');
    const first = [{ role: 'system', content: system }, { role: 'user', content: 'CANON_MARKER: compare two cities.' }];
    const r1 = await postJSON('/v1/chat/completions', { messages: first, tools: [weatherTool] }, {}, s.base);
    assert.equal(r1.status, 200);
    assert.match(s.log(), /kv cache stored tokens=(\d+) .*reason=cold/);
    const cold = Number(/kv cache stored tokens=(\d+) .*reason=cold/.exec(s.log())[1]);
    const m = REBUILD_RE.exec(s.log());
    assert.ok(m, s.log());
    const canonical = Number(m[3]);
    assert.equal(m[6], 'disk');
    assert.equal(Number(m[7]), cold); // the system/tools prefix stored by the cold save
    assert.equal(Number(m[1]), canonical - cold);

    const msg = r1.json.choices[0].message;
    const calls = msg.tool_calls.map((c) => ({ id: c.id, name: c.function.name, args: c.function.arguments }));
    await postJSON('/v1/chat/completions', { messages: followUp(first, msg.reasoning_content, calls), tools: [weatherTool] }, {}, s.base);
    const st = await stats(s.base);
    assert.equal(st.last.cache_source, 'memory-token', JSON.stringify(st));
    assert.equal(st.last.cached_tokens, canonical, JSON.stringify(st));
  } finally {
    assert.equal((await s.stop()).code, 0);
  }
});

test('anthropic: tool_use turn canonicalized, the tool_result turn continues without a second EOS', async () => {
  const s = await startServer([NO_REPLAY]);
  const tools = [{ name: 'get_weather', description: 'Current weather of a city', input_schema: weatherTool.function.parameters }];
  const headers = { 'anthropic-version': '2023-06-01' };
  try {
    const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
    const r1 = await postJSON('/v1/messages', { model: 'deepseek-v4-flash', max_tokens: 500, messages, tools }, headers, s.base);
    assert.equal(r1.status, 200);
    assert.equal(r1.json.stop_reason, 'tool_use');
    let st = await stats(s.base);
    const live = st.last.prompt_tokens + st.last.generated_tokens;
    assert.deepEqual(st.tool_canon, { extended: 1, rebuilt: 0, skipped: 0 });
    const use = r1.json.content.find((b) => b.type === 'tool_use');
    messages.push({ role: 'assistant', content: r1.json.content });
    messages.push({ role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: [{ type: 'text', text: 'SUNNY_MARKER' }] }] });
    const body = { model: 'deepseek-v4-flash', max_tokens: 500, messages, tools };
    const count = await postJSON('/v1/messages/count_tokens', body, headers, s.base);
    const r2 = await postJSON('/v1/messages', body, headers, s.base);
    assert.equal(r2.status, 200);
    assert.equal(r2.json.content.find((b) => b.type === 'text').text, 'It is sunny in Paris.');
    st = await stats(s.base);
    assert.equal(st.last.cache_source, 'anthropic-tool-output', JSON.stringify(st));
    assert.equal(st.last.cached_tokens, live + 1, JSON.stringify(st));
    // the live tail is not given the EOS twice: the effective prompt is the
    // request's own tokenization
    assert.equal(st.last.prompt_tokens, count.json.input_tokens, JSON.stringify(st));
    assert.ok(st.last.evaluated_tokens < 40, JSON.stringify(st));
  } finally {
    assert.equal((await s.stop()).code, 0);
  }
});

test('never for Responses, nor with exact replay on', async () => {
  const s = await startServer([NO_REPLAY]);
  try {
    const r = await postJSON('/v1/responses', {
      model: 'deepseek-v4-flash', input: [{ role: 'user', content: 'What is the weather in Paris?' }],
      tools: [{ type: 'function', name: 'get_weather', parameters: weatherTool.function.parameters }],
    }, {}, s.base);
    assert.equal(r.status, 200);
    assert.ok(r.json.output.some((o) => o.type === 'function_call'), r.text);
    assert.deepEqual((await stats(s.base)).tool_canon, { extended: 0, rebuilt: 0, skipped: 0 });
    assert.doesNotMatch(s.log(), /tool checkpoint canonicalization/);
  } finally {
    assert.equal((await s.stop()).code, 0);
  }
  // the shared server replays the sampled DSML exactly: nothing to canonicalize
  const r = await postJSON('/v1/chat/completions', { messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools: [weatherTool] });
  assert.equal(r.json.choices[0].finish_reason, 'tool_calls');
  const st = await stats(BASE);
  assert.equal(st.tool_canon.extended + st.tool_canon.rebuilt, 0, JSON.stringify(st));
});
