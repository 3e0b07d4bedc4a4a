/* serve_page.h: the page of `ctxshift serve` (the files of tools/page), embedded in
 * the binary at build time (cmake/embed_page.cmake writes the generated
 * serve_page_data.c in the build folder), so GET / needs no file on disk. */
#ifndef CS_TOOLS_SERVE_PAGE_H
#define CS_TOOLS_SERVE_PAGE_H

#include <stddef.h>

typedef struct serve_page_file {
    const char *path;          /* "/index.html", ... */
    const char *content_type;  /* from the file's extension */
    const unsigned char *data; /* the file's bytes (static storage) */
    size_t len;
} serve_page_file;

/* The embedded file served at url ("/" is "/index.html"), or NULL when
 * there is none. Query strings are not part of url (libmicrohttpd strips
 * them). Cost: a linear scan of the few page files. */
const serve_page_file *serve_page_find(const char *url);

#endif /* CS_TOOLS_SERVE_PAGE_H */
