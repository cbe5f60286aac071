// The official @anthropic-ai/sdk client against ds4-server: messages
// (streamed and not), a tool_use round trip, count_tokens, errors.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { BASE, stats } from './helpers.mjs';

const client = new Anthropic({ baseURL: BASE, apiKey: 'dsv4-local', maxRetries: 0 });
const tools = [{
  name: 'get_weather', description: 'Current weather of a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
}];

test('messages, not streamed', async () => {
  const m = await client.messages.create({
    model: 'deepseek-v4-flash', max_tokens: 200,
    system: [{ type: 'text', text: 'x-anthropic-billing-header: cc_version=1' }, { type: 'text', text: 'You are terse.' }],
    messages: [{ role: 'user', content: 'Say hello' }],
  });
  assert.equal(m.type, 'message');
  assert.equal(m.role, 'assistant');
  assert.deepEqual(m.content.map((b) => b.type), ['thinking', 'text']);
  assert.equal(m.content[0].thinking, 'I think.');
  assert.equal(m.content[1].text, 'Hello there!');
  assert.equal(m.stop_reason, 'end_turn');
  assert.equal(m.usage.input_tokens, 0);
  assert.ok(m.usage.cache_creation_input_tokens + m.usage.cache_read_input_tokens > 0);
});

test('messages, streamed', async () => {
  const stream = client.messages.stream({
    model: 'deepseek-v4-flash', max_tokens: 200, messages: [{ role: 'user', content: 'Say hello' }],
  });
  const events = [];
  stream.on('streamEvent', (e) => events.push(e.type));
  let text = '';
  stream.on('text', (t) => { text += t; });
  const final = await stream.finalMessage();
  assert.equal(text, 'Hello there!');
  assert.equal(events[0], 'message_start');
  assert.equal(events.at(-1), 'message_stop');
  assert.deepEqual(final.content.map((b) => b.type), ['thinking', 'text']);
  assert.equal(final.content[0].signature.length > 0, true);
  assert.equal(final.stop_reason, 'end_turn');
});

test('tool_use round trip, continued from the live session', async () => {
  const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const stream = client.messages.stream({ model: 'deepseek-v4-flash', max_tokens: 500, messages, tools });
  const partial = [];
  stream.on('inputJson', (delta) => partial.push(delta));
  const m = await stream.finalMessage();
  assert.equal(m.stop_reason, 'tool_use');
  const use = m.content.find((b) => b.type === 'tool_use');
  assert.match(use.id, /^toolu_[0-9a-f]{32}$/);
  assert.equal(use.name, 'get_weather');
  assert.deepEqual(use.input, { city: 'Paris' });
  assert.ok(partial.length > 1, 'arguments streamed in fragments');
  assert.equal(partial.join(''), '{"city":"Paris"}');
  messages.push({ role: 'assistant', content: m.content });
  messages.push({ role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: [{ type: 'text', text: 'SUNNY_MARKER' }] }] });
  const r = await client.messages.create({ model: 'deepseek-v4-flash', max_tokens: 500, messages, tools });
  assert.equal(r.content.find((b) => b.type === 'text').text, 'It is sunny in Paris.');
  assert.ok(r.usage.cache_read_input_tokens > 400);
  const st = await stats();
  assert.ok(st.last.evaluated_tokens < 40, JSON.stringify(st));
});

test('tool_result for an unknown id without replay is rejected', async () => {
  await assert.rejects(client.messages.create({
    model: 'deepseek-v4-flash', max_tokens: 10,
    messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_unknown', content: 'x' }] }],
  }), (e) => e.status === 400 && e.error?.type === 'error' && /toolu_unknown/.test(e.message));
});

test('count_tokens', async () => {
  const r = await client.messages.countTokens({ model: 'deepseek-v4-flash', messages: [{ role: 'user', content: 'Say hello' }] });
  assert.ok(r.input_tokens > 3 && r.input_tokens < 20, JSON.stringify(r));
  const withTools = await client.messages.countTokens({ model: 'deepseek-v4-flash', messages: [{ role: 'user', content: 'Say hello' }], tools });
  assert.ok(withTools.input_tokens > r.input_tokens + 100);
});

test('errors use the Anthropic envelope', async () => {
  await assert.rejects(client.messages.create({ model: 'deepseek-v4-flash', max_tokens: 'ten', messages: [] }),
    (e) => e.status === 400 && e.error?.type === 'error' && e.error?.error?.type === 'invalid_request_error');
});
