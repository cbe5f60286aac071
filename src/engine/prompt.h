/* ds4 — the token prompts of the CLI and of ds4-bench (INTERFACES.md §3.12).
 *
 * One-shot: BOS, [Think Max prefix], [system text], <｜User｜>, prompt,
 * <｜Assistant｜>, then <think> (thinking) or </think> (non-thinking). Each
 * text piece is tokenized as plain text on its own. A prompt that already
 * begins with the literal BOS string is taken as a fully rendered prompt and
 * tokenized with special-token recognition instead. */
#ifndef DS4_ENGINE_PROMPT_H
#define DS4_ENGINE_PROMPT_H

#include <stdbool.h>

#include "text/chat.h"
#include "text/tokenizer.h"

/* Append the conversation start: BOS, [Think Max prefix], [system]. */
int ds4_prompt_begin(const ds4_tokenizer *tok, ds4_think_mode think, const char *system, size_t system_len,
                     ds4_tokvec *out, ds4_err *err);

/* Append one user turn and the generation prefix: <｜User｜> text <｜Assistant｜> <think>|</think>. */
int ds4_prompt_user_turn(const ds4_tokenizer *tok, ds4_think_mode think, const char *text, size_t len, ds4_tokvec *out,
                         ds4_err *err);

/* The whole one-shot prompt (begin + one user turn, or the rendered-prompt rule). */
int ds4_prompt_oneshot(const ds4_tokenizer *tok, ds4_think_mode think, const char *system, size_t system_len,
                       const char *text, size_t len, ds4_tokvec *out, ds4_err *err);

#endif
