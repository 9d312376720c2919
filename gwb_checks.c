/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 *
 * gwb_checks.c: startup checks, run by the check_config hook, so that
 * "apachectl configtest" prints them too.  One log line per smell, each
 * with its own GWB tag and naming its fix; a configuration that cannot work
 * stops httpd (and fails configtest).
 */

#include "apr_hash.h"
#include "apr_strings.h"

#include "mod_gwe_balancer.h"

APLOG_USE_MODULE(gwe_balancer);

static void gwb_check_sticky_name(server_rec *s, proxy_balancer *balancer)
{
    if (strcmp(balancer->s->sticky, "GWEROUTEID") != 0) {
        return;
    }
    if (gwb_is_ours(balancer)) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "GWB0101: %s: stickysession=GWEROUTEID names a cookie "
                     "GWE nodes never set (they set GWROUTEID); "
                     "lbmethod=gwesticky reads GWROUTEID (and GWEROUTEID) "
                     "itself, so remove stickysession=GWEROUTEID",
                     balancer->s->name);
    }
    else {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "GWB0102: %s: stickysession=GWEROUTEID names a cookie "
                     "GWE nodes never set (they set GWROUTEID), so this "
                     "balancer has no stickiness; set lbmethod=gwesticky, "
                     "which reads GWROUTEID",
                     balancer->s->name);
    }
}

static void gwb_check_routes(server_rec *s, proxy_balancer *balancer,
                             apr_pool_t *ptemp)
{
    apr_hash_t *seen = apr_hash_make(ptemp);
    int i;

    for (i = 0; i < balancer->workers->nelts; i++) {
        proxy_worker *w = APR_ARRAY_IDX(balancer->workers, i, proxy_worker *);
        proxy_worker *first;

        if (!*w->s->route) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                         "GWB0103: %s: member %s has no route=, so no "
                         "GWROUTEID cookie can ever stick to it; add "
                         "route=<its GWE node application name>",
                         balancer->s->name, w->s->name);
            continue;
        }
        if (strstr(w->s->route, "${")) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                         "GWB0110: %s: member %s has route=%s: a variable "
                         "no Define names, which httpd kept as it stands "
                         "(AH00111), so no visitor will ever stick to it; "
                         "define the variable (Define NAME value, or -C "
                         "\"Define NAME value\") or write the GWE node's "
                         "application name", balancer->s->name, w->s->name,
                         w->s->route);
        }
        first = apr_hash_get(seen, w->s->route, APR_HASH_KEY_STRING);
        if (first) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                         "GWB0104: %s: members %s and %s both have "
                         "route=%s, so its cookies always go to the first; "
                         "give each member its own GWE node application "
                         "name", balancer->s->name, first->s->name,
                         w->s->name, w->s->route);
            continue;
        }
        apr_hash_set(seen, w->s->route, APR_HASH_KEY_STRING, w);
    }
}

/* A ProxyPass in a virtual host naming a balancer that is defined only in
 * the main server makes httpd define another, byrequests balancer of that
 * name in the virtual host, which then takes its requests. */
static void gwb_check_shadowing(server_rec *s, proxy_balancer *b,
                                apr_hash_t *main_balancers)
{
    proxy_balancer *main_b = apr_hash_get(main_balancers, b->s->name,
                                          APR_HASH_KEY_STRING);

    if (main_b && main_b->lbmethod != b->lbmethod
        && (gwb_is_ours(main_b) || gwb_is_ours(b))) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "GWB0109: %s in virtual host %s:%u uses lbmethod %s, "
                     "but the main server's uses %s; put the <Proxy \"%s\"> "
                     "block inside that <VirtualHost> too",
                     b->s->name, s->server_hostname ? s->server_hostname : "*",
                     s->addrs ? (unsigned)s->addrs->host_port : 0u,
                     b->lbmethod ? b->lbmethod->name : "none",
                     main_b->lbmethod ? main_b->lbmethod->name : "none",
                     b->s->name);
    }
}

/* Each virtual host holds its own copy of the balancers it inherits; the
 * copies share their member array, which with the lbmethod identifies what
 * is worth checking once. */
typedef struct {
    apr_array_header_t *workers;
    const proxy_balancer_method *lbmethod;
} gwb_balancer_key;

typedef struct {
    server_rec *main_s;
    apr_pool_t *ptemp;
    apr_hash_t *checked;         /* of gwb_balancer_key */
    apr_hash_t *main_balancers;  /* name -> the main server's balancer */
} gwb_check_ctx;

static void gwb_check_balancer(server_rec *s, proxy_server_conf *proxy_conf,
                               proxy_balancer *b, void *baton)
{
    gwb_check_ctx *ctx = baton;
    gwb_balancer_key key;

    if (s == ctx->main_s) {
        apr_hash_set(ctx->main_balancers, b->s->name, APR_HASH_KEY_STRING,
                     b);
    }
    memset(&key, 0, sizeof(key));
    key.workers = b->workers;
    key.lbmethod = b->lbmethod;
    if (apr_hash_get(ctx->checked, &key, sizeof(key))) {
        return;
    }
    apr_hash_set(ctx->checked, apr_pmemdup(ctx->ptemp, &key, sizeof(key)),
                 sizeof(key), b);
    gwb_check_sticky_name(s, b);
    if (gwb_is_ours(b)) {
        gwb_check_routes(s, b, ctx->ptemp);
    }
    if (s != ctx->main_s) {
        gwb_check_shadowing(s, b, ctx->main_balancers);
    }
}

void gwb_check_balancers(server_rec *main_s, apr_pool_t *ptemp)
{
    gwb_check_ctx ctx;

    ctx.main_s = main_s;
    ctx.ptemp = ptemp;
    ctx.checked = apr_hash_make(ptemp);
    ctx.main_balancers = apr_hash_make(ptemp);
    gwb_each_balancer(main_s, gwb_check_balancer, &ctx);
}

/* The routes of a balancer's members, as a set. */
static apr_hash_t *gwb_routes_of(proxy_balancer *balancer, apr_pool_t *p)
{
    apr_hash_t *routes = apr_hash_make(p);
    int i;

    for (i = 0; i < balancer->workers->nelts; i++) {
        proxy_worker *w = APR_ARRAY_IDX(balancer->workers, i, proxy_worker *);

        if (*w->s->route) {
            apr_hash_set(routes, w->s->route, APR_HASH_KEY_STRING, "");
        }
    }
    return routes;
}

/* The routes of one set missing from the other, comma separated. */
static const char *gwb_missing_routes(apr_hash_t *have, apr_hash_t *want,
                                      apr_pool_t *p)
{
    apr_hash_index_t *hi;
    const char *missing = NULL;

    for (hi = apr_hash_first(p, want); hi; hi = apr_hash_next(hi)) {
        const char *route = apr_hash_this_key(hi);

        if (!apr_hash_get(have, route, APR_HASH_KEY_STRING)) {
            missing = missing ? apr_pstrcat(p, missing, ", ", route, NULL)
                              : route;
        }
    }
    return missing;
}

static void gwb_check_ws_members(server_rec *s, proxy_balancer *ws)
{
    int i;

    for (i = 0; i < ws->workers->nelts; i++) {
        proxy_worker *w = APR_ARRAY_IDX(ws->workers, i, proxy_worker *);

        if (ap_cstr_casecmp(w->s->scheme, "ws") != 0
            && ap_cstr_casecmp(w->s->scheme, "wss") != 0) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                         "GWB0105: %s takes WebSocket upgrades, but its "
                         "member %s is not ws:// or wss://; write the "
                         "node's address as ws://host:port/server",
                         ws->s->name, w->s->name);
        }
    }
}

static void gwb_check_same_routes(server_rec *s, proxy_balancer *http,
                                  proxy_balancer *ws, apr_pool_t *ptemp)
{
    apr_hash_t *http_routes = gwb_routes_of(http, ptemp);
    apr_hash_t *ws_routes = gwb_routes_of(ws, ptemp);
    const char *ws_lacks = gwb_missing_routes(ws_routes, http_routes, ptemp);
    const char *http_lacks = gwb_missing_routes(http_routes, ws_routes,
                                                ptemp);

    if (ws_lacks || http_lacks) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "GWB0106: %s and its WebSocket balancer %s do not have "
                     "the same routes (only in %s: %s; only in %s: %s), so "
                     "some visitors' WebSockets land on another node than "
                     "their pages; give both a member for every GWE node",
                     http->s->name, ws->s->name, http->s->name,
                     ws_lacks ? ws_lacks : "none", ws->s->name,
                     http_lacks ? http_lacks : "none");
    }
}

/* Each GWEBalancerWebSocket of a server: the WebSocket balancer must
 * exist (startup fails otherwise), and should match its HTTP balancer. */
static int gwb_check_handoffs(server_rec *s, apr_pool_t *ptemp)
{
    gwb_server_conf *conf =
        ap_get_module_config(s->module_config, &gwe_balancer_module);
    int i;

    for (i = 0; i < conf->ws_handoffs->nelts; i++) {
        gwb_ws_handoff *h = &APR_ARRAY_IDX(conf->ws_handoffs, i,
                                           gwb_ws_handoff);
        proxy_balancer *http, *ws;

        gwb_handoff_balancers(s, h, ptemp, &http, &ws);
        if (!ws) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                         "GWB0002: GWEBalancerWebSocket names %s, which is "
                         "not defined here; define it with <Proxy \"%s\"> "
                         "and a ws:// member for every GWE node", h->ws_url,
                         h->ws_url);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        gwb_check_ws_members(s, ws);
        if (!gwb_is_ours(ws)) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                         "GWB0107: %s takes WebSocket upgrades but does not "
                         "route by cookie; add ProxySet lbmethod=gwesticky",
                         ws->s->name);
        }
        if (!http) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                         "GWB0108: GWEBalancerWebSocket names %s, which is "
                         "not defined here, so nothing is handed to %s; "
                         "name the balancer your ProxyPass uses",
                         h->http_url, h->ws_url);
            continue;
        }
        gwb_check_same_routes(s, http, ws, ptemp);
    }
    return OK;
}

/* Handoffs are checked where they are configured: in the main server, and
 * in each virtual host that has its own. */
int gwb_check_all_handoffs(server_rec *main_s, apr_pool_t *ptemp)
{
    const gwb_server_conf *main_conf =
        ap_get_module_config(main_s->module_config, &gwe_balancer_module);
    server_rec *s;

    for (s = main_s; s; s = s->next) {
        const gwb_server_conf *conf =
            ap_get_module_config(s->module_config, &gwe_balancer_module);
        int rv;

        if (!conf->ws_handoffs
            || (s != main_s && conf->ws_handoffs == main_conf->ws_handoffs)) {
            continue;
        }
        if ((rv = gwb_check_handoffs(s, ptemp)) != OK) {
            return rv;
        }
    }
    return OK;
}
