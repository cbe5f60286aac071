// Disk KV cache through the server (INTERFACES.md §7): a restarted server
// finds the checkpoint of the same long prompt; files damaged on purpose
// are rejected and removed; the directory never exceeds its budget.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { WORK, postJSON, startServer, stats } from './helpers.mjs';

const system = (tag) => `You are a careful assistant (${tag}). ` + Array.from({ length: 80 }, (_, i) => `Rule ${i}: answer briefly and cite item ${i}.`).join(' ');
const request = (tag, user = 'Say hello') => ({ messages: [{ role: 'system', content: system(tag) }, { role: 'user', content: user }] });
const kvFiles = (dir) => fs.readdirSync(dir).filter((f) => /^[0-9a-f]{40}\.kv$/.test(f));
const dirBytes = (dir) => kvFiles(dir).reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);

test('restart: the same long prompt hits the checkpoint file; damaged files are rejected', async () => {
  const dir = fs.mkdtempSync(path.join(WORK, 'kv-'));
  const args = ['--kv-disk-dir', dir, '--kv-cache-min-tokens', '64'];
  let s = await startServer(args);
  try {
    assert.match(s.log(), /KV disk cache .* align=2048/);
    const r = await postJSON('/v1/chat/completions', request('restart'), {}, s.base);
    assert.equal(r.status, 200);
    assert.match(s.log(), /kv cache stored tokens=\d+ .*reason=cold/);
  } finally {
    assert.equal((await s.stop()).code, 0);
  }
  assert.match(s.log(), /reason=shutdown/);
  assert.equal(kvFiles(dir).length, 2, 'the cold anchor and the shutdown checkpoint');

  s = await startServer(args);
  let hit;
  try {
    const r = await postJSON('/v1/chat/completions', request('restart', 'A different question'), {}, s.base);
    assert.equal(r.status, 200);
    const st = await stats(s.base);
    assert.equal(st.last.cache_source, 'disk-text', JSON.stringify(st));
    assert.ok(st.last.cached_tokens > 1000, JSON.stringify(st));
    assert.ok(st.last.evaluated_tokens < 20, JSON.stringify(st));
    assert.equal(r.json.usage.prompt_tokens_details.cached_tokens, st.last.cached_tokens);
    hit = st.last.disk_file;
    assert.match(s.log(), /kv cache hit text tokens=\d+/);
  } finally {
    await s.stop();
  }

  // flip one byte in the middle of the checkpoint that was hit, truncate the others
  const victim = path.join(dir, hit);
  const buf = fs.readFileSync(victim);
  buf[Math.floor(buf.length / 2)] ^= 0x40;
  fs.writeFileSync(victim, buf);
  const others = kvFiles(dir).filter((f) => f !== hit);
  for (const f of others) fs.truncateSync(path.join(dir, f), 1000);
  s = await startServer(args);
  try {
    const r = await postJSON('/v1/chat/completions', request('restart', 'A third question'), {}, s.base);
    assert.equal(r.status, 200);
    const st = await stats(s.base);
    assert.equal(st.last.cache_source, 'none', 'damaged checkpoints are never used');
    assert.equal(st.disk_hits, 0);
    assert.match(s.log(), /corrupt|CRC|mismatch|invalid/i);
    for (const f of others) assert.ok(!fs.existsSync(path.join(dir, f)) || fs.statSync(path.join(dir, f)).size > 1000, `${f} removed`);
    // the flipped file was deleted when it failed; any file of that name now is a fresh store
    if (fs.existsSync(victim)) assert.notDeepEqual(fs.readFileSync(victim), buf);
  } finally {
    await s.stop();
  }
});

test('the directory never exceeds its budget', async () => {
  const dir = fs.mkdtempSync(path.join(WORK, 'kvb-'));
  const budget = 2 << 20; // --kv-disk-space-mb 2: about two checkpoints of this model
  const s = await startServer(['--kv-disk-dir', dir, '--kv-disk-space-mb', '2', '--kv-cache-min-tokens', '64']);
  try {
    for (const tag of ['b1', 'b2', 'b3', 'b4', 'b5']) {
      const r = await postJSON('/v1/chat/completions', request(tag), {}, s.base);
      assert.equal(r.status, 200);
      assert.ok(dirBytes(dir) <= budget, `${dirBytes(dir)} bytes > budget after ${tag}`);
    }
    assert.ok(kvFiles(dir).length >= 1);
    assert.match(s.log(), /evict/);
  } finally {
    await s.stop();
  }
  assert.ok(dirBytes(dir) <= budget);
});
