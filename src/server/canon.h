/* ds4-server — tool checkpoint canonicalization (INTERFACES.md §6.12.4).
 *
 * A chat-completions or Anthropic client whose tool calls are not replayed
 * byte for byte (exact replay off, §6.11, or the sampled DSML not known)
 * sends its next request with the calls re-rendered from JSON (canonical
 * DSML, §4.8) and with the EOS that closes the turn.  The live session holds
 * the sampled bytes and no EOS (a tool turn stops at the closing DSML tag),
 * so that request would miss the live prefix and prefill everything again.
 * After such a turn, and before its final response events, the worker
 * therefore brings the live session to the canonical transcript
 * (srv_canon_tool_turn, canon.c): usually by evaluating the missing EOS,
 * otherwise by re-prefilling from the longest disk checkpoint of that text or
 * from empty.  Responses turns never go through this (§6.12.1).
 *
 * This header holds the parts that need no session (the reply as a message,
 * the decision), so they can be tested alone; the step itself is declared in
 * server.h. */
#ifndef DS4_SERVER_CANON_H
#define DS4_SERVER_CANON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "text/chat.h"
#include "text/dsml.h"

/* What the live session needs, comparing it with the canonical transcript. */
typedef enum srv_canon_plan {
    SRV_CANON_KEEP = 0,     /* identical tokens or identical bytes: nothing to do */
    SRV_CANON_EXTEND,       /* the live tokens are a prefix of the canonical ones
                             * (typically only the EOS is missing): evaluate the rest */
    SRV_CANON_EXTEND_TEXT,  /* the live bytes are a prefix of the canonical text but
                             * spelled with other tokens: evaluate tokenize(rest) */
    SRV_CANON_SKIP,         /* the live state differs inside the prompt already: a
                             * rebuild would redo the prompt, so leave it */
    SRV_CANON_REBUILD,      /* the generated tail differs (sampled DSML that is not
                             * canonical): it cannot be rewritten in place */
} srv_canon_plan;

const char *srv_canon_plan_name(srv_canon_plan p);

/* Both sides of the comparison. live_text is the live tokens' bytes. */
typedef struct srv_canon_view {
    const int32_t *live;
    int n_live;
    const char *live_text;
    size_t live_len;
    const int32_t *canon;
    int n_canon;
    const char *canon_text;
    size_t canon_len;
    int prompt_tokens;      /* the request's (effective) prompt length */
} srv_canon_view;

/* The plan, in this order: identical tokens or bytes -> KEEP; live tokens a
 * prefix of the canonical tokens -> EXTEND; live bytes a prefix of the
 * canonical text -> EXTEND_TEXT (the next request would match those bytes
 * anyway, §6.12 step 7, so this is as cheap as EXTEND); common token prefix
 * shorter than the prompt -> SKIP; else REBUILD.  *common gets the common
 * token prefix length. */
srv_canon_plan srv_canon_decide(const srv_canon_view *v, int *common);

/* Append a turn's reply to chat as one assistant message: content, the
 * reasoning when keep_reasoning, and the calls by id, name and arguments with
 * no raw DSML, so that it renders canonically (§4.8), as a client that sends
 * the calls back as JSON will have it rendered.  The message, or NULL when out
 * of memory (a partly built message may then be left in chat). */
ds4_chat_msg *srv_chat_add_reply(ds4_chat *chat, const ds4_dsml_result *r, bool keep_reasoning);

/* What the step did (filled by srv_canon_tool_turn; zero-initialize, then
 * srv_canon_result_free). */
typedef struct srv_canon_result {
    bool ran;               /* the turn qualified and the step ran */
    srv_canon_plan plan;
    ds4_chat_msg *reply;    /* the reply as appended to the request's chat (NULL
                             * when appending failed) */
    ds4_textbuf text;       /* the canonical transcript: rendered prompt +
                             * [reasoning + </think>] + content + canonical DSML + EOS */
    int common;             /* live/canonical common token prefix */
    int n_canon;            /* canonical token count */
    int evaluated;          /* tokens evaluated by the step */
    bool canonical;         /* the live session now holds exactly the bytes of text */
    bool lost;              /* it holds neither this turn nor its canonical form
                             * (a rebuild failed or was cancelled half way) */
} srv_canon_result;

void srv_canon_result_free(srv_canon_result *c);

#endif
