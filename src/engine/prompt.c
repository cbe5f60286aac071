/* ds4 — CLI and benchmark prompts (see prompt.h). */
#include "engine/prompt.h"

#include <string.h>

static int push(ds4_tokvec *v, int32_t id, ds4_err *err) { return ds4_tokvec_push(v, id, err); }

int ds4_prompt_begin(const ds4_tokenizer *tok, ds4_think_mode think, const char *system, size_t system_len,
                     ds4_tokvec *out, ds4_err *err) {
    const ds4_tok_specials *sp = ds4_tokenizer_specials(tok);
    if (push(out, sp->bos, err)) return -1;
    if (think == DS4_THINK_MAX &&
        ds4_tokenize(tok, ds4_chat_think_max_prefix, strlen(ds4_chat_think_max_prefix), false, out, err))
        return -1;
    if (system && system_len && ds4_tokenize(tok, system, system_len, false, out, err)) return -1;
    return 0;
}

int ds4_prompt_user_turn(const ds4_tokenizer *tok, ds4_think_mode think, const char *text, size_t len, ds4_tokvec *out,
                         ds4_err *err) {
    const ds4_tok_specials *sp = ds4_tokenizer_specials(tok);
    if (push(out, sp->user, err)) return -1;
    if (len && ds4_tokenize(tok, text, len, false, out, err)) return -1;
    if (push(out, sp->assistant, err)) return -1;
    return push(out, think == DS4_THINK_NONE ? sp->think_end : sp->think, err);
}

int ds4_prompt_oneshot(const ds4_tokenizer *tok, ds4_think_mode think, const char *system, size_t system_len,
                       const char *text, size_t len, ds4_tokvec *out, ds4_err *err) {
    static const char bos[] = DS4_CHAT_BOS;
    if (len >= sizeof(bos) - 1 && memcmp(text, bos, sizeof(bos) - 1) == 0)
        return ds4_tokenize(tok, text, len, true, out, err); /* already a rendered prompt */
    if (ds4_prompt_begin(tok, think, system, system_len, out, err)) return -1;
    return ds4_prompt_user_turn(tok, think, text, len, out, err);
}
