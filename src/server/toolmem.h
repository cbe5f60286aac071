/* ds4-server — exact DSML tool replay memory (INTERFACES.md §6.11).
 *
 * Maps tool call ids to the exact DSML block the model sampled for them, so a
 * client that sends the call back as JSON still gets the sampled bytes into
 * the next prompt (and the prompt stays a byte prefix of the live session).
 * All calls of one turn share one stored block.  Entries are kept in LRU
 * order; beyond the id limit the least recently used ids are dropped.
 * Thread-safe (client threads render, the worker stores). */
#ifndef DS4_SERVER_TOOLMEM_H
#define DS4_SERVER_TOOLMEM_H

#include <stdbool.h>
#include <stddef.h>

typedef struct srv_tool_memory srv_tool_memory;

srv_tool_memory *srv_toolmem_new(int max_ids);
void srv_toolmem_free(srv_tool_memory *m);

/* Remember that ids[0..n) were sampled as the block dsml[0..len).
 * from_disk tags the entries as loaded from a checkpoint's map section.
 * 0, or -1 when out of memory. */
int srv_toolmem_put(srv_tool_memory *m, const char *const *ids, int n, const char *dsml, size_t len, bool from_disk);

/* If every id maps to one and the same block, a malloc'd copy of it (*len
 * set, *from_disk says where it came from); otherwise NULL, with *missing =
 * the number of ids not known. */
char *srv_toolmem_replay(srv_tool_memory *m, const char *const *ids, int n, size_t *len, int *missing,
                         bool *from_disk);

bool srv_toolmem_has(srv_tool_memory *m, const char *id);
int srv_toolmem_count(srv_tool_memory *m);

/* Visit every (id, block) whose block occurs verbatim in text[0..n): what a
 * checkpoint's tool-id map section holds (§7.5).  The callback runs with the
 * memory locked and must not call back into it. */
void srv_toolmem_each_in_text(srv_tool_memory *m, const char *text, size_t n,
                              void (*fn)(void *ud, const char *id, const char *dsml, size_t len), void *ud);

#endif
