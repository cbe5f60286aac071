#!/usr/bin/env node
// Generates tests/data/tokenizer/corpus.txt, the tokenizer test corpus: text
// written for this project plus programmatic variations and seeded random
// strings (deterministic: same output on every run). Documents are separated
// by the line SEPARATOR below; gen_fixtures.js runs the official tokenizer over
// every document.
//
// Usage: node tests/oracle/tokenizer/gen_corpus.js [out.txt]
'use strict';

const fs = require('fs');
const path = require('path');
const frag = require('./corpus_fragments.js');

const { SEPARATOR } = frag;

// xorshift32: a small deterministic PRNG.
let seed = 0x2545f491;
function rnd() {
    seed ^= seed << 13;
    seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    seed >>>= 0;
    return seed / 4294967296;
}
const pick = (a) => a[Math.floor(rnd() * a.length)];
const irange = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));

const docs = [];
const add = (s) => {
    if (s.includes(SEPARATOR)) throw new Error('document contains the separator');
    docs.push(s);
};

// ---------------------------------------------------------------- hand-written text
for (const d of frag.PROSE) add(d);
for (const d of frag.CODE) add(d);
for (const d of frag.SPECIAL_TEXT) add(d);

// ---------------------------------------------------------------- sentence generators
function sentences(words, n, opts) {
    const out = [];
    for (let i = 0; i < n; i++) {
        const len = irange(4, 16);
        const w = [];
        for (let k = 0; k < len; k++) w.push(pick(words));
        let s = w.join(opts.space);
        if (opts.capitalize) s = s[0].toUpperCase() + s.slice(1);
        out.push(s + pick(opts.ends));
    }
    return out;
}
for (let d = 0; d < 40; d++) {
    const en = sentences(frag.EN_WORDS, irange(5, 25), { space: ' ', capitalize: true, ends: ['.', '.', '!', '?', ';', ':', '...', '."', "'s."] });
    add(en.join(pick([' ', ' ', '  ', '\n', '\n\n', '\r\n'])));
}
for (let d = 0; d < 30; d++) {
    const it = sentences(frag.IT_WORDS, irange(5, 20), { space: ' ', capitalize: true, ends: ['.', '.', '!', '?', '…', ' — ', '»'] });
    add(it.join(pick([' ', '\n', '\n\n'])));
}
for (let d = 0; d < 30; d++) {
    const zh = sentences(frag.ZH_WORDS, irange(5, 20), { space: '', capitalize: false, ends: ['。', '，', '！', '？', '；', '：', '、', '……'] });
    add(zh.join(pick(['', '\n', ' '])));
}
for (let d = 0; d < 25; d++) {
    const ja = sentences(frag.JA_WORDS, irange(5, 20), { space: '', capitalize: false, ends: ['。', '、', '！', '？', '「', '」', '・'] });
    add(ja.join(pick(['', '\n', '　'])));
}
for (let d = 0; d < 25; d++) {
    const ko = sentences(frag.KO_WORDS, irange(5, 20), { space: ' ', capitalize: false, ends: ['.', '?', '!', '다.', '요.'] });
    add(ko.join(pick([' ', '\n'])));
}
// Mixed scripts in one sentence.
for (let d = 0; d < 30; d++) {
    const pool = [...frag.EN_WORDS, ...frag.IT_WORDS, ...frag.ZH_WORDS, ...frag.JA_WORDS, ...frag.KO_WORDS, ...frag.MISC_WORDS];
    const s = sentences(pool, irange(4, 12), { space: pick([' ', '', ' ']), capitalize: false, ends: ['.', '。', '!', '？', '', '\n'] });
    add(s.join(pick([' ', '', '\n'])));
}

// ---------------------------------------------------------------- numbers
{
    const digitSets = [
        '0123456789', '٠١٢٣٤٥٦٧٨٩', '۰۱۲۳۴۵۶۷۸۹', '०१२३४५६७८९', '০১২৩৪৫৬৭৮৯', '０１２３４５６７８９',
        '๐๑๒๓๔๕๖๗๘๙', '𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗',
    ];
    const otherNums = ['½', '¾', '²', '³', '¹', 'Ⅻ', 'ⅷ', '①', '⑳', '〇', '〡', '万', '𝍠', '𐄇', '⁴', '₂'];
    for (const set of digitSets) {
        const ch = Array.from(set);
        const lines = [];
        for (let len = 1; len <= 40; len++) {
            let s = '';
            for (let k = 0; k < len; k++) s += ch[(k * 7 + len) % 10];
            lines.push(`${pick(['n=', 'x ', '', ' ', 'v', '#', '(', '-', '$'])}${s}${pick(['', ' ', ',', '.', ')', 'px', '%', '\n'])}`);
        }
        add(lines.join(pick(['\n', ' ', '; '])));
    }
    for (let d = 0; d < 20; d++) {
        const parts = [];
        for (let k = 0; k < 60; k++) {
            const r = rnd();
            if (r < 0.3) parts.push(String(irange(0, 10 ** irange(1, 15))));
            else if (r < 0.45) parts.push((rnd() * 10 ** irange(0, 8)).toFixed(irange(0, 6)));
            else if (r < 0.55) parts.push(`${irange(1, 9)}.${irange(0, 20)}.${irange(0, 99)}`);
            else if (r < 0.65) parts.push(`${irange(1900, 2099)}-${String(irange(1, 12)).padStart(2, '0')}-${String(irange(1, 28)).padStart(2, '0')}`);
            else if (r < 0.72) parts.push(`+${irange(1, 99)} ${irange(100, 999)} ${irange(1000000, 9999999)}`);
            else if (r < 0.8) parts.push(pick(otherNums) + pick(otherNums) + String(irange(0, 999)));
            else if (r < 0.88) parts.push(`0x${irange(0, 0x7fffffff).toString(16)}`);
            else parts.push(Array.from({ length: irange(1, 12) }, () => pick(Array.from(pick(digitSets)))).join(''));
        }
        add(parts.join(pick([' ', ', ', '\n', '\t', ' + ', ''])));
    }
    add('1' + '0'.repeat(100) + '\n' + '9'.repeat(257) + ' ' + '12345678901234567890'.repeat(10));
}

// ---------------------------------------------------------------- whitespace
{
    const ws = [' ', '  ', '\t', '\n', '\r\n', '\r', '\u00a0', '\u3000', '\u2003', '\u0085', '\u2028', '\u2029', '\u000b', '\u000c', '\u202f', '\u205f', '\u1680'];
    const words = ['word', 'x', '(', ')', '{', '}', ';', '中文', 'città', '42', '#', '"', '//', '->', 'éa', '\u0301', '🙂', 'ー'];
    for (let d = 0; d < 40; d++) {
        let s = '';
        for (let k = 0; k < 80; k++) {
            if (rnd() < 0.55) {
                const n = irange(1, 12);
                for (let j = 0; j < n; j++) s += pick(ws);
            } else s += pick(words);
        }
        add(s);
    }
    for (const n of [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100, 255, 256, 257, 1000]) {
        add(' '.repeat(n) + 'x' + ' '.repeat(n) + '\n' + '\t'.repeat(n % 50) + 'y' + '\n'.repeat(n % 40) + 'z' + '\r\n'.repeat(n % 30) + ' ');
    }
    add(' '.repeat(4000));
    add('\n'.repeat(3000));
    add('a' + ' \n'.repeat(500) + 'b' + '\r\n\r\n'.repeat(200));
}

// ---------------------------------------------------------------- emoji and rare Unicode
for (const d of frag.UNICODE_TEXT) add(d);
{
    const emoji = ['😀', '👍', '👍🏽', '👍🏿', '👨‍👩‍👧‍👦', '👩🏽‍💻', '🏳️‍🌈', '🇮🇹', '🇯🇵', '1️⃣', '#️⃣', '❤️', '✨', '🎉', '🦀', '🐍', '☕', '🧑‍🤝‍🧑', '🫠', '🏴󠁧󠁢󠁳󠁣󠁴󠁿', '👁️‍🗨️', '©️', '™'];
    for (let d = 0; d < 20; d++) {
        let s = '';
        for (let k = 0; k < 60; k++) s += pick(emoji) + pick(['', '', ' ', 'ok', '!', '\n', '中', '2', ' hello ']);
        add(s);
    }
}

// ---------------------------------------------------------------- random strings over a class-rich pool
{
    const pool = Array.from(
        'aZqé ÀçñüßøæĳΩλжЯ' + // letters
            '\u0301\u0308\u0327\u20d7\u093f\u0e31' + // marks
            '0179٣۵७０²½Ⅻ①' + // numbers
            '.,;:!?"\'()[]{}<>-_/\\@#$%^&*+=|~`' + // ASCII punct
            '。、，！？「」（）【】《》・ー゛゠〜…—–‘’“”«»¿¡' + // other punct
            '€£¥©®°±×÷∑∫√∞≤≥→⇒★♪☃' + // symbols
            '中文字漢語あいうアイウカタカナｶﾀ한국어ㄱ' + // CJK, kana, halfwidth, hangul
            'ابجדהוअआक' + // RTL, Devanagari
            ' \t\n\r\u00a0\u3000\u2003\u0085\u2028\u000b\u000c' + // whitespace
            '\u200b\u200d\u200e\ufeff\u00ad\u0000\u0001\u001f\u007f\ue000\u0378\uffff' // Cf, controls, PUA, unassigned
    );
    pool.push('😀', '👍🏽', '👨‍👩‍👧', '🇮🇹', '𝐀', '𠀀', '𝄞', '\u{10ffff}', '\u{e0041}', '\r\n', '<think>', '</think>', '｜DSML｜', '<｜User｜>');
    for (let d = 0; d < 600; d++) {
        const n = irange(1, 160);
        let s = '';
        for (let k = 0; k < n; k++) s += pick(pool);
        add(s);
    }
}

const out = process.argv[2] || path.join(__dirname, '..', '..', 'data', 'tokenizer', 'corpus.txt');
const text = docs.join(SEPARATOR);
fs.writeFileSync(out, text);
process.stdout.write(`gen_corpus: ${docs.length} documents, ${Buffer.byteLength(text)} bytes -> ${out}\n`);
