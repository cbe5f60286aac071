/* ds4 — tokenizer internals shared by tokenizer.c (tables, decoding) and
 * tok_encode.c (pre-tokenizer, BPE). Not part of the public API. */
#ifndef DS4_TEXT_TOK_INTERNAL_H
#define DS4_TEXT_TOK_INTERNAL_H

#include <stdint.h>

#include "text/tokenizer.h"

#define DS4_TOK_N_SPECIAL 7

/* One slot of the merge hash table: the pair (left id, right id) packed in
 * key, its rank and the id of the merged token. */
typedef struct ds4_merge_slot {
    uint64_t key; /* (uint64)left << 32 | right; DS4_MERGE_EMPTY when unused */
    uint32_t rank;
    int32_t result;
} ds4_merge_slot;

#define DS4_MERGE_EMPTY UINT64_MAX /* ids are < 2^31, so no real key has all bits set */

struct ds4_tokenizer {
    size_t n_vocab;

    /* Vocabulary strings, concatenated; token i is strs[str_off[i] .. str_off[i+1]). */
    char *strs;
    uint32_t *str_off;
    /* Decoded bytes of every token (token_text), same layout. */
    char *texts;
    uint32_t *text_off;
    size_t max_text; /* longest token_text */

    /* String -> id: open addressing, power-of-two size. Each slot keeps the
     * upper hash bits next to the id, so probing past other strings rarely
     * touches their bytes. */
    struct ds4_str_slot {
        uint32_t tag; /* upper 32 bits of the string hash */
        int32_t id;   /* -1 = empty */
    } *str_index;
    uint64_t str_index_mask;

    /* (left, right) -> (rank, result): open addressing, power-of-two size. */
    ds4_merge_slot *merges;
    unsigned merge_bits;
    size_t n_merges; /* usable merges in the table */

    /* Token of each single byte (GPT-2 byte alphabet). */
    int32_t byte_tok[256];

    ds4_tok_specials sp;
    /* The seven recognized strings and their ids, in INTERFACES.md 2.7 order. */
    ds4_str special_str[DS4_TOK_N_SPECIAL];
    int32_t special_id[DS4_TOK_N_SPECIAL];
};

static inline uint64_t ds4_merge_hash(uint64_t key, unsigned bits) {
    return (key * 0x9E3779B97F4A7C15ull) >> (64 - bits);
}

/* Rank and result of merging left+right; 0 if found, -1 if the pair has no merge. */
static inline int ds4_merge_find(const struct ds4_tokenizer *t, int32_t left, int32_t right, uint32_t *rank,
                                 int32_t *result) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    uint64_t mask = ((uint64_t)1 << t->merge_bits) - 1;
    for (uint64_t h = ds4_merge_hash(key, t->merge_bits);; h = (h + 1) & mask) {
        const ds4_merge_slot *s = &t->merges[h];
        if (s->key == key) {
            *rank = s->rank;
            *result = s->result;
            return 0;
        }
        if (s->key == DS4_MERGE_EMPTY) return -1;
    }
}

#endif
