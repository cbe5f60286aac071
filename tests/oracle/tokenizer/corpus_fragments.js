// Hand-written text for the tokenizer test corpus (gen_corpus.js). Everything
// here was written for this project; it is deliberately varied rather than
// meaningful: prose in several languages, source code in several languages,
// text that contains the protocol token strings, and rare Unicode.
'use strict';

// Separates documents in corpus.txt (gen_corpus.js, gen_fixtures.js).
const SEPARATOR = '\n==== ds4 tokenizer corpus document ====\n';

const PROSE = [
    `The lighthouse keeper kept two notebooks. In the first he wrote the weather: wind from the north-west, 14 knots, visibility good, pressure falling slowly. In the second he wrote everything else — the names of the ships that passed, the colour of the sea at dawn, the day the gulls did not come back.

Nobody ever asked to read the second notebook. When the station was automated in the spring, the inspector packed the first one into a crate with the logbooks and the spare lenses, and left the second on the kitchen table, "for whoever wants it."

It is still there, I'm told. It's open at a page that says only: "Tuesday. Fog. I could hear the bell but not see it."`,
    `Q: What's the difference between a list and a tuple?
A: A list is mutable; a tuple isn't. You can't append to a tuple, but you can use it as a dictionary key (if all of its items are hashable, that is).

Q: Why doesn't my loop terminate?!
A: Check the condition. Is \`i\` ever incremented? Did you write \`while (i < n);\` with a stray semicolon? (We've all done it.)`,
    `Dear Ms. O'Neill,

Thank you for your letter of 3 March. I've read it twice — once quickly, once slowly — and I think we agree on more than we disagree on.

First: yes, the bridge needs repairs. The 2019 survey said so; the 2021 survey said so "with some urgency"; the 2023 survey used the word "unsafe". Second: no, closing it for eighteen months isn't acceptable to the 4,000 people who cross it every day.

Yours sincerely,
   J. Whitfield
   Clerk to the Parish Council`,
    `Instructions for the old coffee machine:
  1. Fill the tank (max. 1.2 L) with cold water.
  2. Put 2–3 spoons of ground coffee in the filter...
  3. Press the button ONCE. Don't hold it down!!!
  4. Wait ~4 min.; the light turns from red → green.

Troubleshooting:
  * Light blinking?  -> descale (see p. 17).
  * Coffee too weak? -> more coffee, less water; or a finer grind.
  * Machine silent?  -> is it plugged in??`,
    `It was, the almanac said, the driest summer since records began: 11 mm of rain between June and September, against an average of 190. The river fell so low that the old ford reappeared, and children crossed it on foot, holding their shoes above their heads as if the water might still rise up and take them.`,
    `Il treno per Bologna è partito con venti minuti di ritardo. Nessuno si è lamentato: era la prima mattina di sole dopo una settimana di pioggia, e perfino il capotreno sorrideva. «Perché non succede più spesso?» ha chiesto una bambina. Sua madre ha risposto: «Perché allora non ce ne accorgeremmo più».

Più tardi, in città, abbiamo mangiato tortellini in brodo e bevuto un caffè così forte che sembrava liquirizia. Né io né Giulia avevamo fretta; l'ultimo autobus partiva alle 23:45, e c'era ancora tempo per un gelato (pistacchio e nocciola, ovviamente).`,
    `Perché è così difficile? — Forse perché ciò che è semplice a parole non lo è nei fatti. Però, se ci pensi, è già tanto che ci abbiamo provato: l'università, la città nuova, il lavoro che non c'era... È stata dura, sì, ma è andata.

Ingredienti (per 4 persone): 320 g di spaghetti, 2 spicchi d'aglio, olio extravergine q.b., peperoncino, prezzemolo. Tempo di preparazione: 15′.`,
    `今天天气很好，我们去公园散步。公园里有很多人：有的在跑步，有的在下棋，还有几个孩子在放风筝。风筝飞得很高，像一只红色的小鸟。

我问朋友：“你小时候也放过风筝吗？”他笑着说：“放过，但是每次都挂在树上。”我们都笑了。

回家的路上，我们买了两杯奶茶（一杯少糖，一杯去冰），一共二十八元。`,
    `学习编程的第一步是什么？很多人会说是选择一门语言，比如Python、JavaScript或者C语言。但我觉得更重要的是养成好习惯：写清楚的注释，用有意义的变量名，经常测试自己的代码。

第二步是读别人的代码。GitHub上有很多开源项目，从小项目开始读，比如一个命令行工具，大约1000行左右。`,
    `東京駅から新幹線に乗って、京都まで約二時間十五分です。車内では駅弁を食べたり、窓の外の富士山を眺めたりしました。天気が良かったので、山頂までよく見えました！

京都に着いてから、まずホテルにチェックインしました。フロントの方はとても親切で、「おすすめのお寺はありますか？」と聞くと、地図に印をつけてくれました。

夕方は鴨川沿いを散歩しました。カフェでコーヒーを飲みながら、明日の予定を考えました。`,
    `プログラミング言語「Rust」は、メモリ安全性と高速性を両立させることを目指しています。コンパイラ（rustc）はとても厳しいですが、エラーメッセージは丁寧です。

例：所有権（ownership）、借用（borrowing）、ライフタイム（lifetime）――最初は難しく感じるかもしれません。ｶﾀｶﾅの半角文字や、ひらがな・カタカナ・漢字が混ざった文章もよくあります。`,
    `안녕하세요! 오늘은 날씨가 정말 좋네요. 저는 아침에 공원에서 산책을 하고, 점심에는 친구와 비빔밥을 먹었어요.

한국어는 한글로 쓰는데, 한글은 1443년에 세종대왕이 만들었습니다. 자음 14개와 모음 10개로 이루어져 있어요. 예를 들어 "한국어"는 ㅎ+ㅏ+ㄴ, ㄱ+ㅜ+ㄱ, ㅇ+ㅓ로 만들어집니다.`,
    `Ελληνικά: Η γλώσσα είναι ζωντανή και αλλάζει. Русский: Съешь же ещё этих мягких французских булок, да выпей чаю. Українська: Гей, хто тут? Türkçe: Çalışkan öğrenciler ödevlerini zamanında bitirir. Polski: Zażółć gęślą jaźń. Čeština: Příliš žluťoučký kůň úpěl ďábelské ódy. Deutsch: Größe, Maß, Straße – „Anführungszeichen“. Français : « Où est la bibliothèque ? » — Là-bas, à côté du café. Español: ¿Dónde está el baño? ¡Aquí! Português: Não há ação sem coração. Tiếng Việt: Tôi yêu tiếng nước tôi từ khi mới ra đời.`,
    `العربية: مرحبا بالعالم، هذه جملة قصيرة للاختبار. الأرقام: ١٢٣ و٤٥٦٧.
עברית: שלום עולם! זה משפט קצר לבדיקה, עם מספרים 123 ו־4567.
हिन्दी: नमस्ते दुनिया, यह एक छोटा परीक्षण वाक्य है। संख्या: १२३४५।
ไทย: สวัสดีชาวโลก นี่คือประโยคทดสอบ ๑๒๓๔
বাংলা: আমি বাংলায় গান গাই। ১২৩৪৫`,
];

const CODE = [
    `#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Count the lines of a file; returns -1 if it cannot be opened. */
static long count_lines(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    long n = 0;
    int c;
    while ((c = fgetc(f)) != EOF)
        if (c == '\\n') n++;
    fclose(f);
    return n;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        long n = count_lines(argv[i]);
        if (n < 0) {
            fprintf(stderr, "%s: cannot open\\n", argv[i]);
            return 1;
        }
        printf("%8ld %s\\n", n, argv[i]);
    }
    return 0;
}
`,
    `typedef struct node {
\tint key;
\tstruct node *left, *right;
} node;

node *insert(node *t, int key) {
\tif (!t) {
\t\tnode *n = calloc(1, sizeof(*n));
\t\tn->key = key;
\t\treturn n;
\t}
\tif (key < t->key) t->left = insert(t->left, key);
\telse if (key > t->key) t->right = insert(t->right, key);
\treturn t;
}

#define MAX(a, b) ((a) > (b) ? (a) : (b))
int height(const node *t) { return t ? 1 + MAX(height(t->left), height(t->right)) : 0; }
uint64_t mask = 0xFFFFFFFF00000000ull >> 3; float eps = 1e-6f; x &= ~(1u << 31); y ^= y << 13;
`,
    `import json
import os
from dataclasses import dataclass, field


@dataclass
class Config:
    name: str
    layers: int = 43
    tags: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "layers": self.layers, "tags": self.tags}, indent=2)


def load(path: str) -> Config:
    """Load a config file; missing keys get their defaults."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    return Config(**{k: v for k, v in raw.items() if k in Config.__annotations__})


if __name__ == "__main__":
    cfg = load(os.environ.get("CFG", "config.json"))
    print(cfg.to_json())
    print(f"{cfg.name!r} has {cfg.layers:>4d} layers and {len(cfg.tags)} tags")
    assert cfg.layers % 2 == 1, 'odd number of layers expected'
    squares = [i ** 2 for i in range(10) if i % 3 != 0]
    lambda_ = lambda x, *args, **kw: (x, args, kw)
`,
    `'use strict';
const http = require('http');

async function fetchJson(url, { retries = 3, timeoutMs = 5000 } = {}) {
  for (let attempt = 1; attempt <= retries; attempt++) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
      if (!res.ok) throw new Error(\`HTTP \${res.status} for \${url}\`);
      return await res.json();
    } catch (err) {
      if (attempt === retries) throw err;
      await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
    }
  }
}

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify({ ok: true, path: req.url, t: Date.now() }) + '\\n');
});
server.listen(process.env.PORT ?? 8080, () => console.log('listening…'));
export const sum = (xs) => xs.reduce((a, b) => a + b, 0);
let re = /^[a-z_$][\\w$]*$/i; const obj = {...a, b: [1, 2, 3], 'c-d': null, e: undefined};
`,
    `use std::collections::HashMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Token<'a> {
    Word(&'a str),
    Number(i64),
    Punct(char),
}

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => write!(f, "{w}"),
            Token::Number(n) => write!(f, "{n}"),
            Token::Punct(c) => write!(f, "{c}"),
        }
    }
}

pub fn count_words(text: &str) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for w in text.split_whitespace() {
        *counts.entry(w).or_insert(0) += 1;
    }
    counts
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let v: Vec<u32> = (0..10).filter(|x| x % 2 == 0).collect();
    println!("{:?} {}", v, v.iter().sum::<u32>());
    Ok(())
}
`,
    `#!/bin/sh
# Rotate logs older than 7 days; keep at most 30 archives.
set -eu
LOG_DIR=\${LOG_DIR:-/var/log/myapp}
cd "$LOG_DIR" || exit 1
find . -name '*.log' -mtime +7 -print0 | while IFS= read -r -d '' f; do
    gzip -9 "$f" && echo "archived $f" >&2
done
ls -1t *.gz 2>/dev/null | tail -n +31 | xargs -r rm -f --
for i in $(seq 1 3); do printf '%02d\\t%s\\n' "$i" "$(date +%Y-%m-%dT%H:%M:%S)"; done
[ -f /etc/os-release ] && . /etc/os-release && echo "$PRETTY_NAME"
awk -F: '$3 >= 1000 { print $1 }' /etc/passwd | sort | uniq -c
curl -fsSL -H 'Accept: application/json' "https://example.invalid/api?q=a&b=2" | jq '.items[] | {id, name}'
`,
    `{
  "model": "deepseek-v4-flash",
  "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Ciao! Come stai? 你好！"}
  ],
  "temperature": 0.6,
  "top_p": 0.95,
  "max_tokens": 4096,
  "stream": true,
  "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
  "nested": {"a": [1, 2.5, -3e10, true, false, null], "b": {"c": {"d": "\\u00e9\\n\\t\\"q\\""}}}
}
`,
    `<!DOCTYPE html>
<html lang="it">
<head>
  <meta charset="utf-8">
  <title>Prova &amp; test — pagina</title>
  <style>
    body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 42rem; }
    .warn::before { content: "⚠ "; color: #c00; }
  </style>
</head>
<body>
  <h1 id="top">Benvenuti!</h1>
  <p class="warn">Attenzione: questa è solo una <em>prova</em>.</p>
  <ul>
    <li><a href="/docs?lang=it&amp;v=2">Documentazione</a></li>
    <li><a href="#top">Torna su &uarr;</a></li>
  </ul>
  <script>document.querySelectorAll('li').forEach((li, i) => li.dataset.i = i);</script>
</body>
</html>
`,
    `SELECT u.id, u.name, COUNT(o.id) AS orders, SUM(o.total) AS spent
FROM users AS u
LEFT JOIN orders AS o ON o.user_id = u.id AND o.created_at >= '2024-01-01'
WHERE u.active = TRUE AND u.email LIKE '%@example.org'
GROUP BY u.id, u.name
HAVING COUNT(o.id) > 3
ORDER BY spent DESC NULLS LAST
LIMIT 50;
-- comment with ünïcödé and 中文
`,
    `// Go
package main

import (
\t"fmt"
\t"strings"
)

func main() {
\twords := strings.Fields("  the quick  brown fox  ")
\tfor i, w := range words {
\t\tfmt.Printf("%d:%q\\n", i, w)
\t}
\tm := map[string]int{"a": 1, "b": 2}
\tif v, ok := m["a"]; ok && v > 0 {
\t\tfmt.Println(v)
\t}
}
`,
    `\\documentclass{article}
\\usepackage[utf8]{inputenc}
\\begin{document}
Let $f(x) = \\sum_{n=0}^{\\infty} \\frac{x^n}{n!}$, so $f'(x) = f(x)$ and $e^{i\\pi} + 1 = 0$.
\\begin{align}
  \\nabla \\cdot \\mathbf{E} &= \\frac{\\rho}{\\varepsilon_0} \\\\
  \\int_a^b g(t)\\,dt &\\approx \\frac{b-a}{6}\\left[g(a) + 4g\\!\\left(\\tfrac{a+b}{2}\\right) + g(b)\\right]
\\end{align}
\\end{document}
`,
    `diff --git a/src/main.c b/src/main.c
index 3f2a1b0..9c8d7e6 100644
--- a/src/main.c
+++ b/src/main.c
@@ -10,7 +10,8 @@ int main(int argc, char **argv) {
-    int n = atoi(argv[1]);
+    long n = strtol(argv[1], NULL, 10);
+    if (n <= 0) return 2;
     for (int i = 0; i < n; i++)
         work(i);
`,
    `# Markdown title

Some *emphasis*, some **strong**, some \`inline code\`, a [link](https://example.invalid/path?x=1#frag).

| col A | col B |
|------:|:------|
|  1.5  | ok    |
|  -2   | **no**|

> quoted text
> > nested quote

- [x] done
- [ ] todo

\`\`\`python
print("hello")
\`\`\`
`,
    `2024-05-01T12:00:03.123Z INFO  [worker-3] request id=7f3a9c path=/v1/chat/completions status=200 dur_ms=1843 tokens_in=3353 tokens_out=512
2024-05-01T12:00:03.456Z WARN  [worker-1] slow prefill: 4096 tokens in 2.7s (1517.0 tok/s)
2024-05-01T12:00:04.001Z ERROR [http] client 10.0.0.17:53122 closed connection (EPIPE)
\tat handler (server.c:812)
\tat loop (server.c:1204)
`,
    `    def deeply_nested(self):
        if True:
            for i in range(3):
                while i:
                    try:
                        yield i
                    except Exception as exc:  # noqa: BLE001
                        raise RuntimeError("oops") from exc
                    finally:
                        i -= 1
`,
];

// Text containing the protocol strings and other added-token strings.
const SPECIAL_TEXT = [
    '<｜begin▁of▁sentence｜><｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>',
    '<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>What is 2+2?<｜Assistant｜></think>4<｜end▁of▁sentence｜><｜User｜>And 3+3?<｜Assistant｜><think>\nSimple: 3+3=6.\n</think>\n\n6<｜end▁of▁sentence｜>',
    '<｜Assistant｜></think>\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" string="true">Roma</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>',
    'Literal markers in user content: <think>, </think>, <｜User｜>, ｜DSML｜ and <｜end▁of▁sentence｜> all inside a sentence.',
    'Near misses: <｜User|>, <|User｜>, <｜user｜>, <think >, < think>, </think, ｜DSML, DSML｜, <｜begin▁of▁sentence|>, <<think>>, <｜｜>, ｜｜DSML｜｜.',
    'Other added tokens (not recognized by ds4): <｜fim▁hole｜> <｜fim▁begin｜>x<｜fim▁end｜> <|EOT|> <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜> <｜place▁holder▁no▁7｜> <｜▁pad▁｜> <｜latest_reminder｜>',
    '<think><think></think></think><｜User｜><｜User｜>｜DSML｜｜DSML｜<｜Assistant｜>\n<｜Assistant｜> <｜Assistant｜>',
    'x<think>y</think>z 12<｜User｜>34 中文<｜Assistant｜>日本語 👍<think>👍 ｜DSML｜invoke',
];

// Rare Unicode: combining marks, math, RTL, emoji sequences, format chars.
const UNICODE_TEXT = [
    'Combining: e\u0301 a\u0300 o\u0308 n\u0303 c\u0327 — Zalgo: Z\u0351\u0364\u0300a\u0315\u0352l\u0346\u036Bg\u0313\u0350o\u0489 — Devanagari: कि की कु — Thai: กิน น้ำ — Hebrew points: שָׁלוֹם',
    'Math: ∀x ∈ ℝ, ∃y: x² + y² ≤ 1 ⇒ |x| ≤ 1. ∑ᵢ aᵢbᵢ = ⟨a, b⟩; ∫₀^∞ e^{−x²} dx = √π/2; 𝔽ₚ, 𝐀𝐁𝐂, 𝒳, ℵ₀ < 2^ℵ₀; ∮ ∇×B · dA; ≠ ≈ ≡ ≪ ≫ ⊂ ⊆ ∪ ∩ ∅ ∞.',
    'RTL mixed: abc \u202Eevil\u202C def; العربية English עברית 123 ٤٥٦; \u200Fمرحبا\u200E hello; ﷺ ﷽.',
    'Emoji: 👨‍👩‍👧‍👦 family, 👩🏽‍💻 coder, 🏳️‍🌈 flag, 🇮🇹🇯🇵🇰🇷 flags, 1️⃣2️⃣3️⃣ keycaps, ❤️‍🔥 heart on fire, 🧑🏿‍🦱, 👋🏻👋🏼👋🏽👋🏾👋🏿, 🤌.',
    'Format chars: zero\u200Bwidth, join\u200Der, non\u200Cjoiner, soft\u00ADhyphen, \uFEFFbom, word\u2060joiner, \u2061\u2062\u2063, tag\u{E0061}\u{E0062}.',
    'Spaces: a\u00A0b\u2002c\u2003d\u2009e\u200Af\u202Fg\u205Fh\u3000i\u1680j, lines: k\u2028l\u2029m\u0085n.',
    'Symbols: ©®™ €$£¥₹₿ ←↑→↓↔ ★☆♠♣♥♦ ♩♪♫♬ ☀☁☂☃ ✓✗ ⌘⌥⇧ ⚠️ °C °F ‰ ‱ § ¶ † ‡ • ‣ ′ ″ ‴ ※ ⁂.',
    'Ancient and rare: 𓀀𓀁𓂀 (hieroglyphs), 𐎀𐎁𐎂 (Ugaritic), 𒀀𒀁 (cuneiform), ᚠᚢᚦᚨᚱᚲ (runes), ꦲꦏ꧀ꦱꦫ (Javanese), ᠮᠣᠩᠭᠣᠯ (Mongolian), 𝄞𝄢 (music), 𠀀𠀁𪚥 (CJK ext B), 〆〇〻.',
    'Halfwidth/fullwidth: ＡＢＣａｂｃ１２３！？（）［］｛｝＠＃＄％＆＊＋－＝／＼｜～ ｱｲｳｴｵ ﾞﾟ ｰ ￥￦.',
    'Kana edge cases: ゔゕゖ゙゚゛゜ゝゞゟ゠ヷヸヹヺ・ーヽヾヿ ㇰㇱㇲ ㋐㋑ 〜～ ヶヵ.',
    'Private use and noncharacters: \uE000\uE001\uF8FF \u{F0000} \uFDD0\uFDEF \uFFFE\uFFFF \u{10FFFF} and unassigned \u0378\u0379\u{2FFFE}.',
    'Controls: tab\there, bell\u0007, escape\u001B[31mred\u001B[0m, null\u0000byte, DEL\u007F, C1\u0080\u009F.',
];

const EN_WORDS = (
    'the of and to in is that it for on with as was at by an be this which or from but not are his they we ' +
    'have one had all were there when can your said each she do how their if will up other about out many then ' +
    'them these so some her would make like him into time has look two more write go see number no way could ' +
    "people my than first water been call who oil its now find long down day did get come made may part don't " +
    "it's I'm we'll you've they'd isn't couldn't o'clock self-evident well-known state-of-the-art e-mail U.S. " +
    'Dr. Mr. e.g. i.e. etc. OpenAI GPT-4 iPhone macOS JavaScript TypeScript PostgreSQL HTTP/2 UTF-8 x86_64 ' +
    'lighthouse notebook bridge parish almanac river ford summer children shoes harbour kettle lantern meadow ' +
    'quietly suddenly nevertheless although because whereas however moreover (parenthetical) [bracketed] ' +
    '"quoted" \'single\' #hashtag @mention $100 50% 3.5 1,024 2nd 21st 1990s ~approx. A/B +/- a&b x*y'
).split(' ');

const IT_WORDS = (
    'il la lo gli le un una uno di da in con su per tra fra e è o ma però perché cioè già più può così ' +
    'città università caffè tè virtù gioventù lunedì martedì venerdì giù lì là sì né ciò poiché affinché ' +
    "l'acqua dell'anno all'alba un'altra c'è com'era quest'anno sull'isola nell'ora d'inverno " +
    'ragazzo ragazza bambini strada finestra montagna mare cielo pane vino formaggio pomodoro basilico ' +
    'parlare mangiare dormire leggere scrivere andarono sarebbe avrebbero potrà dovrà farò dirò sarò ' +
    'bellissimo velocemente purtroppo ovviamente finalmente «virgolette» Perché? Sì! Così… É È Ò Ù'
).split(' ');

const ZH_WORDS = (
    '我们 你们 他们 今天 明天 昨天 学习 工作 时间 问题 世界 中国 北京 上海 天气 公园 朋友 老师 学生 电脑 手机 ' +
    '编程 语言 代码 数据 模型 训练 推理 答案 因为 所以 但是 如果 虽然 然后 非常 已经 可以 应该 需要 喜欢 ' +
    '吃饭 喝茶 咖啡 面条 饺子 春天 夏天 秋天 冬天 高兴 快乐 认真 简单 复杂 一二三 百分之 第1 ' +
    'AI模型 Python代码 GPU显卡 3月15日 2024年 100元 iPhone15 「引号」 《书名》 （括号） ——破折号'
).split(' ');

const JA_WORDS = (
    'わたし あなた これ それ あれ ここ そこ 今日 明日 昨日 学校 会社 先生 学生 電車 新幹線 東京 京都 ' +
    'コーヒー ラーメン パソコン スマートフォン プログラム データ モデル テスト サーバー ' +
    '食べる 飲む 行く 来る 見る 書く 読む 話す 聞く です ます でした ません でしょう ください ' +
    'とても 少し たくさん すごく ちょっと きれい 静か 有名 便利 ｶﾀｶﾅ ﾗｰﾒﾝ ヴァイオリン ウィキペディア ' +
    '東京タワー 富士山 日本語 漢字 ひらがな カタカナ 〜 ・ ー ゝ ヽ 々 〇'
).split(' ');

const KO_WORDS = (
    '저는 우리 당신 오늘 내일 어제 학교 회사 선생님 학생 지하철 서울 부산 커피 라면 컴퓨터 프로그램 ' +
    '데이터 모델 테스트 서버 먹다 마시다 가다 오다 보다 쓰다 읽다 말하다 듣다 입니다 있습니다 없어요 ' +
    '정말 조금 많이 아주 예쁜 조용한 유명한 편리한 한국어 한글 세종대왕 ㅋㅋㅋ ㅠㅠ 1등 3개 20살'
).split(' ');

const MISC_WORDS = (
    'Ελλάδα Москва Київ İstanbul Łódź Ærøskøbing Reykjavík São Zürich Kraków Nguyễn naïve façade coöperate ' +
    'résumé jalapeño piñata œuvre Straße ǅungla ﬁle ﬂow ℌ ℍ ℕ ℙ ℚ ℝ ℤ Ω µ Å K ı ß ẞ ǈ ǋ Σσς'
).split(' ');

module.exports = {
    SEPARATOR, PROSE, CODE, SPECIAL_TEXT, UNICODE_TEXT, EN_WORDS, IT_WORDS, ZH_WORDS, JA_WORDS, KO_WORDS, MISC_WORDS,
};
