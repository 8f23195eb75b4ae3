/* web.h: the analysts' search page on taca-featured's HTTP listener (--http / --metrics):
 *   GET /                     the page (services/featured/page.html, compiled in; no external files)
 *   GET /api/info             JSON: samples, pixel format, models (dims, counts, caption and image
 *                             search, kind, space), aliases [{"name","target"}]
 *   GET /api/search?q=TEXT&model=NAME&k=K[&modality=image|text][&metric=ip|cosine]
 *                             JSON: {"model","q","results":[{"rank","index","key","caption","score","metadata"}]}
 *                             — the Search RPC's own handler answers it (same checks, same hits)
 *   POST /api/search?model=NAME&k=K[&query_model=M]  body: an image (JPEG/PNG/WebP) to search by,
 *                             embedded by the query model's encoder (taca-featured --model); same JSON
 *   GET /thumb?index=N        the stored crop as JPEG (raw crops are encoded, JPEG ones sent as is)
 * With --token, /api/... and /thumb need "Authorization: Bearer TOKEN" (401 otherwise); the page
 * itself is static and asks for the token (or takes it from the URL's #token=...). */
#ifndef TACA_FEATURED_WEB_H
#define TACA_FEATURED_WEB_H

#include "services/featured/http.h"

/* http_handlers.app for arg = the featured state. */
void web_handle(void *featured_state, const char *target, const char *authorization, const char *body, size_t body_len,
                http_reply *out);

#endif
