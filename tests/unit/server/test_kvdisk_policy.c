/* Disk KV cache, the parts without files: store/continued arithmetic, chat
 * anchor, the schedule's cold/continued duplicate suppression, budget slack,
 * hashes and names, eviction order, the tool-id map codec (INTERFACES.md
 * §7.5, §7.6, §7.8, §7.9; the reference's §11.3 disk-cache tests). */
#include "test_util.h"

#include "server/kvdisk.h"

static ds4_kvdisk_opts opts(int align, int trim) {
    ds4_kvdisk_opts o;
    ds4_kvdisk_opts_default(&o, NULL);
    o.boundary_align_tokens = align;
    o.boundary_trim_tokens = trim;
    return o;
}

static void test_defaults(void **state) {
    (void)state;
    ds4_kvdisk_opts o;
    ds4_kvdisk_opts_default(&o, NULL);
    assert_true(o.budget_bytes == (uint64_t)4096 * 1024 * 1024);
    assert_int_equal(o.min_tokens, 512);
    assert_int_equal(o.cold_max_tokens, 30000);
    assert_int_equal(o.continued_interval_tokens, 10000);
    assert_int_equal(o.boundary_trim_tokens, 32);
    assert_int_equal(o.boundary_align_tokens, 2048);
    assert_false(o.reject_different_quant);
    assert_int_equal(o.quant_bits, 2);
    assert_int_equal(o.tool_max_ids, 100000);
}

static void test_store_len(void **state) {
    (void)state;
    ds4_kvdisk_opts o = opts(2048, 32);
    assert_int_equal(ds4_kvdisk_store_len(&o, 11011), 10240);
    assert_int_equal(ds4_kvdisk_store_len(&o, 1695), 1695);
    assert_int_equal(ds4_kvdisk_store_len(&o, 544), 544);   /* n <= min + trim: whole prompt */
    assert_int_equal(ds4_kvdisk_store_len(&o, 2080), 2048); /* 2048 after trim, aligned */
    assert_int_equal(ds4_kvdisk_store_len(&o, 2079), 2079); /* 2047 -> 0 < min: whole prompt */
    o = opts(4096, 32);
    assert_int_equal(ds4_kvdisk_store_len(&o, 11011), 8192);
    o = opts(1000, 0);
    assert_int_equal(ds4_kvdisk_store_len(&o, 3500), 3000);
    o = opts(0, 32);
    assert_int_equal(ds4_kvdisk_store_len(&o, 3500), 3468);
    o = opts(0, 0);
    assert_int_equal(ds4_kvdisk_store_len(&o, 3500), 3500);
}

static void test_continued(void **state) {
    (void)state;
    ds4_kvdisk_opts o = opts(2048, 32);
    assert_int_equal(ds4_kvdisk_continued_step(&o), 10240);
    assert_int_equal(ds4_kvdisk_continued_target(&o, 10239, 0), -1);
    assert_int_equal(ds4_kvdisk_continued_target(&o, 10240, 0), 10240);
    assert_int_equal(ds4_kvdisk_continued_target(&o, 10241, 0), -1);
    assert_int_equal(ds4_kvdisk_continued_target(&o, 20480, 0), 20480);
    /* respects the last store */
    assert_int_equal(ds4_kvdisk_continued_target(&o, 10240, 10240), -1);
    assert_int_equal(ds4_kvdisk_continued_target(&o, 10240, 12000), -1);
    assert_int_equal(ds4_kvdisk_continued_target(&o, 20480, 10240), 20480);
    o = opts(4096, 32);
    assert_int_equal(ds4_kvdisk_continued_step(&o), 12288);
    assert_int_equal(ds4_kvdisk_continued_target(&o, 10240, 0), -1);
    assert_int_equal(ds4_kvdisk_continued_target(&o, 12288, 0), 12288);
    o = opts(0, 32);
    assert_int_equal(ds4_kvdisk_continued_step(&o), 10000);
    assert_int_equal(ds4_kvdisk_continued_target(&o, 30000, 0), 30000);
    assert_int_equal(ds4_kvdisk_continued_target(&o, 30000, 20000), 30000);
    assert_int_equal(ds4_kvdisk_continued_target(&o, 29999, 0), -1);
    /* below min_tokens: never */
    o = opts(128, 0);
    o.continued_interval_tokens = 256;
    assert_int_equal(ds4_kvdisk_continued_step(&o), 256);
    assert_int_equal(ds4_kvdisk_continued_target(&o, 256, 0), -1);
    assert_int_equal(ds4_kvdisk_continued_target(&o, 512, 0), 512);
}

enum { USER = 7, ASSISTANT = 8 };

static void test_chat_anchor(void **state) {
    (void)state;
    const int n = 3000;
    int32_t *t = calloc(n, sizeof(*t));
    for (int i = 0; i < n; i++) t[i] = 100 + i % 50;
    t[0] = 1;
    t[300] = USER; /* an earlier user scaffolding turn */
    t[700] = USER; /* the task */
    t[900] = ASSISTANT;
    t[1500] = USER; /* later turns are ignored */
    t[1800] = ASSISTANT;
    assert_int_equal(ds4_kvdisk_chat_anchor(t, n, USER, ASSISTANT, 512), 700);
    assert_int_equal(ds4_kvdisk_chat_anchor(t, n, USER, ASSISTANT, 701), -1); /* below min */
    assert_int_equal(ds4_kvdisk_chat_anchor(t, n, -1, ASSISTANT, 512), -1);   /* ids invalid */
    assert_int_equal(ds4_kvdisk_chat_anchor(t, n, USER, -1, 512), -1);
    assert_int_equal(ds4_kvdisk_chat_anchor(t, n, 5, ASSISTANT, 0), -1);      /* no user token */
    t[700] = 100;
    assert_int_equal(ds4_kvdisk_chat_anchor(t, n, USER, ASSISTANT, 512), -1); /* last user (300) below min */
    assert_int_equal(ds4_kvdisk_chat_anchor(t, n, USER, ASSISTANT, 300), 300);
    t[700] = USER;

    /* The cold boundary: anchor when it qualifies, else store_len; none
     * outside [min, cold_max]. */
    ds4_kvdisk_opts o = opts(2048, 32);
    assert_int_equal(ds4_kvdisk_cold_boundary(&o, t, n, USER, ASSISTANT), 700);
    t[700] = 100;
    assert_int_equal(ds4_kvdisk_cold_boundary(&o, t, n, USER, ASSISTANT), 2048);
    assert_int_equal(ds4_kvdisk_cold_boundary(&o, t, 1695, USER, ASSISTANT), 1695);
    assert_int_equal(ds4_kvdisk_cold_boundary(&o, t, 511, USER, ASSISTANT), -1);
    o.cold_max_tokens = 2999;
    assert_int_equal(ds4_kvdisk_cold_boundary(&o, t, n, USER, ASSISTANT), -1);
    free(t);
}

static void test_schedule_duplicate_suppression(void **state) {
    (void)state;
    const ds4_kvdisk_opts o = opts(2048, 32);
    ds4_kvdisk_sched s = {0};
    assert_int_equal(ds4_kvdisk_sched_due(&o, &s, 10240), 10240);

    /* A cold store at a continued frontier: the continued store at the same
     * position is suppressed... */
    int prev = ds4_kvdisk_sched_cold_begin(&s, 10240);
    assert_int_equal(ds4_kvdisk_sched_due(&o, &s, 10240), -1);
    ds4_kvdisk_sched_cold_end(&s, prev, true);
    assert_int_equal(ds4_kvdisk_sched_due(&o, &s, 10240), -1);
    assert_int_equal(ds4_kvdisk_sched_due(&o, &s, 20480), 20480);

    /* ...and restored when the cold store fails. */
    ds4_kvdisk_sched_reset(&s);
    prev = ds4_kvdisk_sched_cold_begin(&s, 10240);
    assert_int_equal(ds4_kvdisk_sched_due(&o, &s, 10240), -1);
    ds4_kvdisk_sched_cold_end(&s, prev, false);
    assert_int_equal(ds4_kvdisk_sched_due(&o, &s, 10240), 10240);

    /* A cold store off the frontier still moves the schedule. */
    ds4_kvdisk_sched_reset(&s);
    prev = ds4_kvdisk_sched_cold_begin(&s, 7000);
    ds4_kvdisk_sched_cold_end(&s, prev, true);
    assert_int_equal(s.last_store, 7000);
    assert_int_equal(ds4_kvdisk_sched_due(&o, &s, 10240), 10240);
    ds4_kvdisk_sched_mark(&s, 10240);
    assert_int_equal(ds4_kvdisk_sched_due(&o, &s, 10240), -1);

    /* Resuming from a loaded checkpoint continues from its length. */
    ds4_kvdisk_sched_resume(&s, 20480);
    assert_int_equal(ds4_kvdisk_sched_due(&o, &s, 20480), -1);
    assert_int_equal(ds4_kvdisk_sched_due(&o, &s, 30720), 30720);
    ds4_kvdisk_sched_reset(&s);
    assert_int_equal(ds4_kvdisk_sched_due(&o, &s, 20480), 20480);
}

static void test_budget_slack(void **state) {
    (void)state;
    /* (52 + text + payload + trailer) * 1.01, rounded up, <= budget */
    assert_true(ds4_kvdisk_fits_budget(100, 101));
    assert_false(ds4_kvdisk_fits_budget(100, 100));
    assert_true(ds4_kvdisk_fits_budget(101, 103));  /* 1.01 rounds up to 2 */
    assert_false(ds4_kvdisk_fits_budget(101, 102));
    assert_true(ds4_kvdisk_fits_budget(52184460, 52706305));
    assert_false(ds4_kvdisk_fits_budget(52184460, 52706304));
    assert_true(ds4_kvdisk_fits_budget(0, 0));
    assert_false(ds4_kvdisk_fits_budget(UINT64_MAX, UINT64_MAX));
    assert_true(ds4_kvdisk_file_bytes(10, 1000, 0) == 52 + 10 + 1000 + DS4_KVDISK_CHECKSUM_BYTES);
    assert_true(ds4_kvdisk_file_bytes(10, 1000, 30) == 52 + 10 + 1000 + 30 + DS4_KVDISK_CHECKSUM_BYTES);
}

static void test_hashes_and_names(void **state) {
    (void)state;
    char hex[41];
    ds4_kvdisk_sha1_hex("abc", 3, hex);
    assert_string_equal(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    ds4_kvdisk_sha1_hex("", 0, hex);
    assert_string_equal(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    /* CRC-64/XZ check value, and continuation over split input */
    assert_true(ds4_kvdisk_crc64(0, "123456789", 9) == 0x995DC9BBDF1939FAull);
    assert_true(ds4_kvdisk_crc64(ds4_kvdisk_crc64(0, "1234", 4), "56789", 5) == 0x995DC9BBDF1939FAull);
    assert_true(ds4_kvdisk_crc64(0, "", 0) == 0);

    char sha[41];
    assert_true(ds4_kvdisk_valid_name("a9993e364706816aba3e25717850c26c9cd0d89d.kv", sha));
    assert_string_equal(sha, "a9993e364706816aba3e25717850c26c9cd0d89d");
    assert_true(ds4_kvdisk_valid_name("A9993E364706816ABA3E25717850C26C9CD0D89D.kv", sha));
    assert_string_equal(sha, "a9993e364706816aba3e25717850c26c9cd0d89d");
    assert_false(ds4_kvdisk_valid_name("a9993e364706816aba3e25717850c26c9cd0d89.kv", NULL));  /* 39 hex */
    assert_false(ds4_kvdisk_valid_name("a9993e364706816aba3e25717850c26c9cd0d89dd.kv", NULL)); /* 41 */
    assert_false(ds4_kvdisk_valid_name("g9993e364706816aba3e25717850c26c9cd0d89d.kv", NULL));
    assert_false(ds4_kvdisk_valid_name("a9993e364706816aba3e25717850c26c9cd0d89d.KV", NULL));
    assert_false(ds4_kvdisk_valid_name("a9993e364706816aba3e25717850c26c9cd0d89d.kv.tmp.12", NULL));
    assert_false(ds4_kvdisk_valid_name("", NULL));
    assert_false(ds4_kvdisk_valid_name("notes.txt", NULL));
    assert_string_equal(ds4_kvdisk_reason_name(1), "cold");
    assert_string_equal(ds4_kvdisk_reason_name(6), "agent-session");
    assert_string_equal(ds4_kvdisk_reason_name(9), "unknown");
    assert_string_equal(ds4_kvdisk_outcome_name(DS4_KVDISK_CORRUPT), "corrupt");
}

/* ------------------------------------------------------------------ eviction */

static ds4_kvdisk_entry ent(const char *name, uint32_t tokens, uint64_t bytes, uint32_t hits, uint64_t last_used) {
    ds4_kvdisk_entry e;
    memset(&e, 0, sizeof(e));
    snprintf(e.name, sizeof(e.name), "%s", name);
    e.tokens = tokens;
    e.file_bytes = bytes;
    e.hits = hits;
    e.last_used = last_used;
    return e;
}

/* The published model's payload size (§7.4 formula). */
static uint64_t published_payload(uint64_t T) {
    const uint64_t R = T < 128 ? T : 128;
    return 52 + 4 * T + 4 * 129280 + 8 * 43 + 43 * R * 2048 + 21 * (2560 * (T / 4) + 65536 + 16384) +
           20 * (2048 * (T / 128) + 524288);
}

static void test_eviction_order(void **state) {
    (void)state;
    const uint64_t now = 1700000000;
    bool rm[4];

    /* Within budget: nothing. */
    ds4_kvdisk_entry a[3] = {ent("a", 1000, 100, 0, now), ent("b", 1000, 200, 0, now), ent("c", 1000, 150, 0, now)};
    assert_int_equal(ds4_kvdisk_plan_eviction(a, 3, 450, NULL, now, rm), 0);

    /* Tokens per byte: the worst ratio goes first, and only as many as needed. */
    assert_int_equal(ds4_kvdisk_plan_eviction(a, 3, 300, NULL, now, rm), 1);
    assert_true(!rm[0] && rm[1] && !rm[2]);
    assert_int_equal(ds4_kvdisk_plan_eviction(a, 3, 120, NULL, now, rm), 2);
    assert_true(!rm[0] && rm[1] && rm[2]);

    /* The just-stored file is protected... */
    assert_int_equal(ds4_kvdisk_plan_eviction(a, 3, 300, "b", now, rm), 1);
    assert_true(!rm[0] && !rm[1] && rm[2]);
    assert_int_equal(ds4_kvdisk_plan_eviction(a, 3, 200, "b", now, rm), 2);
    assert_true(rm[0] && !rm[1] && rm[2]);
    /* ...unless it alone exceeds the budget. */
    assert_int_equal(ds4_kvdisk_plan_eviction(a, 3, 199, "b", now, rm), 2);
    assert_true(!rm[0] && rm[1] && rm[2]);

    /* Hits raise the score, decaying with a 6-hour half-life. */
    assert_close(ds4_kvdisk_effective_hits(4, now - 21600, now), 2.0, 1e-12);
    assert_close(ds4_kvdisk_effective_hits(4, now - 43200, now), 1.0, 1e-12);
    assert_close(ds4_kvdisk_effective_hits(3, now, now), 3.0, 1e-12);
    assert_close(ds4_kvdisk_effective_hits(1, now - 8 * 21600, now), 0.0, 0); /* 0.0039 < 0.01 -> 0 */
    assert_close(ds4_kvdisk_effective_hits(0, now, now), 0.0, 0);
    assert_close(ds4_kvdisk_effective_hits(5, 0, now), 0.0, 0); /* never used */
    ds4_kvdisk_entry d[2] = {ent("hot", 1000, 200, 1, now), ent("cold", 1000, 150, 0, now)};
    assert_close(ds4_kvdisk_score(&d[0], now), 2.0 * 1000 / 200, 1e-12);
    assert_int_equal(ds4_kvdisk_plan_eviction(d, 2, 250, NULL, now, rm), 1);
    assert_true(!rm[0] && rm[1]); /* 10 vs 6.67: the hit keeps "hot" */
    d[0].last_used = now - 2 * 86400;
    assert_int_equal(ds4_kvdisk_plan_eviction(d, 2, 250, NULL, now, rm), 1);
    assert_true(rm[0] && !rm[1]); /* two days later the hit is worth nothing: 5 vs 6.67 */
    /* A fresh popular entry beats a stale more popular one. */
    ds4_kvdisk_entry f[2] = {ent("stale", 1000, 100, 8, now - 4 * 21600), ent("fresh", 1000, 100, 1, now)};
    assert_int_equal(ds4_kvdisk_plan_eviction(f, 2, 150, NULL, now, rm), 1);
    assert_true(rm[0] && !rm[1]); /* 8/16 = 0.5 < 1 */

    /* Equal scores: the older last-used goes first. */
    ds4_kvdisk_entry t[3] = {ent("x", 1000, 100, 0, now - 10), ent("y", 1000, 100, 0, now - 30),
                             ent("z", 1000, 100, 0, now - 20)};
    assert_int_equal(ds4_kvdisk_plan_eviction(t, 3, 200, NULL, now, rm), 1);
    assert_true(!rm[0] && rm[1] && !rm[2]);
    assert_int_equal(ds4_kvdisk_plan_eviction(t, 3, 100, NULL, now, rm), 2);
    assert_true(!rm[0] && rm[1] && rm[2]);

    /* Realistic sizes: the shortest (cold) checkpoint amortizes the fixed
     * ~24 MB worst, so the aligned continued frontiers are kept. */
    assert_true(published_payload(2048) == 52184460ull);
    assert_true(published_payload(4096) == 80373132ull);
    assert_true(published_payload(6144) - published_payload(4096) == 28188672ull);
    const uint32_t T[4] = {2048, 10240, 20480, 30720};
    ds4_kvdisk_entry r[4];
    uint64_t total = 0;
    for (int i = 0; i < 4; i++) {
        char nm[16];
        snprintf(nm, sizeof(nm), "t%u", T[i]);
        r[i] = ent(nm, T[i], ds4_kvdisk_file_bytes(5 * T[i], published_payload(T[i]), 0), 0, now);
        total += r[i].file_bytes;
    }
    assert_int_equal(ds4_kvdisk_plan_eviction(r, 4, total - 1, NULL, now, rm), 1);
    assert_true(rm[0] && !rm[1] && !rm[2] && !rm[3]);
    assert_int_equal(ds4_kvdisk_plan_eviction(r, 4, total - r[0].file_bytes - 1, NULL, now, rm), 2);
    assert_true(rm[0] && rm[1] && !rm[2] && !rm[3]);
}

/* ------------------------------------------------------------------ tool-id map */

static void test_toolmap_codec(void **state) {
    (void)state;
    const char *block = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    char long_id[300];
    memset(long_id, 'x', sizeof(long_id));
    const ds4_kvdisk_tool in[4] = {
        {"call_1", 6, block, strlen(block)},
        {"call_2", 6, block, strlen(block)},
        {long_id, 257, block, strlen(block)}, /* id too long: not written */
        {"call_3", 6, "B", 1},
    };
    uint8_t *buf;
    size_t len;
    ds4_err err = {{0}};
    assert_int_equal(ds4_kvdisk_toolmap_encode(in, 4, &buf, &len, &err), 0);
    assert_int_equal(len, 8 + 3 * 8 + 18 + 2 * strlen(block) + 1);
    assert_memory_equal(buf, "KTM\x01", 4);
    assert_int_equal(buf[4], 3);
    ds4_kvdisk_tools out;
    assert_int_equal(ds4_kvdisk_toolmap_decode(buf, len, 100000, &out, &err), 0);
    assert_int_equal(out.n, 3);
    assert_int_equal(out.v[0].id_len, 6);
    assert_memory_equal(out.v[0].id, "call_1", 6);
    assert_int_equal(out.v[1].dsml_len, strlen(block));
    assert_memory_equal(out.v[1].dsml, block, strlen(block));
    assert_string_equal(out.v[2].id, "call_3");
    assert_string_equal(out.v[2].dsml, "B");
    ds4_kvdisk_tools_free(&out);

    /* count limit: at most 4 x tool_max_ids entries, else the map is ignored */
    assert_int_equal(ds4_kvdisk_toolmap_decode(buf, len, 1, &out, &err), 0);
    assert_int_equal(out.n, 3);
    ds4_kvdisk_tools_free(&out);
    buf[4] = 5; /* claims 5 > 4 x 1 */
    assert_int_equal(ds4_kvdisk_toolmap_decode(buf, len, 1, &out, &err), 0);
    assert_int_equal(out.n, 0);
    assert_int_equal(ds4_kvdisk_toolmap_decode(buf, len, 2, &out, &err), 0); /* 5 <= 8: reads what is there */
    assert_int_equal(out.n, 3);
    ds4_kvdisk_tools_free(&out);
    buf[4] = 3;

    /* wrong magic or version: ignored */
    buf[1] = 'X';
    assert_int_equal(ds4_kvdisk_toolmap_decode(buf, len, 100000, &out, &err), 0);
    assert_int_equal(out.n, 0);
    buf[1] = 'T';
    buf[3] = 2;
    assert_int_equal(ds4_kvdisk_toolmap_decode(buf, len, 100000, &out, &err), 0);
    assert_int_equal(out.n, 0);
    buf[3] = 1;

    /* a bad entry stops the scan, keeping the entries before it */
    const size_t e2 = 8 + 2 * (8 + 6 + strlen(block)); /* offset of the third entry */
    const uint32_t bad_lens[][2] = {{0, 1}, {257, 1}, {6, 0}, {6, 1000}};
    for (size_t k = 0; k < sizeof(bad_lens) / sizeof(bad_lens[0]); k++) {
        uint8_t *cp = malloc(len);
        memcpy(cp, buf, len);
        for (int b = 0; b < 4; b++) {
            cp[e2 + b] = (uint8_t)(bad_lens[k][0] >> (8 * b));
            cp[e2 + 4 + b] = (uint8_t)(bad_lens[k][1] >> (8 * b));
        }
        assert_int_equal(ds4_kvdisk_toolmap_decode(cp, len, 100000, &out, &err), 0);
        assert_int_equal(out.n, 2);
        ds4_kvdisk_tools_free(&out);
        free(cp);
    }
    /* dsml_len above 512 MiB */
    buf[e2 + 4] = 0;
    buf[e2 + 5] = 0;
    buf[e2 + 6] = 0;
    buf[e2 + 7] = 0x20; /* 512 MiB + ... */
    buf[e2 + 4] = 1;
    assert_int_equal(ds4_kvdisk_toolmap_decode(buf, len, 100000, &out, &err), 0);
    assert_int_equal(out.n, 2);
    ds4_kvdisk_tools_free(&out);
    /* truncated buffers never read past the end */
    for (size_t cut = 0; cut < len; cut++) {
        assert_int_equal(ds4_kvdisk_toolmap_decode(buf, cut, 100000, &out, &err), 0);
        assert_true(out.n <= 2);
        ds4_kvdisk_tools_free(&out);
    }
    free(buf);

    /* Occurrence in the cache text, with or without the leading "\n\n". */
    const char *with = "xx\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>yy";
    const char *without = "xx<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>yy";
    assert_true(ds4_kvdisk_tool_in_text(with, strlen(with), block, strlen(block)));
    assert_true(ds4_kvdisk_tool_in_text(without, strlen(without), block, strlen(block)));
    assert_false(ds4_kvdisk_tool_in_text(without, strlen(without) - 3, block, strlen(block)));
    assert_false(ds4_kvdisk_tool_in_text(with, strlen(with), "zz", 2));
    assert_false(ds4_kvdisk_tool_in_text(with, strlen(with), "", 0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_store_len),
        cmocka_unit_test(test_continued),
        cmocka_unit_test(test_chat_anchor),
        cmocka_unit_test(test_schedule_duplicate_suppression),
        cmocka_unit_test(test_budget_slack),
        cmocka_unit_test(test_hashes_and_names),
        cmocka_unit_test(test_eviction_order),
        cmocka_unit_test(test_toolmap_codec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
