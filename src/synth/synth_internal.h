/* ds4 — synthetic model internals shared by synth*.c. */
#ifndef DS4_SYNTH_INTERNAL_H
#define DS4_SYNTH_INTERNAL_H

#include "synth/synth.h"

typedef struct synth_vocab {
    char **tokens; /* NUL-terminated */
    int n_tokens;
    char **merges;
    int n_merges;
} synth_vocab;

int synth_vocab_build(synth_vocab *v, int n_vocab, const char *tokdata_path, ds4_err *err);
void synth_vocab_free(synth_vocab *v);

#endif
