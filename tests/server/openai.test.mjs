// The official openai npm client against ds4-server: chat completions
// (streamed and not, a tool-call round trip), legacy completions, Responses
// (streamed, with a function-call round trip).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';
import { BASE, weatherTool, stats } from './helpers.mjs';

const client = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: 'dsv4-local', maxRetries: 0 });

test('models list and single model', async () => {
  const list = await client.models.list();
  const ids = [];
  for await (const m of list) ids.push(m.id);
  assert.deepEqual(ids, ['deepseek-v4-flash']);
  const m = await client.models.retrieve('deepseek-v4-flash');
  assert.equal(m.context_length, 32768); // tests/scripts/server.sh: --ctx 32768
  assert.equal(m.top_provider.max_completion_tokens, 32768);
});

test('chat completion, not streamed', async () => {
  const r = await client.chat.completions.create({
    model: 'deepseek-v4-flash',
    messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Say hello' }],
  });
  assert.match(r.id, /^chatcmpl-\d+$/);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.content, 'Hello there!');
  assert.equal(r.choices[0].message.reasoning_content, 'I think.');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(r.usage.prompt_tokens > 0);
  assert.equal(r.usage.completion_tokens, r.usage.total_tokens - r.usage.prompt_tokens);
  assert.equal(r.usage.prompt_tokens_details.cached_tokens + r.usage.prompt_tokens_details.cache_write_tokens, r.usage.prompt_tokens);
});

test('chat completion, streamed, with usage', async () => {
  const stream = await client.chat.completions.create({
    model: 'deepseek-v4-flash', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'Say hello' }],
  });
  let content = '', reasoning = '', role = null, finish = null, usage = null;
  const ids = new Set();
  for await (const ch of stream) {
    ids.add(ch.id);
    if (ch.usage) usage = ch.usage;
    const c = ch.choices[0];
    if (!c) continue;
    if (c.delta.role) role = c.delta.role;
    if (c.delta.content) content += c.delta.content;
    if (c.delta.reasoning_content) reasoning += c.delta.reasoning_content;
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.equal(ids.size, 1);
  assert.equal(role, 'assistant');
  assert.equal(content, 'Hello there!');
  assert.equal(reasoning, 'I think.');
  assert.ok(!content.includes('<think>') && !reasoning.includes('</think>'));
  assert.equal(finish, 'stop');
  assert.ok(usage && usage.prompt_tokens > 0 && 'cache_write_tokens' in usage.prompt_tokens_details);
});

test('chat tool call round trip (streamed call, result, final answer)', async () => {
  const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const stream = await client.chat.completions.create({ model: 'deepseek-v4-flash', stream: true, messages, tools: [weatherTool] });
  const calls = [];
  let finish = null, content = '', reasoning = '';
  for await (const ch of stream) {
    const c = ch.choices[0];
    if (!c) continue;
    if (c.delta.content) content += c.delta.content;
    if (c.delta.reasoning_content) reasoning += c.delta.reasoning_content;
    for (const tc of c.delta.tool_calls || []) {
      if (tc.id) calls[tc.index] = { id: tc.id, name: tc.function.name, args: tc.function.arguments || '' };
      else calls[tc.index].args += tc.function.arguments;
    }
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 1);
  assert.match(calls[0].id, /^call_[0-9a-f]{32}$/);
  assert.equal(calls[0].name, 'get_weather');
  assert.deepEqual(JSON.parse(calls[0].args), { city: 'Paris' });
  assert.ok(!content.includes('DSML'));
  // DeepSeek clients send the reasoning of tool turns back (reasoning_content)
  messages.push({ role: 'assistant', content: '', reasoning_content: reasoning, tool_calls: calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.args } })) });
  messages.push({ role: 'tool', tool_call_id: calls[0].id, content: 'SUNNY_MARKER 24C' });
  const r = await client.chat.completions.create({ model: 'deepseek-v4-flash', messages, tools: [weatherTool] });
  assert.equal(r.choices[0].message.content, 'It is sunny in Paris.');
  assert.equal(r.choices[0].finish_reason, 'stop');
  // the tool turn continued the live session: only the tool result was prefilled
  const st = await stats();
  assert.ok(r.usage.prompt_tokens_details.cached_tokens > 400, JSON.stringify(st));
  assert.ok(st.last.evaluated_tokens < 40, JSON.stringify(st));
});

test('chat: two calls in one turn, typed parameters', async () => {
  const r = await client.chat.completions.create({
    model: 'deepseek-v4-flash', messages: [{ role: 'user', content: 'TWO_CALLS please' }], tools: [weatherTool],
  });
  const m = r.choices[0].message;
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  assert.equal(m.content, 'Checking both.');
  assert.equal(m.tool_calls.length, 2);
  assert.notEqual(m.tool_calls[0].id, m.tool_calls[1].id);
  assert.deepEqual(JSON.parse(m.tool_calls[1].function.arguments), { city: 'Rome & Milan', days: 3 });
});

test('stop sequences truncate before the earliest match', async () => {
  const r = await client.chat.completions.create({
    model: 'deepseek-v4-flash', messages: [{ role: 'user', content: 'STOP_MARKER' }], stop: ['three', 'STOP'],
  });
  assert.equal(r.choices[0].message.content, 'one two ');
  assert.equal(r.choices[0].finish_reason, 'stop');
  const s = await client.chat.completions.create({
    model: 'deepseek-v4-flash', stream: true, messages: [{ role: 'user', content: 'STOP_MARKER' }], stop: 'STOP',
  });
  let content = '';
  for await (const ch of s) content += ch.choices[0]?.delta?.content || '';
  assert.equal(content, 'one two ');
});

test('max_tokens gives finish length', async () => {
  const r = await client.chat.completions.create({
    model: 'deepseek-v4-flash', messages: [{ role: 'user', content: 'LONG_MARKER' }], max_tokens: 5,
  });
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 5);
});

test('legacy completions, streamed and not', async () => {
  const r = await client.completions.create({ model: 'deepseek-v4-flash', prompt: 'Say hello' });
  assert.match(r.id, /^cmpl-/);
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].text, 'I think.</think>Hello there!'); // raw text, §6.5
  const s = await client.completions.create({ model: 'deepseek-v4-flash', prompt: 'Say hello', stream: true });
  let text = '', finish = null;
  for await (const ch of s) { text += ch.choices[0]?.text || ''; if (ch.choices[0]?.finish_reason) finish = ch.choices[0].finish_reason; }
  assert.equal(text, 'I think.</think>Hello there!');
  assert.equal(finish, 'stop');
});

test('responses, streamed text', async () => {
  const stream = await client.responses.create({ model: 'deepseek-v4-flash', input: 'Say hello', stream: true });
  const types = [];
  let text = '', final = null, seq = -1;
  for await (const ev of stream) {
    types.push(ev.type);
    assert.equal(ev.sequence_number, seq + 1);
    seq = ev.sequence_number;
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed') final = ev.response;
  }
  assert.equal(types[0], 'response.created');
  assert.equal(types.at(-1), 'response.completed');
  assert.equal(text, 'Hello there!');
  assert.equal(final.status, 'completed');
  assert.equal(final.output.length, 1);
  assert.equal(final.output[0].content[0].text, 'Hello there!');
  assert.match(final.id, /^resp_[0-9a-f]{24}$/);
  assert.ok(final.usage.input_tokens > 0);
});

test('responses: function call round trip, visible replay continues the live session', async () => {
  const tools = [{ type: 'function', name: 'get_weather', parameters: weatherTool.function.parameters }];
  const input = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const stream = await client.responses.create({ model: 'deepseek-v4-flash', input, tools, stream: true });
  let call = null, final = null;
  for await (const ev of stream) {
    if (ev.type === 'response.output_item.done' && ev.item.type === 'function_call') call = ev.item;
    if (ev.type === 'response.completed') final = ev.response;
  }
  assert.ok(call, 'a function_call item');
  assert.equal(call.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.arguments), { city: 'Paris' });
  assert.equal(final.output.at(-1).call_id, call.call_id);
  // Codex-style replay: the visible items, no reasoning
  input.push({ type: 'function_call', call_id: call.call_id, name: call.name, arguments: call.arguments });
  input.push({ type: 'function_call_output', call_id: call.call_id, output: 'SUNNY_MARKER' });
  const r = await client.responses.create({ model: 'deepseek-v4-flash', input, tools });
  assert.equal(r.output_text, 'It is sunny in Paris.');
  const st = await stats();
  assert.equal(st.last.cache_source, 'responses-visible');
  assert.ok(st.last.evaluated_tokens < 40, JSON.stringify(st));
});

test('responses: unknown call id and durable state are rejected', async () => {
  await assert.rejects(client.responses.create({
    model: 'deepseek-v4-flash', input: [{ type: 'function_call_output', call_id: 'call_nope', output: 'x' }],
  }), (e) => e.status === 400 && /call_nope/.test(e.message));
  await assert.rejects(client.responses.create({ model: 'deepseek-v4-flash', input: 'x', previous_response_id: 'resp_1' }),
    (e) => e.status === 400 && /previous_response_id/.test(e.message));
});
