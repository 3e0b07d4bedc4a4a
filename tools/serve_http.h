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
/* Stop accepting: the listening socket is closed, so a new connection is
 * refused; open connections go on (their requests finish, keep-alive
 * connections may send more, which the draining engine answers 503). */
void serve_http_quiesce(serve_http *h);
/* End open connections (requests in progress get up to 3 s to finish their
 * response first: call after serve_engine_shutdown), free. */
void serve_http_stop(serve_http *h);

#endif /* CS_TOOLS_SERVE_HTTP_H */
