/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 *
 * gwb_route.c: routing.  The lbmethod gwesticky (its finder, the route
 * index behind its lookups, the fallback choice) and the WebSocket handoff.
 * mod_gwe_balancer.c's header comment explains the algorithm.
 */

#include "http_core.h"
#include "http_request.h"
#include "apr_atomic.h"
#include "apr_strings.h"

#include "mod_gwe_balancer.h"

APLOG_USE_MODULE(gwe_balancer);

/* Request environment for logs; the BALANCER_* names are those of httpd's
 * built-in sticky code, so existing LogFormats keep working. */
#define GWB_ENV_DECISION "GWE_ROUTE_DECISION"

typedef struct {
    proxy_balancer *balancer;
    gwb_balancer *rec;          /* NULL: a balancer started without one */
    request_rec *r;
} gwb_lookup_ctx;

static const gwb_name gwb_default_names[] = {
    { "GWROUTEID", sizeof("GWROUTEID") - 1 },
    { "GWEROUTEID", sizeof("GWEROUTEID") - 1 }  /* Genesys' sample's typo */
};

static APR_OPTIONAL_FN_TYPE(proxy_balancer_get_best_worker)
    *gwb_get_best_worker = NULL;
static APR_OPTIONAL_FN_TYPE(ap_proxy_retry_worker) *gwb_retry_worker = NULL;

/* Returns 0 when mod_proxy or mod_proxy_balancer is missing. */
int gwb_route_init(void)
{
    gwb_get_best_worker =
        APR_RETRIEVE_OPTIONAL_FN(proxy_balancer_get_best_worker);
    gwb_retry_worker = APR_RETRIEVE_OPTIONAL_FN(ap_proxy_retry_worker);
    return gwb_get_best_worker && gwb_retry_worker;
}

int gwb_is_ours(const proxy_balancer *balancer)
{
    return balancer->lbmethod == &gwb_method;
}

static void gwb_names_of(const gwb_server_conf *conf,
                         const gwb_name **names, int *n_names)
{
    if (conf->cookie_names) {
        *names = (const gwb_name *)conf->cookie_names->elts;
        *n_names = conf->cookie_names->nelts;
    }
    else {
        *names = gwb_default_names;
        *n_names = (int)(sizeof(gwb_default_names) / sizeof(gwb_name));
    }
}

/* A member in error gets its retry= chance here, as in httpd's own
 * lbmethods: it becomes usable again once the retry interval is over. */
static int gwb_worker_usable(proxy_worker *w, request_rec *r)
{
    if (!PROXY_WORKER_IS_USABLE(w)) {
        gwb_retry_worker("BALANCER", w, r->server);
    }
    return PROXY_WORKER_IS_USABLE(w);
}

static int gwb_route_equals(const char *member_route, const char *route,
                            size_t len)
{
    return strncmp(member_route, route, len) == 0 && member_route[len] == '\0';
}

/* ------------------------------------------------------------------------
 * Route index: a lookup costs the same for 2 members or 256.
 *
 * Per balancer record, an open-addressing table of (route hash, member),
 * in lookup order: regular members before hot standbys.  The finder runs
 * under the balancer's own thread lock (mod_proxy_balancer's
 * find_best_worker()), which also guards the table, so no lock of ours is
 * needed.  The table is rebuilt when this process's member list changed
 * (it grew, or mod_proxy_balancer synced it: balancer->wupdated), or when
 * balancer-manager changed anything (gwb_manager_generation(), in shared
 * memory, counts its requests; a route edit touches neither of the
 * others); a hit is checked against the member's route as it is now.
 * ------------------------------------------------------------------------ */

static apr_uint32_t gwb_hash(const char *route, size_t len)
{
    apr_uint32_t h = 2166136261u;    /* FNV-1a */

    while (len--) {
        h = (h ^ (unsigned char)*route++) * 16777619u;
    }
    return h;
}

static void gwb_index_add(gwb_route_index *index, proxy_worker *w)
{
    apr_uint32_t hash = gwb_hash(w->s->route, strlen(w->s->route));
    apr_uint32_t at = hash & index->mask;

    while (index->slots[at].worker) {
        at = (at + 1) & index->mask;
    }
    index->slots[at].hash = hash;
    index->slots[at].worker = w;
}

/* Returns 0 if there is no memory for the table: lookups then scan. */
static int gwb_index_build(gwb_route_index *index,
                           const proxy_balancer *balancer)
{
    const apr_array_header_t *workers = balancer->workers;
    apr_uint32_t size = 8;
    int standby, i;

    while (size < 2 * (apr_uint32_t)workers->nelts) {
        size *= 2;
    }
    free(index->slots);
    index->built_from = -1;
    if (!(index->slots = calloc(size, sizeof(gwb_index_slot)))) {
        return 0;
    }
    index->mask = size - 1;
    for (standby = 0; standby <= 1; standby++) {
        for (i = 0; i < workers->nelts; i++) {
            proxy_worker *w = APR_ARRAY_IDX(workers, i, proxy_worker *);

            if (*w->s->route
                && (PROXY_WORKER_IS_STANDBY(w) ? 1 : 0) == standby) {
                gwb_index_add(index, w);
            }
        }
    }
    index->built_from = workers->nelts;
    index->generation = gwb_manager_generation();
    index->wupdated = balancer->wupdated;
    return 1;
}

static gwb_route_index *gwb_current_index(gwb_balancer *rec)
{
    const proxy_balancer *balancer = rec->balancer;
    gwb_route_index *index = &rec->index;

    if (index->built_from != balancer->workers->nelts
        || index->generation != gwb_manager_generation()
        || index->wupdated != balancer->wupdated) {
        if (!gwb_index_build(index, balancer)) {
            return NULL;
        }
    }
    return index;
}

/* Offers a member carrying the route to the lookup: the first usable one
 * wins; else the first one is remembered. */
static int gwb_offer(proxy_worker *w, request_rec *r, proxy_worker **first,
                     int *usable)
{
    if (gwb_worker_usable(w, r)) {
        *usable = 1;
        *first = w;
        return 1;
    }
    if (!*first) {
        *first = w;
    }
    return 0;
}

/* The member carrying a route: a usable one if any, regular members before
 * hot standbys, as in httpd's find_route_worker().  Without an index (no
 * memory for one) it scans the live member list. */
static void *gwb_lookup_member(void *ctx, const char *route, size_t len,
                               int *usable)
{
    const gwb_lookup_ctx *lc = ctx;
    proxy_balancer *balancer = lc->balancer;
    gwb_route_index *index;
    proxy_worker *found = NULL;
    int standby, i;

    *usable = 0;
    if (len >= PROXY_WORKER_MAX_ROUTE_SIZE) {
        return NULL;  /* longer than any route= can be */
    }
    if (lc->rec && (index = gwb_current_index(lc->rec))) {
        apr_uint32_t hash = gwb_hash(route, len);
        apr_uint32_t at;

        for (at = hash & index->mask; index->slots[at].worker;
             at = (at + 1) & index->mask) {
            proxy_worker *w = index->slots[at].worker;

            if (index->slots[at].hash == hash
                && gwb_route_equals(w->s->route, route, len)
                && gwb_offer(w, lc->r, &found, usable)) {
                break;
            }
        }
        return found;
    }
    for (standby = 0; standby <= 1; standby++) {
        for (i = 0; i < balancer->workers->nelts; i++) {
            proxy_worker *w = APR_ARRAY_IDX(balancer->workers, i,
                                            proxy_worker *);

            if ((PROXY_WORKER_IS_STANDBY(w) ? 1 : 0) == standby
                && gwb_route_equals(w->s->route, route, len)
                && gwb_offer(w, lc->r, &found, usable)) {
                return found;
            }
        }
    }
    return found;
}

/* Follows redirect= from an unusable member, hop by hop, to a usable one;
 * at most one hop per member, so redirect cycles end. */
static proxy_worker *gwb_follow_redirect(gwb_lookup_ctx *lc,
                                         proxy_worker *stale)
{
    proxy_worker *w = stale;
    int hops;

    for (hops = 0; *w->s->redirect && hops < lc->balancer->workers->nelts;
         hops++) {
        int usable;

        w = gwb_lookup_member(lc, w->s->redirect, strlen(w->s->redirect),
                              &usable);
        if (!w) {
            return NULL;
        }
        if (usable) {
            return w;
        }
    }
    return NULL;
}

/* Busy per unit of loadfactor is the load; equal loads go to the member
 * most behind in its weighted round robin share (lbstatus). */
static int gwb_is_less_loaded(proxy_worker *current, proxy_worker *best,
                              void *baton)
{
    int *total_factor = baton;
    apr_uint64_t cur_load, best_load;

    current->s->lbstatus += current->s->lbfactor;
    *total_factor += current->s->lbfactor;
    if (!best) {
        return 1;
    }
    cur_load = (apr_uint64_t)current->s->busy
               * (apr_uint64_t)(best->s->lbfactor > 0 ? best->s->lbfactor : 1);
    best_load = (apr_uint64_t)best->s->busy
                * (apr_uint64_t)(current->s->lbfactor > 0
                                 ? current->s->lbfactor : 1);
    return cur_load < best_load
           || (cur_load == best_load
               && current->s->lbstatus > best->s->lbstatus);
}

static proxy_worker *gwb_fallback_choice(proxy_balancer *balancer,
                                         request_rec *r,
                                         const gwb_server_conf *conf)
{
    proxy_worker *w;
    int total_factor = 0;

    if (conf->fallback) {
        return conf->fallback->finder(balancer, r);
    }
    w = gwb_get_best_worker(balancer, r, gwb_is_less_loaded, &total_factor);
    if (w) {
        w->s->lbstatus -= total_factor;
    }
    return w;
}

/* A client's route for the debug log, bounded.  No escaping here: httpd
 * escapes every error log message itself (control bytes become \xNN), and
 * escaping twice would only double the backslashes. */
static const char *gwb_loggable_route(request_rec *r,
                                      const gwb_route_pick *pick)
{
    if (pick->route_len < PROXY_WORKER_MAX_ROUTE_SIZE) {
        return apr_psprintf(r->pool, "'%.*s'", (int)pick->route_len,
                            pick->route);
    }
    return apr_psprintf(r->pool, "'%.*s'... (%" APR_SIZE_T_FMT " bytes)",
                        PROXY_WORKER_MAX_ROUTE_SIZE, pick->route,
                        pick->route_len);
}

static void gwb_note_decision(request_rec *r, proxy_balancer *balancer,
                              const gwb_route_pick *pick,
                              const gwb_name *names, const char *decision,
                              proxy_worker *chosen)
{
    apr_table_t *env = r->subprocess_env;

    apr_table_setn(env, GWB_ENV_DECISION, decision);
    if (pick->state != GWB_NO_ROUTE) {
        apr_table_setn(env, "BALANCER_SESSION_STICKY",
                       names[pick->name_index].name);
        /* A route that named a member is that member's route= (no copy
         * per request); an unknown one gets a copy if it could fit a
         * route=. */
        if (pick->member) {
            const proxy_worker *w = pick->member;

            apr_table_setn(env, "BALANCER_SESSION_ROUTE", w->s->route);
        }
        else if (pick->route_len < PROXY_WORKER_MAX_ROUTE_SIZE) {
            apr_table_setn(env, "BALANCER_SESSION_ROUTE",
                           apr_pstrmemdup(r->pool, pick->route,
                                          pick->route_len));
        }
        if (pick->state != GWB_LIVE_ROUTE) {
            apr_table_setn(env, "BALANCER_ROUTE_CHANGED", "1");
        }
    }
    if (APLOGrdebug(r)) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                      "GWB0201: %s: %s%s%s -> %s (%s)", balancer->s->name,
                      pick->state == GWB_NO_ROUTE
                          ? "no route cookie" : names[pick->name_index].name,
                      pick->state == GWB_NO_ROUTE ? "" : " route ",
                      pick->state == GWB_NO_ROUTE
                          ? "" : gwb_loggable_route(r, pick),
                      !chosen ? "503"
                          : *chosen->s->route ? chosen->s->route
                          : chosen->s->name,
                      decision);
    }
}

/* ------------------------------------------------------------------------
 * Unknown routes.  A member's route= that differs from its GWE node's
 * application name (by case, say) sends every visitor of that node to the
 * fallback, losing its session, with nothing else to show for it.  GWB0204
 * says so at most once a minute per balancer, across all processes, naming
 * a few of the routes this process saw: a flood of made-up routes cannot
 * flood the log.
 * ------------------------------------------------------------------------ */

#define GWB_UNKNOWN_WARN_SECONDS 60

/* Keeps a route, cut to what a route= can hold (no route= can be longer,
 * so a cut one is only shown, never compared with the members'). */
static void gwb_remember_unknown(gwb_unknown_sample *u, const char *route,
                                 size_t len)
{
    size_t kept = len < PROXY_WORKER_MAX_ROUTE_SIZE
                  ? len : PROXY_WORKER_MAX_ROUTE_SIZE - 1;
    int i;

    for (i = 0; i < u->n; i++) {
        if (u->len[i] == len && gwb_route_equals(u->route[i], route, kept)) {
            return;
        }
    }
    if (u->n < GWB_UNKNOWN_SAMPLES) {
        memcpy(u->route[u->n], route, kept);
        u->route[u->n][kept] = '\0';
        u->len[u->n++] = len;
    }
}

/* Whether this process is the one to warn now: the first to claim the
 * minute.  A request that began before the last claim (now < last) is
 * within that minute too. */
static int gwb_unknown_warning_due(gwb_balancer_shm *shm, apr_time_t now)
{
    apr_uint32_t sec = (apr_uint32_t)apr_time_sec(now);
    apr_uint32_t last = apr_atomic_read32(&shm->unknown_warned_at);

    if (last && (apr_int32_t)(sec - last) < GWB_UNKNOWN_WARN_SECONDS) {
        return 0;
    }
    return apr_atomic_cas32(&shm->unknown_warned_at, sec, last) == last;
}

/* What to say of a route no member carries: a member route that differs
 * only in case, or that the route was cut. */
static const char *gwb_unknown_hint(const apr_array_header_t *workers,
                                    const char *route, apr_size_t len,
                                    apr_pool_t *p)
{
    int k;

    if (len >= PROXY_WORKER_MAX_ROUTE_SIZE) {
        return apr_psprintf(p, "... (%" APR_SIZE_T_FMT " bytes, longer than "
                            "any route= can be)", len);
    }
    for (k = 0; k < workers->nelts; k++) {
        const proxy_worker *w = APR_ARRAY_IDX(workers, k, proxy_worker *);

        if (ap_cstr_casecmp(w->s->route, route) == 0) {
            return apr_psprintf(p, " (member route %s differs only in case)",
                                w->s->route);
        }
    }
    return "";
}

/* "'GWE_Node_2' (member route GWE_node_2 differs only in case), 'x'": a
 * cookie value holds no ',' (the parser splits there), so the list reads
 * one way. */
static const char *gwb_unknown_list(const gwb_balancer *rec, apr_pool_t *p)
{
    const char *list = "";
    int i;

    for (i = 0; i < rec->unknown.n; i++) {
        list = apr_psprintf(p, "%s%s'%s'%s", list, i ? ", " : "",
                            rec->unknown.route[i],
                            gwb_unknown_hint(rec->balancer->workers,
                                             rec->unknown.route[i],
                                             rec->unknown.len[i], p));
    }
    return list;
}

static const char *gwb_member_routes(const proxy_balancer *balancer,
                                     apr_pool_t *p)
{
    const char *list = "";
    int i;

    for (i = 0; i < balancer->workers->nelts; i++) {
        const proxy_worker *w = APR_ARRAY_IDX(balancer->workers, i,
                                              proxy_worker *);

        if (*w->s->route) {
            list = apr_pstrcat(p, list, *list ? ", " : "", w->s->route,
                               NULL);
        }
    }
    return *list ? list : "none";
}

static void gwb_report_unknown_route(gwb_balancer *rec, request_rec *r,
                                     const gwb_route_pick *pick)
{
    gwb_remember_unknown(&rec->unknown, pick->route, pick->route_len);
    if (!gwb_unknown_warning_due(rec->shm, r->request_time)) {
        return;
    }
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                  "GWB0204: %s: visitors present routes that no member "
                  "carries: %s; they are placed as new visitors and lose "
                  "their sessions.  Each member's route= must be its GWE "
                  "node's application name exactly, case included (the "
                  "node sets GWROUTEID=.<that name>): compare them with "
                  "the members' routes %s (unknown-route decisions since "
                  "start: %" APR_UINT64_T_FMT "; this line comes at most "
                  "once a minute)",
                  rec->balancer->s->name, gwb_unknown_list(rec, r->pool),
                  gwb_member_routes(rec->balancer, r->pool),
                  gwb_count_total(rec, GWB_C_UNKNOWN));
    rec->unknown.n = 0;
}

static proxy_worker *gwb_find_worker(proxy_balancer *balancer,
                                     request_rec *r)
{
    const gwb_server_conf *conf =
        ap_get_module_config(r->server->module_config, &gwe_balancer_module);
    gwb_lookup_ctx lc;
    const gwb_name *names;
    gwb_route_pick pick;
    proxy_worker *chosen = NULL, *about = NULL;
    gwb_counter counter;
    int n_names;

    lc.balancer = balancer;
    lc.rec = gwb_balancer_of(balancer);
    lc.r = r;
    gwb_names_of(conf, &names, &n_names);
    gwb_pick_route(apr_table_get(r->headers_in, "Cookie"), names, n_names,
                   gwb_lookup_member, &lc, &pick);

    switch (pick.state) {
    case GWB_LIVE_ROUTE:
        chosen = pick.member;
        counter = GWB_C_STICKY;
        break;
    case GWB_STALE_ROUTE:
        about = pick.member;
        if ((chosen = gwb_follow_redirect(&lc, pick.member))) {
            counter = GWB_C_REDIRECT;
        }
        else if (balancer->s->sticky_force) {
            counter = GWB_C_NOFAILOVER;
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                          "GWB0202: %s: member for route %s is unusable and "
                          "the balancer has nofailover=On: answering 503",
                          balancer->s->name, about->s->route);
        }
        else {
            chosen = gwb_fallback_choice(balancer, r, conf);
            counter = GWB_C_FAILOVER;
        }
        break;
    case GWB_UNKNOWN_ROUTE:
        chosen = gwb_fallback_choice(balancer, r, conf);
        counter = GWB_C_UNKNOWN;
        break;
    default:
        chosen = gwb_fallback_choice(balancer, r, conf);
        counter = GWB_C_NEW;
        break;
    }
    /* Sticky hits and new visitors count for the member that took them;
     * redirects, failovers and refusals for the member the cookie named. */
    gwb_count(lc.rec, about ? about : chosen, counter);
    if (counter == GWB_C_UNKNOWN && lc.rec) {
        gwb_report_unknown_route(lc.rec, r, &pick);
    }
    gwb_note_decision(r, balancer, &pick, names, gwb_counter_names[counter],
                      chosen);
    return chosen;
}

/* Only the weighted round robin share restarts: busy counts requests in
 * flight, which other processes still hold. */
static apr_status_t gwb_reset(proxy_balancer *balancer, server_rec *s)
{
    int i;

    for (i = 0; i < balancer->workers->nelts; i++) {
        APR_ARRAY_IDX(balancer->workers, i, proxy_worker *)->s->lbstatus = 0;
    }
    return APR_SUCCESS;
}

static apr_status_t gwb_age(proxy_balancer *balancer, server_rec *s)
{
    return APR_SUCCESS;
}

const proxy_balancer_method gwb_method = {
    GWB_METHOD_NAME,
    &gwb_find_worker,
    NULL,
    &gwb_reset,
    &gwb_age,
    NULL
};

/* ------------------------------------------------------------------------
 * WebSocket handoff.
 * ------------------------------------------------------------------------ */

static int gwb_is_websocket_upgrade(request_rec *r)
{
    const char *upgrade = apr_table_get(r->headers_in, "Upgrade");
    const char *connection = apr_table_get(r->headers_in, "Connection");

    return upgrade && connection
           && ap_find_token(r->pool, upgrade, "websocket")
           && ap_find_token(r->pool, connection, "upgrade");
}

/* The handoff for a balancer:// URL, matched on the balancer's name (its
 * host part), which httpd treats case-insensitively. */
static const gwb_ws_handoff *gwb_handoff_for(const apr_array_header_t *all,
                                             const char *url,
                                             const char **path)
{
    const char *host = url + GWB_BALANCER_PREFIX_LEN;
    size_t host_len = strcspn(host, "/");
    int i;

    for (i = 0; i < all->nelts; i++) {
        const gwb_ws_handoff *h = &APR_ARRAY_IDX(all, i, gwb_ws_handoff);

        if (strlen(h->http_host) == host_len
            && ap_cstr_casecmpn(h->http_host, host, host_len) == 0) {
            *path = host + host_len;
            return h;
        }
    }
    return NULL;
}

/* Runs before mod_proxy_balancer's pre_request: rewrites the balancer of a
 * WebSocket upgrade and declines, so that mod_proxy_balancer then picks a
 * member of the twin.  A request whose balancer is already chosen is a
 * failover retry, and already aimed at the twin. */
int gwb_hand_off_websocket(proxy_worker **worker, proxy_balancer **balancer,
                           request_rec *r, proxy_server_conf *pconf,
                           char **url)
{
    const gwb_server_conf *conf =
        ap_get_module_config(r->server->module_config, &gwe_balancer_module);
    const gwb_ws_handoff *handoff;
    const char *path;

    if (*balancer || !conf->ws_handoffs
        || ap_cstr_casecmpn(*url, GWB_BALANCER_PREFIX,
                            GWB_BALANCER_PREFIX_LEN) != 0
        || !(handoff = gwb_handoff_for(conf->ws_handoffs, *url, &path))
        || !gwb_is_websocket_upgrade(r)) {
        return DECLINED;
    }
    *url = apr_pstrcat(r->pool, handoff->ws_url, path, NULL);
    gwb_count(handoff->http, NULL, GWB_C_HANDOFF);
    gwb_tunnel_begin(r, handoff);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                  "GWB0203: WebSocket upgrade for %s handed to %s",
                  handoff->http_url, handoff->ws_url);
    return DECLINED;
}

void gwb_handoff_balancers(server_rec *s, const gwb_ws_handoff *h,
                           apr_pool_t *p, proxy_balancer **http,
                           proxy_balancer **ws)
{
    proxy_server_conf *pconf =
        ap_get_module_config(s->module_config, &proxy_module);

    *http = ap_proxy_get_balancer(p, pconf, h->http_url, 0);
    *ws = ap_proxy_get_balancer(p, pconf, h->ws_url, 0);
}

/* Links each GWEBalancerWebSocket to its balancers' records: the HTTP
 * balancer's counters count the handoffs, the WebSocket balancer's rows
 * count the tunnels (gwb_check_handoffs() has checked them). */
void gwb_link_handoffs(server_rec *main_s, apr_pool_t *ptemp)
{
    server_rec *s;
    int i;

    for (s = main_s; s; s = s->next) {
        const gwb_server_conf *conf =
            ap_get_module_config(s->module_config, &gwe_balancer_module);

        for (i = 0; conf->ws_handoffs && i < conf->ws_handoffs->nelts; i++) {
            gwb_ws_handoff *h = &APR_ARRAY_IDX(conf->ws_handoffs, i,
                                               gwb_ws_handoff);
            proxy_balancer *http, *ws;

            gwb_handoff_balancers(s, h, ptemp, &http, &ws);
            if (!h->http && http) {
                h->http = gwb_balancer_of(http);
            }
            if (!h->ws && ws && (h->ws = gwb_balancer_of(ws))) {
                h->ws->takes_websockets = 1;
            }
        }
    }
}
