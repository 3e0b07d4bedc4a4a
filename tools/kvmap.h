/* kvmap.h: a picture of the KV cache for the tools (--kv-map, --kv-map-svg).
 * After each event (shift, defrag, sequence end, ...) the caller records
 * the cache; the text map goes to a stream at once, the SVG timeline (one
 * row per event) is written at the end. Uses only ctxshift.h. */
#ifndef CS_TOOL_KVMAP_H
#define CS_TOOL_KVMAP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ctxshift.h"

typedef struct tool_kvmap tool_kvmap;

/* text: where text maps go (NULL: none). svg_path: the SVG timeline file
 * written by tool_kvmap_finish (NULL: none). width: characters per map line
 * (0: 64); a cache larger than width*8 cells draws one character per group
 * of cells. Returns NULL on allocation failure (message printed). */
tool_kvmap *tool_kvmap_new(FILE *text, const char *svg_path, int32_t width);

/* Record the cache of ctx after an event named `event` ("context shift",
 * "defrag", "sequence 3 ended", ...): prints "[kv-map] <event>: used U/SIZE,
 * holes H, frag F[, pending shift P]" and the map rows to the text stream
 * (a legend once, before the first map), and keeps the event for the SVG.
 * One character per cell (or group; a group shows its most common state):
 * 'A'..'Z' sequence 0..25, '0'..'9' sequence 26..35, '@' higher, '*' a
 * cell shared by several sequences, '.' a hole (empty below cell_max),
 * ' ' free beyond cell_max; a pending K-shift turns a letter lowercase
 * ('+' for shared, '~' for non-letters). Cost: O(cache size). Allocation
 * failures are reported once and disable the SVG. */
void tool_kvmap_event(tool_kvmap *m, const cs_context *ctx, const char *event);

/* Write the SVG (if any). Returns 0, or 1 when the file cannot be written
 * (message printed). */
int tool_kvmap_finish(tool_kvmap *m);

void tool_kvmap_free(tool_kvmap *m); /* NULL is a no-op */

#endif /* CS_TOOL_KVMAP_H */
