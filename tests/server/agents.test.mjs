// Real coding agents against the shared server, offline (loopback only):
// Codex CLI through the Responses API, always; Claude Code through the
// Messages API when DS4_TEST_CLAUDE=1 (its ~16k-token system prompt takes
// ~45 s to prefill on the tiny CPU model, too slow for every `make test`).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { BASE, WORK } from './helpers.mjs';

const bin = (name) => path.resolve('node_modules/.bin', name);

// stdin is closed (/dev/null): both agents otherwise wait for more input
function run(cmd, args, env, cwd, timeoutMs = 150000) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { PATH: process.env.PATH, ...env }, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

test('Codex CLI: codex exec completes one turn over /v1/responses', { timeout: 180000 }, async () => {
  const home = fs.mkdtempSync(path.join(WORK, 'codex-home-'));
  const cwd = fs.mkdtempSync(path.join(WORK, 'codex-work-'));
  fs.writeFileSync(path.join(home, 'config.toml'), [
    'model = "deepseek-v4-flash"',
    'model_provider = "ds4"',
    '',
    '[model_providers.ds4]',
    'name = "ds4"',
    `base_url = "${BASE}/v1"`,
    'wire_api = "responses"',
    'stream_idle_timeout_ms = 1000000',
    'stream_max_retries = 0',
    'request_max_retries = 0',
    '',
  ].join('\n'));
  const r = await run(bin('codex'), ['exec', '--skip-git-repo-check', 'CODEX_MARKER say hi'], { CODEX_HOME: home, HOME: home }, cwd);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout + r.stderr, /Hello from ds4 via Codex\./);
  assert.doesNotMatch(r.stderr, /stream disconnected|error decoding|unexpected status/i);
});

test('Claude Code: claude -p over /v1/messages', { skip: process.env.DS4_TEST_CLAUDE !== '1', timeout: 240000 }, async () => {
  const home = fs.mkdtempSync(path.join(WORK, 'claude-home-'));
  const env = {
    HOME: home,
    ANTHROPIC_BASE_URL: BASE,
    ANTHROPIC_AUTH_TOKEN: 'dsv4-local',
    ANTHROPIC_MODEL: 'deepseek-v4-flash',
    ANTHROPIC_DEFAULT_SONNET_MODEL: 'deepseek-v4-flash',
    ANTHROPIC_DEFAULT_HAIKU_MODEL: 'deepseek-v4-flash',
    ANTHROPIC_DEFAULT_OPUS_MODEL: 'deepseek-v4-flash',
    CLAUDE_CODE_SUBAGENT_MODEL: 'deepseek-v4-flash',
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    DISABLE_AUTOUPDATER: '1',
  };
  const r = await run(bin('claude'), ['-p', 'CLAUDE_MARKER say hi'], env, home);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /Hello from ds4 via Claude Code\./);
});
