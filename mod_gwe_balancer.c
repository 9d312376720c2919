/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 *
 * mod_gwe_balancer: the lbmethod "gwesticky" for mod_proxy_balancer, which
 * keeps every visitor of a Genesys Web Engagement (GWE) cluster on the node
 * that holds its session.
 *
 * Build:   make -f Makefile.apxs        (or: apxs -c mod_gwe_balancer.c)
 * Use:     ProxySet lbmethod=gwesticky  in a <Proxy "balancer://..."> block
 *
 * How a member is chosen
 * ----------------------
 * A GWE node stamps each browser with the cookie GWROUTEID=.<node name>, and
 * the balancer's members carry route=<node name>.  For every request the
 * finder scans the Cookie header once, in place, for the route cookies
 * (GWROUTEID, then the misspelling GWEROUTEID from Genesys' own sample, or
 * the names given by GWEBalancerCookie).  A value loses its surrounding
 * blanks, its double quotes and one leading dot, and must then equal a
 * member's route= exactly.  Among the route cookies found:
 *
 *   - the first (by name order, then header order) naming a usable member
 *     wins: "sticky", also when that member is draining, since drain means
 *     "keep the sessions you have";
 *   - otherwise the first naming any member is a stale route: follow that
 *     member's redirect= ("redirect"), else refuse with 503 when the balancer
 *     has nofailover=On, else fail over ("failover");
 *   - otherwise a route nobody carries ("unknown-route") or no route at all
 *     ("new") gets the fallback choice.
 *
 * The fallback choice is the least busy member weighted by loadfactor, made
 * by httpd's own ap_proxy_balancer_get_best_worker(), which already honours
 * lbsets, hot standbys, spares, drain and health checks.  Busy counts the
 * requests a member has in flight, and GWE's long-polls and WebSockets stay
 * in flight for minutes, so it measures a node's real load where counting
 * requests (byrequests) would not.  Ties go round robin by loadfactor.
 *
 * Example: members GWE_Node_1 (in error) with redirect=GWE_Node_2, and
 * GWE_Node_2.  "Cookie: GWROUTEID=.GWE_Node_3; GWROUTEID=\".GWE_Node_1\""
 * yields GWE_Node_3 (unknown) and GWE_Node_1 (stale); the stale one counts,
 * its redirect is usable, so the request goes to GWE_Node_2 as "redirect"
 * and BALANCER_ROUTE_CHANGED=1 tells the log that the route changed.
 *
 * WebSocket
 * ---------
 * GWEBalancerWebSocket "balancer://gwe" "balancer://gwe-ws" hands every
 * WebSocket upgrade aimed at the first balancer to the second, whose ws://
 * members mod_proxy_wstunnel (or, from httpd 2.4.47, mod_proxy_http) can
 * tunnel.  The handoff is a proxy pre_request hook that runs before
 * mod_proxy_balancer's and only rewrites the URL, so the twin, also
 * gwesticky, routes the upgrade by cookie with the same rules.
 *
 * The cookie parser below is plain C with no httpd dependency, so that the
 * unit tests (test/unit) compile it on its own with GWB_PARSER_ONLY.
 */

#ifndef GWB_PARSER_ONLY
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_request.h"
#include "ap_provider.h"
#include "apr_atomic.h"
#include "apr_hash.h"
#include "apr_optional_hooks.h"
#include "apr_shm.h"
#include "apr_strings.h"
#include "mod_proxy.h"
#include "mod_status.h"
#endif

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Cookie parsing and route choice: pure functions of the Cookie header.
 * ------------------------------------------------------------------------ */

/* A cookie name the finder looks for, with its length precomputed. */
typedef struct {
    const char *name;
    size_t len;
} gwb_name;

/* One name=value pair of a Cookie header, pointing into the header. */
typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} gwb_cookie;

typedef enum {
    GWB_NO_ROUTE = 0,   /* no route cookie, or only empty ones */
    GWB_UNKNOWN_ROUTE,  /* a route no member carries */
    GWB_STALE_ROUTE,    /* a route whose member is unusable */
    GWB_LIVE_ROUTE      /* a route whose member is usable */
} gwb_route_state;

/* What the route cookies of a request say, best candidate first. */
typedef struct {
    gwb_route_state state;
    int name_index;       /* which gwb_name matched (not for GWB_NO_ROUTE) */
    const char *route;    /* the route, pointing into the header */
    size_t route_len;
    void *member;         /* what the lookup returned for it */
} gwb_route_pick;

/* Finds the member carrying a route: NULL when none does; *usable tells
 * whether requests may go to it now. */
typedef void *gwb_member_lookup_fn(void *ctx, const char *route, size_t len,
                                   int *usable);

static int gwb_is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static void gwb_trim(const char **s, size_t *len)
{
    while (*len && gwb_is_blank(**s)) {
        ++*s;
        --*len;
    }
    while (*len && gwb_is_blank((*s)[*len - 1])) {
        --*len;
    }
}

/* Splits the next name=value pair off a Cookie header and advances *cursor
 * past it.  A name without '=' carries no value and is skipped.  Returns 0
 * at the end of the header.  Both ';' and ',' separate cookies: httpd
 * joins repeated Cookie headers with ", " and HTTP/2 crumbs with "; ".
 * strspn()/strcspn() rather than a loop per byte: browsers send every
 * cookie of the site, often a kilobyte or more, on every request. */
static int gwb_next_cookie(const char **cursor, gwb_cookie *c)
{
    const char *p = *cursor;

    while (*p) {
        size_t name_len;

        p += strspn(p, " \t;,");
        name_len = strcspn(p, "=;,");
        if (p[name_len] != '=') {
            p += name_len;
            continue;
        }
        c->name = p;
        c->name_len = name_len;
        c->value = p + name_len + 1;
        c->value_len = strcspn(c->value, ";,");
        *cursor = c->value + c->value_len;
        gwb_trim(&c->name, &c->name_len);
        gwb_trim(&c->value, &c->value_len);
        return 1;
    }
    *cursor = p;
    return 0;
}

/* The route a cookie value names: GWE writes "." + node name, and RFC 6265
 * lets any value arrive double-quoted. */
static void gwb_route_of_value(const char *value, size_t len,
                               const char **route, size_t *route_len)
{
    if (len >= 2 && value[0] == '"' && value[len - 1] == '"') {
        ++value;
        len -= 2;
    }
    if (len && value[0] == '.') {
        ++value;
        --len;
    }
    *route = value;
    *route_len = len;
}

/* Position of the cookie's name in the list, or -1: names match exactly,
 * as cookie names are case-sensitive. */
static int gwb_name_index(const gwb_cookie *c, const gwb_name *names,
                          int n_names)
{
    int i;

    for (i = 0; i < n_names; i++) {
        if (c->name_len == names[i].len
            && memcmp(c->name, names[i].name, c->name_len) == 0) {
            return i;
        }
    }
    return -1;
}

/* Records a candidate unless one of the same kind ranks before it: a
 * name earlier in the list ranks first, then the earlier cookie. */
static void gwb_consider(gwb_route_pick *best, const gwb_route_pick *cand)
{
    if (best->state == GWB_NO_ROUTE || cand->name_index < best->name_index) {
        *best = *cand;
    }
}

/* Reads every route cookie of a Cookie header (NULL for none) and says
 * which route counts: the best live one, else the best stale one, else the
 * best unknown one, else none. */
static void gwb_pick_route(const char *header, const gwb_name *names,
                           int n_names, gwb_member_lookup_fn *lookup,
                           void *ctx, gwb_route_pick *pick)
{
    gwb_route_pick live, stale, unknown, cand;
    const char *cursor = header;
    gwb_cookie c;

    memset(&live, 0, sizeof(live));
    memset(&stale, 0, sizeof(stale));
    memset(&unknown, 0, sizeof(unknown));
    memset(pick, 0, sizeof(*pick));
    if (!header) {
        return;
    }
    while (gwb_next_cookie(&cursor, &c)) {
        int usable = 0;

        cand.name_index = gwb_name_index(&c, names, n_names);
        if (cand.name_index < 0) {
            continue;
        }
        gwb_route_of_value(c.value, c.value_len, &cand.route,
                           &cand.route_len);
        if (!cand.route_len) {
            continue;
        }
        cand.member = lookup(ctx, cand.route, cand.route_len, &usable);
        if (!cand.member) {
            cand.state = GWB_UNKNOWN_ROUTE;
            gwb_consider(&unknown, &cand);
        }
        else if (!usable) {
            cand.state = GWB_STALE_ROUTE;
            gwb_consider(&stale, &cand);
        }
        else {
            cand.state = GWB_LIVE_ROUTE;
            gwb_consider(&live, &cand);
            if (cand.name_index == 0) {
                break;  /* nothing can rank before it */
            }
        }
    }
    *pick = live.state ? live : stale.state ? stale : unknown;
}

#ifndef GWB_PARSER_ONLY

/* ------------------------------------------------------------------------
 * The lbmethod.
 * ------------------------------------------------------------------------ */

/* The module's version: the one place it is written (debian/changelog is
 * checked against it by the tests). */
#define GWB_VERSION "0.1.0"

#define GWB_METHOD_NAME "gwesticky"

module AP_MODULE_DECLARE_DATA gwe_balancer_module;

/* Request environment for logs; the BALANCER_* names are those of httpd's
 * built-in sticky code, so existing LogFormats keep working. */
#define GWB_ENV_DECISION "GWE_ROUTE_DECISION"

/* What the counters count: one per routing decision, plus handoffs. */
typedef enum {
    GWB_C_STICKY, GWB_C_REDIRECT, GWB_C_FAILOVER, GWB_C_NOFAILOVER,
    GWB_C_NEW, GWB_C_UNKNOWN, GWB_C_HANDOFF, GWB_N_COUNTERS
} gwb_counter;

static const char *const gwb_counter_names[GWB_N_COUNTERS] = {
    "sticky", "redirect", "failover", "nofailover", "new", "unknown-route",
    "websocket-handoff"
};

/* One row of counters, in shared memory: every child process and thread
 * adds to it with atomic increments, so no count is lost and no lock is
 * taken. */
typedef struct {
    apr_uint32_t n[GWB_N_COUNTERS];
} gwb_counts;

/* The counters of one balancer: a total row, then one row per member slot
 * (worker->s->index), members added later in balancer-manager included. */
typedef struct {
    const apr_array_header_t *workers;  /* identifies the balancer */
    proxy_balancer *balancer;           /* names and routes, for the page */
    int member_rows;
    gwb_counts *rows;                   /* rows[0]: total */
} gwb_counter_block;

/* Built at startup, read-only afterwards. */
static apr_array_header_t *gwb_blocks;

/* GWEBalancerWebSocket: upgrades aimed at http_url go to ws_url. */
typedef struct {
    const char *http_url;   /* "balancer://gwe" */
    const char *http_host;  /* "gwe": what a request URL is matched on */
    const char *ws_url;     /* "balancer://gwe-ws" */
    gwb_counter_block *counters;  /* the HTTP balancer's, set at startup */
} gwb_ws_handoff;

typedef struct {
    apr_array_header_t *cookie_names;   /* of gwb_name; NULL: inherit */
    const proxy_balancer_method *fallback; /* NULL: weighted least busy */
    int fallback_set;
    apr_array_header_t *ws_handoffs;    /* of gwb_ws_handoff; NULL: inherit */
} gwb_server_conf;

typedef struct {
    proxy_balancer *balancer;
    request_rec *r;
} gwb_lookup_ctx;

static const gwb_name gwb_default_names[] = {
    { "GWROUTEID", sizeof("GWROUTEID") - 1 },
    { "GWEROUTEID", sizeof("GWEROUTEID") - 1 }  /* Genesys' sample's typo */
};

static APR_OPTIONAL_FN_TYPE(proxy_balancer_get_best_worker)
    *gwb_get_best_worker = NULL;
static APR_OPTIONAL_FN_TYPE(ap_proxy_retry_worker) *gwb_retry_worker = NULL;

static const proxy_balancer_method gwb_method;

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

static gwb_counter_block *gwb_counters_of(const proxy_balancer *balancer)
{
    int i;

    for (i = 0; gwb_blocks && i < gwb_blocks->nelts; i++) {
        gwb_counter_block *block = &APR_ARRAY_IDX(gwb_blocks, i,
                                                  gwb_counter_block);

        if (block->workers == balancer->workers) {
            return block;
        }
    }
    return NULL;
}

/* Counts a decision in the balancer's total and in the row of the member
 * it is about (NULL: none). */
static void gwb_count(gwb_counter_block *block, const proxy_worker *about,
                      gwb_counter which)
{
    if (!block) {
        return;
    }
    apr_atomic_inc32(&block->rows[0].n[which]);
    if (about && about->s->index >= 0
        && about->s->index < block->member_rows) {
        apr_atomic_inc32(&block->rows[1 + about->s->index].n[which]);
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
 * Per process and balancer, an open-addressing table of (route hash,
 * member), in lookup order: regular members before hot standbys.  The
 * finder runs under the balancer's own thread lock (mod_proxy_balancer's
 * find_best_worker()), which also guards the table, so no lock of ours is
 * needed.  The table is rebuilt when this process's member list changed
 * (it grew, or mod_proxy_balancer synced it: balancer->wupdated), or when
 * balancer-manager changed anything (gwb_generation, in shared memory,
 * counts its requests; a route edit touches neither of the others); a hit
 * is checked against the member's route as it is now.
 * ------------------------------------------------------------------------ */

typedef struct {
    apr_uint32_t hash;
    proxy_worker *worker;       /* NULL: an empty slot */
} gwb_index_slot;

typedef struct {
    const proxy_balancer *balancer;
    gwb_index_slot *slots;      /* malloc'ed; size is a power of two */
    apr_uint32_t mask;
    int built_from;             /* balancer->workers->nelts, or -1 */
    apr_uint32_t generation;
    apr_time_t wupdated;        /* balancer->wupdated when built */
} gwb_route_index;

/* Built at startup (one per balancer struct), then owned by the finder. */
static apr_array_header_t *gwb_indexes;
/* In shared memory: bumped whenever balancer-manager may have changed a
 * route. */
static apr_uint32_t *gwb_generation;

static apr_uint32_t gwb_hash(const char *route, size_t len)
{
    apr_uint32_t h = 2166136261u;    /* FNV-1a */

    while (len--) {
        h = (h ^ (unsigned char)*route++) * 16777619u;
    }
    return h;
}

static gwb_route_index *gwb_index_of(const proxy_balancer *balancer)
{
    int i;

    for (i = 0; gwb_indexes && i < gwb_indexes->nelts; i++) {
        gwb_route_index *index = &APR_ARRAY_IDX(gwb_indexes, i,
                                                gwb_route_index);

        if (index->balancer == balancer) {
            return index;
        }
    }
    return NULL;
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
    index->generation = apr_atomic_read32(gwb_generation);
    index->wupdated = balancer->wupdated;
    return 1;
}

static gwb_route_index *gwb_current_index(const proxy_balancer *balancer)
{
    gwb_route_index *index = gwb_index_of(balancer);

    if (!index) {
        return NULL;
    }
    if (index->built_from != balancer->workers->nelts
        || index->generation != apr_atomic_read32(gwb_generation)
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
    if ((index = gwb_current_index(balancer))) {
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

typedef void gwb_table_put_fn(apr_table_t *t, const char *key,
                              const char *val);

static void gwb_note_decision(request_rec *r, proxy_balancer *balancer,
                              const gwb_route_pick *pick,
                              const gwb_name *names, const char *decision,
                              proxy_worker *chosen)
{
    apr_table_t *env = r->subprocess_env;
    /* apr_table_setn() first looks for the key in the whole table; where
     * the key cannot be there yet, appending does the same for less.  On
     * a request's first decision (a failover retry decides again) ours
     * are not, nor httpd's BALANCER_SESSION_*: its sticky code sets them,
     * before calling us, only when the balancer has stickysession=.  A
     * subrequest starts with a copy of its parent's variables. */
    int first = !r->main && !ap_get_module_config(r->request_config,
                                                  &gwe_balancer_module);
    gwb_table_put_fn *put = first ? apr_table_addn : apr_table_setn;
    gwb_table_put_fn *put_session = first && !*balancer->s->sticky
                                    ? apr_table_addn : apr_table_setn;

    ap_set_module_config(r->request_config, &gwe_balancer_module,
                         (void *)decision);
    put(env, GWB_ENV_DECISION, decision);
    if (pick->state != GWB_NO_ROUTE) {
        put_session(env, "BALANCER_SESSION_STICKY",
                    names[pick->name_index].name);
        /* A route that named a member is that member's route= (no copy
         * per request); an unknown one gets a copy if it could fit a
         * route=. */
        if (pick->member) {
            const proxy_worker *w = pick->member;

            put_session(env, "BALANCER_SESSION_ROUTE", w->s->route);
        }
        else if (pick->route_len < PROXY_WORKER_MAX_ROUTE_SIZE) {
            put_session(env, "BALANCER_SESSION_ROUTE",
                        apr_pstrmemdup(r->pool, pick->route,
                                       pick->route_len));
        }
        if (pick->state != GWB_LIVE_ROUTE) {
            put_session(env, "BALANCER_ROUTE_CHANGED", "1");
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

static proxy_worker *gwb_find_worker(proxy_balancer *balancer,
                                     request_rec *r)
{
    const gwb_server_conf *conf =
        ap_get_module_config(r->server->module_config, &gwe_balancer_module);
    gwb_lookup_ctx lc = { balancer, r };
    const gwb_name *names;
    gwb_route_pick pick;
    proxy_worker *chosen = NULL, *about = NULL;
    gwb_counter counter;
    const char *decision;
    int n_names;

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
    gwb_count(gwb_counters_of(balancer), about ? about : chosen, counter);
    decision = gwb_counter_names[counter];
    gwb_note_decision(r, balancer, &pick, names, decision, chosen);
    return chosen;
}

/* ------------------------------------------------------------------------
 * WebSocket handoff.
 * ------------------------------------------------------------------------ */

#define GWB_BALANCER_PREFIX "balancer://"
#define GWB_BALANCER_PREFIX_LEN (sizeof(GWB_BALANCER_PREFIX) - 1)

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
static int gwb_hand_off_websocket(proxy_worker **worker,
                                  proxy_balancer **balancer,
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
    gwb_count(handoff->counters, NULL, GWB_C_HANDOFF);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                  "GWB0203: WebSocket upgrade for %s handed to %s",
                  handoff->http_url, handoff->ws_url);
    return DECLINED;
}

/* ------------------------------------------------------------------------
 * Counters: in shared memory, shown by mod_status (/server-status).
 * ------------------------------------------------------------------------ */

/* Calls fn for every balancer of every server, in server order (main
 * server first); each virtual host holds its own copies of the balancers it
 * inherits. */
typedef void gwb_balancer_fn(server_rec *s, proxy_server_conf *proxy_conf,
                             proxy_balancer *balancer, void *baton);

static void gwb_each_balancer(server_rec *main_s, gwb_balancer_fn *fn,
                              void *baton)
{
    server_rec *s;
    int i;

    for (s = main_s; s; s = s->next) {
        proxy_server_conf *proxy_conf =
            ap_get_module_config(s->module_config, &proxy_module);

        for (i = 0; i < proxy_conf->balancers->nelts; i++) {
            fn(s, proxy_conf, &APR_ARRAY_IDX(proxy_conf->balancers, i,
                                             proxy_balancer), baton);
        }
    }
}

/* Member slots a balancer can have: its members plus those balancer-manager
 * may add (growth=, or BalancerGrowth). */
static int gwb_member_slots(const proxy_balancer *b,
                            const proxy_server_conf *pconf)
{
    int growth = b->growth > pconf->bgrowth ? b->growth : pconf->bgrowth;

    return b->workers->nelts + (growth > 0 ? growth : 0);
}

/* One block per balancer (the copies virtual hosts inherit share it), all
 * in one anonymous shared memory segment that the children inherit.  A
 * restart makes a new one: the counters count since the last (re)start. */
static void gwb_add_counter_block(server_rec *s,
                                  proxy_server_conf *proxy_conf,
                                  proxy_balancer *b, void *baton)
{
    apr_size_t *rows = baton;
    gwb_counter_block *block;

    if (gwb_counters_of(b)) {
        return;
    }
    block = apr_array_push(gwb_blocks);
    block->workers = b->workers;
    block->balancer = b;
    block->member_rows = gwb_member_slots(b, proxy_conf);
    block->rows = NULL;
    *rows += 1 + block->member_rows;
}

static apr_status_t gwb_create_counters(server_rec *main_s, apr_pool_t *pconf)
{
    apr_size_t rows = 0;
    apr_shm_t *shm;
    apr_status_t rv;
    gwb_counts *next;
    int i;

    gwb_blocks = apr_array_make(pconf, 4, sizeof(gwb_counter_block));
    gwb_each_balancer(main_s, gwb_add_counter_block, &rows);
    if (!rows) {
        return APR_SUCCESS;
    }
    rv = apr_shm_create(&shm, rows * sizeof(gwb_counts), NULL, pconf);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    next = apr_shm_baseaddr_get(shm);
    memset(next, 0, rows * sizeof(gwb_counts));
    for (i = 0; i < gwb_blocks->nelts; i++) {
        gwb_counter_block *block = &APR_ARRAY_IDX(gwb_blocks, i,
                                                  gwb_counter_block);

        block->rows = next;
        next += 1 + block->member_rows;
    }
    return APR_SUCCESS;
}

static const char *gwb_row_name(const gwb_counter_block *block, int row,
                                apr_pool_t *p)
{
    int i;

    for (i = 0; i < block->balancer->workers->nelts; i++) {
        const proxy_worker *w = APR_ARRAY_IDX(block->balancer->workers, i,
                                              proxy_worker *);

        if (w->s->index == row - 1) {
            return *w->s->route ? w->s->route : w->s->name;
        }
    }
    /* A member this process has not seen yet (added in balancer-manager
     * and not yet synced here): named by its slot, one word for ?auto. */
    return apr_psprintf(p, "slot-%d", row - 1);
}

static int gwb_row_is_empty(const gwb_counts *row)
{
    int k;

    for (k = 0; k < GWB_N_COUNTERS; k++) {
        if (apr_atomic_read32((apr_uint32_t *)&row->n[k])) {
            return 0;
        }
    }
    return 1;
}

/* ?auto: one "key: value" line per counter, e.g.
 * "GWEBalancer gwe GWE_Node_1 sticky: 12"; the route "*" is the total. */
static void gwb_status_short(request_rec *r, const gwb_counter_block *block)
{
    const char *name = block->balancer->s->name;
    int row, k;

    if (!ap_cstr_casecmpn(name, GWB_BALANCER_PREFIX,
                          GWB_BALANCER_PREFIX_LEN)) {
        name += GWB_BALANCER_PREFIX_LEN;
    }
    for (row = 0; row <= block->member_rows; row++) {
        if (row && gwb_row_is_empty(&block->rows[row])) {
            continue;
        }
        for (k = 0; k < GWB_N_COUNTERS; k++) {
            ap_rprintf(r, "GWEBalancer %s %s %s: %u\n", name,
                       row ? gwb_row_name(block, row, r->pool) : "*",
                       gwb_counter_names[k],
                       apr_atomic_read32(&block->rows[row].n[k]));
        }
    }
}

static void gwb_status_table(request_rec *r, const gwb_counter_block *block)
{
    int row, k;

    ap_rprintf(r, "<table border=\"1\"><tr><th>%s</th>",
               ap_escape_html(r->pool, block->balancer->s->name));
    for (k = 0; k < GWB_N_COUNTERS; k++) {
        ap_rprintf(r, "<th>%s</th>", gwb_counter_names[k]);
    }
    ap_rputs("</tr>\n", r);
    for (row = 1; row <= block->member_rows + 1; row++) {
        int shown = row <= block->member_rows ? row : 0;  /* total last */

        if (shown && gwb_row_is_empty(&block->rows[shown])) {
            continue;
        }
        ap_rprintf(r, "<tr><td>%s</td>", shown
                   ? ap_escape_html(r->pool, gwb_row_name(block, shown,
                                                          r->pool))
                   : "<b>all routes</b>");
        for (k = 0; k < GWB_N_COUNTERS; k++) {
            ap_rprintf(r, "<td>%u</td>",
                       apr_atomic_read32(&block->rows[shown].n[k]));
        }
        ap_rputs("</tr>\n", r);
    }
    ap_rputs("</table>\n", r);
}

static int gwb_status_hook(request_rec *r, int flags)
{
    int i;

    if (!gwb_blocks || !gwb_blocks->nelts) {
        return OK;
    }
    if (!(flags & AP_STATUS_SHORT)) {
        ap_rputs("<hr />\n<h2>GWE balancer routing decisions since start "
                 "(mod_gwe_balancer/" GWB_VERSION ")</h2>\n", r);
    }
    for (i = 0; i < gwb_blocks->nelts; i++) {
        const gwb_counter_block *block = &APR_ARRAY_IDX(gwb_blocks, i,
                                                        gwb_counter_block);

        if (flags & AP_STATUS_SHORT) {
            gwb_status_short(r, block);
        }
        else {
            gwb_status_table(r, block);
        }
    }
    return OK;
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

static const proxy_balancer_method gwb_method = {
    GWB_METHOD_NAME,
    &gwb_find_worker,
    NULL,
    &gwb_reset,
    &gwb_age,
    NULL
};

/* ------------------------------------------------------------------------
 * Startup checks: one warning per smell, each naming its fix.
 * ------------------------------------------------------------------------ */

static int gwb_is_ours(const proxy_balancer *balancer)
{
    return balancer->lbmethod == &gwb_method;
}

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

static void gwb_check_balancers(server_rec *main_s, apr_pool_t *ptemp)
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
    proxy_server_conf *pconf =
        ap_get_module_config(s->module_config, &proxy_module);
    int i;

    for (i = 0; i < conf->ws_handoffs->nelts; i++) {
        gwb_ws_handoff *h = &APR_ARRAY_IDX(conf->ws_handoffs, i,
                                           gwb_ws_handoff);
        proxy_balancer *http = ap_proxy_get_balancer(ptemp, pconf,
                                                     h->http_url, 0);
        proxy_balancer *ws = ap_proxy_get_balancer(ptemp, pconf,
                                                   h->ws_url, 0);

        if (!ws) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                         "GWB0002: GWEBalancerWebSocket names %s, which is "
                         "not defined here; define it with <Proxy \"%s\"> "
                         "and a ws:// member for every GWE node", h->ws_url,
                         h->ws_url);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        h->counters = http ? gwb_counters_of(http) : NULL;
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
static int gwb_check_all_handoffs(server_rec *main_s, apr_pool_t *ptemp)
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

/* An index per balancer struct (each virtual host's copy has its own lock,
 * so its own index), and the shared generation counter. */
static void gwb_add_index(server_rec *s, proxy_server_conf *proxy_conf,
                          proxy_balancer *b, void *baton)
{
    gwb_route_index *index = apr_array_push(gwb_indexes);

    memset(index, 0, sizeof(*index));
    index->balancer = b;
    index->built_from = -1;
}

static apr_status_t gwb_create_indexes(server_rec *main_s, apr_pool_t *pconf)
{
    apr_shm_t *shm;
    apr_status_t rv;

    rv = apr_shm_create(&shm, sizeof(apr_uint32_t), NULL, pconf);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    gwb_generation = apr_shm_baseaddr_get(shm);
    *gwb_generation = 0;
    gwb_indexes = apr_array_make(pconf, 4, sizeof(gwb_route_index));
    gwb_each_balancer(main_s, gwb_add_index, NULL);
    return APR_SUCCESS;
}

/* balancer-manager can rename routes: after any request to it that may
 * have changed something, every process rebuilds its route indexes. */
static int gwb_note_manager_request(request_rec *r)
{
    if (gwb_generation && r->handler
        && strcmp(r->handler, "balancer-manager") == 0
        && (r->method_number == M_POST || r->args)) {
        apr_atomic_inc32(gwb_generation);
    }
    return DECLINED;
}

static int gwb_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                           apr_pool_t *ptemp, server_rec *s)
{
    apr_status_t rv;

    /* The first of the two startup passes only tests the configuration. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    gwb_get_best_worker =
        APR_RETRIEVE_OPTIONAL_FN(proxy_balancer_get_best_worker);
    gwb_retry_worker = APR_RETRIEVE_OPTIONAL_FN(ap_proxy_retry_worker);
    if (!gwb_get_best_worker || !gwb_retry_worker) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                     "GWB0001: mod_proxy and mod_proxy_balancer (2.4.35 or "
                     "later) must be loaded for gwesticky: add LoadModule "
                     "proxy_module and proxy_balancer_module before "
                     "gwe_balancer_module");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if ((rv = gwb_create_counters(s, pconf)) != APR_SUCCESS
        || (rv = gwb_create_indexes(s, pconf)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     "GWB0004: no shared memory for the routing counters "
                     "and indexes; "
                     "check the system's shared memory limits");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    ap_add_version_component(pconf, "mod_gwe_balancer/" GWB_VERSION);
    /* NOTICE is logged whatever the LogLevel: one line per (re)start. */
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                 "GWB0003: mod_gwe_balancer/" GWB_VERSION " (lbmethod "
                 GWB_METHOD_NAME ") ready");
    gwb_check_balancers(s, ptemp);
    return gwb_check_all_handoffs(s, ptemp);
}

/* ------------------------------------------------------------------------
 * Configuration.
 * ------------------------------------------------------------------------ */

static void *gwb_create_server_conf(apr_pool_t *p, server_rec *s)
{
    return apr_pcalloc(p, sizeof(gwb_server_conf));
}

static void *gwb_merge_server_conf(apr_pool_t *p, void *basev, void *addv)
{
    const gwb_server_conf *base = basev, *add = addv;
    gwb_server_conf *conf = apr_pcalloc(p, sizeof(*conf));

    conf->cookie_names = add->cookie_names ? add->cookie_names
                                           : base->cookie_names;
    conf->fallback_set = add->fallback_set || base->fallback_set;
    conf->fallback = add->fallback_set ? add->fallback : base->fallback;
    conf->ws_handoffs = add->ws_handoffs ? add->ws_handoffs
                                         : base->ws_handoffs;
    return conf;
}

/* RFC 6265 cookie-name: an RFC 2616 token. */
static int gwb_is_cookie_name(const char *name)
{
    const char *p;

    if (!*name) {
        return 0;
    }
    for (p = name; *p; p++) {
        if (apr_iscntrl(*p) || (unsigned char)*p > 126
            || strchr(" \t()<>@,;:\\\"/[]?={}", *p)) {
            return 0;
        }
    }
    return 1;
}

static const char *gwb_set_cookie(cmd_parms *cmd, void *dummy,
                                  const char *name)
{
    gwb_server_conf *conf =
        ap_get_module_config(cmd->server->module_config,
                             &gwe_balancer_module);
    gwb_name *entry;

    if (!gwb_is_cookie_name(name)) {
        return apr_psprintf(cmd->pool, "GWEBalancerCookie: '%s' is not a "
                            "cookie name (a token without blanks, quotes "
                            "or separators such as ;,=)", name);
    }
    if (!conf->cookie_names) {
        conf->cookie_names = apr_array_make(cmd->pool, 2, sizeof(gwb_name));
    }
    entry = apr_array_push(conf->cookie_names);
    entry->name = name;
    entry->len = strlen(name);
    return NULL;
}

static const char *gwb_set_fallback(cmd_parms *cmd, void *dummy,
                                    const char *name)
{
    gwb_server_conf *conf =
        ap_get_module_config(cmd->server->module_config,
                             &gwe_balancer_module);
    const proxy_balancer_method *method;

    if (strcmp(name, GWB_METHOD_NAME) == 0) {
        return "GWEBalancerFallback: gwesticky cannot be its own fallback; "
               "name another lbmethod (byrequests, bybusyness, bytraffic) "
               "or leave the directive out for weighted least busy";
    }
    method = ap_lookup_provider(PROXY_LBMETHOD, name, "0");
    if (!method) {
        return apr_psprintf(cmd->pool, "GWEBalancerFallback: no lbmethod "
                            "'%s' is loaded; LoadModule "
                            "lbmethod_%s_module before this line", name,
                            name);
    }
    conf->fallback = method;
    conf->fallback_set = 1;
    return NULL;
}

/* "balancer://NAME" without a trailing slash, or NULL. */
static const char *gwb_balancer_url(apr_pool_t *p, const char *arg)
{
    size_t len = strlen(arg);

    if (ap_cstr_casecmpn(arg, GWB_BALANCER_PREFIX, GWB_BALANCER_PREFIX_LEN)
        != 0) {
        return NULL;
    }
    while (len > GWB_BALANCER_PREFIX_LEN && arg[len - 1] == '/') {
        --len;
    }
    if (len == GWB_BALANCER_PREFIX_LEN
        || memchr(arg + GWB_BALANCER_PREFIX_LEN, '/',
                  len - GWB_BALANCER_PREFIX_LEN)) {
        return NULL;
    }
    return apr_pstrmemdup(p, arg, len);
}

static const char *gwb_set_websocket(cmd_parms *cmd, void *dummy,
                                     const char *http_arg,
                                     const char *ws_arg)
{
    gwb_server_conf *conf =
        ap_get_module_config(cmd->server->module_config,
                             &gwe_balancer_module);
    const char *http_url = gwb_balancer_url(cmd->pool, http_arg);
    const char *ws_url = gwb_balancer_url(cmd->pool, ws_arg);
    gwb_ws_handoff *handoff;

    if (!http_url || !ws_url) {
        return apr_psprintf(cmd->pool, "GWEBalancerWebSocket: '%s' is not "
                            "a balancer URL; write balancer://NAME",
                            http_url ? ws_arg : http_arg);
    }
    if (ap_cstr_casecmp(http_url, ws_url) == 0) {
        return "GWEBalancerWebSocket: the WebSocket balancer must be "
               "another balancer, with ws:// members";
    }
    if (!conf->ws_handoffs) {
        conf->ws_handoffs = apr_array_make(cmd->pool, 1,
                                           sizeof(gwb_ws_handoff));
    }
    handoff = apr_array_push(conf->ws_handoffs);
    handoff->http_url = http_url;
    handoff->http_host = http_url + GWB_BALANCER_PREFIX_LEN;
    handoff->ws_url = ws_url;
    return NULL;
}

static const command_rec gwb_cmds[] = {
    AP_INIT_ITERATE("GWEBalancerCookie", gwb_set_cookie, NULL, RSRC_CONF,
                    "Names of the cookies that carry a GWE route, in order "
                    "of preference (default: GWROUTEID GWEROUTEID)"),
    AP_INIT_TAKE1("GWEBalancerFallback", gwb_set_fallback, NULL, RSRC_CONF,
                  "The lbmethod that places requests without a usable "
                  "route (default: weighted least busy)"),
    AP_INIT_TAKE2("GWEBalancerWebSocket", gwb_set_websocket, NULL, RSRC_CONF,
                  "An HTTP balancer and the balancer of ws:// members that "
                  "takes its WebSocket upgrades"),
    { NULL }
};

static void gwb_register_hooks(apr_pool_t *p)
{
    static const char *const before_balancer[] = { "mod_proxy_balancer.c",
                                                   NULL };

    ap_register_provider(p, PROXY_LBMETHOD, GWB_METHOD_NAME, "0",
                         &gwb_method);
    ap_hook_post_config(gwb_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    proxy_hook_pre_request(gwb_hand_off_websocket, NULL, before_balancer,
                           APR_HOOK_FIRST);
    APR_OPTIONAL_HOOK(ap, status_hook, gwb_status_hook, NULL, NULL,
                      APR_HOOK_MIDDLE);
    ap_hook_log_transaction(gwb_note_manager_request, NULL, NULL,
                            APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(gwe_balancer) = {
    STANDARD20_MODULE_STUFF,
    NULL,                       /* no per-directory config: the finder */
    NULL,                       /* sees only (balancer, r) */
    gwb_create_server_conf,
    gwb_merge_server_conf,
    gwb_cmds,
    gwb_register_hooks,
    AP_MODULE_FLAG_NONE
};

#endif /* GWB_PARSER_ONLY */
