/* ds4-server — JSON helpers on top of cJSON.
 *
 * cJSON parses request bodies into trees and builds response bodies.  Two
 * things it cannot do are done here with its help:
 *
 *   - raw spans: a few request values must be rendered into the prompt with
 *     the client's exact bytes (tool parameter schemas, tool-call argument
 *     objects: INTERFACES.md §3.8, §3.13), which a parsed tree has lost.  The
 *     span of a member is found with the text layer's object walker and the
 *     end of an array element with cJSON's own parse-end pointer;
 *   - strings from the model may hold invalid UTF-8, which cJSON would copy
 *     into the output as it is: srv_json_str() replaces invalid bytes with
 *     U+FFFD first, so every body we send is valid JSON. */
#ifndef DS4_SERVER_JSONUTIL_H
#define DS4_SERVER_JSONUTIL_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "text/chat_buf.h"

/* A byte range of the request body (not NUL-terminated). */
typedef struct srv_span {
    const char *p;
    size_t n;
} srv_span;

/* Parse a body.  NULL when it is not exactly one JSON value or nests deeper
 * than DS4_JSON_MAX_DEPTH (256) arrays/objects. */
cJSON *srv_json_parse(const char *body, size_t len);

/* Raw text of member `key` of the object in `obj` (first occurrence, as
 * cJSON's lookup); p == NULL when absent or obj is not an object. */
srv_span srv_span_member(srv_span obj, const char *key);
/* Raw text of element i of the array in `arr`; p == NULL when out of range. */
srv_span srv_span_index(srv_span arr, int i);

/* Spans of all elements of the array in `arr` (one pass): malloc'd array,
 * *n = count; NULL with *n = 0 when empty or not an array. */
srv_span *srv_span_elements(srv_span arr, int *n);
/* Element i of a srv_span_elements() result, {NULL,0} when out of range. */
static inline srv_span srv_span_at(const srv_span *v, int n, int i) {
    return i >= 0 && i < n ? v[i] : (srv_span){NULL, 0};
}

/* Type checks that treat an absent member (NULL) as "not given". */
static inline bool srv_json_given(const cJSON *j) { return j && !cJSON_IsNull(j); }

/* A malloc'd copy of s[0..n) with invalid UTF-8 replaced by U+FFFD and NUL
 * bytes dropped, so it can go into a cJSON string. */
char *srv_utf8_clean(const char *s, size_t n);

/* Add a string member from arbitrary bytes (cleaned).  Returns the node. */
cJSON *srv_json_add_str(cJSON *obj, const char *key, const char *s, size_t n);
/* cJSON string node from arbitrary bytes (cleaned). */
cJSON *srv_json_str(const char *s, size_t n);

/* Print compactly and append "\n" if nl; returns malloc'd text, *len set. */
char *srv_json_print(const cJSON *j, bool nl, size_t *len);

/* Decode a JSON string body as the text layer does (for raw keys). */
int srv_json_append_escaped(ds4_textbuf *out, const char *s, size_t n);

#endif
