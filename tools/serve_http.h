/* serve_http.h: the HTTP side of `ctxshift serve` (serve_http.c). */
#ifndef CS_TOOLS_SERVE_HTTP_H
#define CS_TOOLS_SERVE_HTTP_H

#include "serve.h"

typedef struct serve_http serve_http;

/* Start listening on cfg->host:cfg->port (port 0: a free one, written to
 * *port_out). chat_template: the template name the chat routes use.
 * Returns 0 or prints the error and returns TOOL_EXIT_FAIL. */
int serve_http_start(const serve_config *cfg, const cs_model *model, serve_engine *engine,
                     const char *chat_template, serve_http **out, int32_t *port_out);
/* End open connections (requests in progress get up to 5 s to finish their
 * response first: call after serve_engine_shutdown), free. */
void serve_http_stop(serve_http *h);

#endif /* CS_TOOLS_SERVE_HTTP_H */
