/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 *
 * gwb_counters.c: the module's record of each balancer (its routing
 * counters and its route index), the shared memory behind the counters,
 * and the pages that show them (mod_status's /server-status).
 */

#include "apr_atomic.h"
#include "apr_hash.h"
#include "apr_shm.h"
#include "apr_strings.h"
#include "mod_status.h"

#include "mod_gwe_balancer.h"

APLOG_USE_MODULE(gwe_balancer);

const char *const gwb_counter_names[GWB_N_COUNTERS] = {
    "sticky", "redirect", "failover", "nofailover", "new", "unknown-route",
    "websocket-handoff"
};

/* The start of the shared memory segment; each balancer's part
 * (gwb_balancer_shm) follows it. */
typedef struct {
    /* Bumped whenever balancer-manager may have changed a route. */
    apr_uint32_t manager_generation;
    apr_time_t start_time;      /* of this generation: counters start at 0 */
} gwb_shared_head;

#define GWB_BALANCERS_OFFSET APR_ALIGN_DEFAULT(sizeof(gwb_shared_head))

/* Built at startup, read-only afterwards. */
static gwb_shared_head *gwb_shared;
static apr_array_header_t *gwb_records;   /* of gwb_balancer *, server order */

void gwb_each_balancer(server_rec *main_s, gwb_balancer_fn *fn, void *baton)
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

/* Counts a decision in the row of the member it is about (NULL: none). */
void gwb_count(gwb_balancer *rec, const proxy_worker *about,
               gwb_counter which)
{
    int row = 0;

    if (!rec || !rec->rows) {
        return;
    }
    if (about && about->s->index >= 0
        && about->s->index < rec->member_rows) {
        row = 1 + about->s->index;
    }
    gwb_counter_inc(&rec->rows[row].n[which]);
}

/* Each row only grows, so a sum of rows read one after the other never
 * goes backwards from one reading to the next. */
apr_uint64_t gwb_count_total(const gwb_balancer *rec, gwb_counter which)
{
    apr_uint64_t total = 0;
    int row;

    for (row = 0; row <= rec->member_rows; row++) {
        total += gwb_counter_read(&rec->rows[row].n[which]);
    }
    return total;
}

apr_time_t gwb_start_time(void)
{
    return gwb_shared ? gwb_shared->start_time : 0;
}

const apr_array_header_t *gwb_all_balancers(void)
{
    return gwb_records;
}

apr_uint32_t gwb_manager_generation(void)
{
    return gwb_shared ? apr_atomic_read32(&gwb_shared->manager_generation)
                      : 0;
}

/* balancer-manager can rename routes: after any request to it that may
 * have changed something, every process rebuilds its route indexes. */
int gwb_note_manager_request(request_rec *r)
{
    if (gwb_shared && r->handler
        && strcmp(r->handler, "balancer-manager") == 0
        && (r->method_number == M_POST || r->args)) {
        apr_atomic_inc32(&gwb_shared->manager_generation);
    }
    return DECLINED;
}

/* ------------------------------------------------------------------------
 * Records and shared memory, made at startup.
 * ------------------------------------------------------------------------ */

/* Member slots a balancer can have: its members plus those balancer-manager
 * may add (growth=, or BalancerGrowth). */
static int gwb_member_slots(const proxy_balancer *b,
                            const proxy_server_conf *pconf)
{
    int growth = b->growth > pconf->bgrowth ? b->growth : pconf->bgrowth;

    return b->workers->nelts + (growth > 0 ? growth : 0);
}

/* A balancer's part of the shared memory. */
static apr_size_t gwb_shm_size(int member_rows)
{
    return APR_ALIGN_DEFAULT(sizeof(gwb_balancer_shm)
                             + (1 + member_rows) * sizeof(gwb_counts));
}

typedef struct {
    apr_pool_t *pconf;
    apr_hash_t *first_copy;     /* workers array -> its first record */
    apr_size_t size;            /* of the balancers' shared memory */
} gwb_build_ctx;

/* A record per balancer struct, hung on balancer->context (httpd's
 * "general purpose storage"), so that the finder finds it in O(1). */
static void gwb_add_record(server_rec *s, proxy_server_conf *proxy_conf,
                           proxy_balancer *b, void *baton)
{
    gwb_build_ctx *ctx = baton;
    gwb_balancer *rec = apr_pcalloc(ctx->pconf, sizeof(*rec));
    gwb_balancer *first = apr_hash_get(ctx->first_copy, &b->workers,
                                       sizeof(b->workers));

    rec->balancer = b;
    rec->index.built_from = -1;
    if (first) {
        rec->member_rows = first->member_rows;
    }
    else {
        rec->shows_counters = 1;
        rec->member_rows = gwb_member_slots(b, proxy_conf);
        ctx->size += gwb_shm_size(rec->member_rows);
        apr_hash_set(ctx->first_copy, &b->workers, sizeof(b->workers), rec);
    }
    b->context = rec;
    APR_ARRAY_PUSH(gwb_records, gwb_balancer *) = rec;
}

/* One anonymous shared memory segment that the children inherit: the head,
 * then each balancer's part (the copies virtual hosts hold share their
 * first copy's).  A restart makes a new one: the counters count
 * since the last (re)start. */
apr_status_t gwb_create_balancers(server_rec *main_s, apr_pool_t *pconf)
{
    gwb_build_ctx ctx;
    apr_size_t size;
    apr_shm_t *shm;
    apr_status_t rv;
    char *next;
    int i;

    ctx.pconf = pconf;
    ctx.first_copy = apr_hash_make(pconf);
    ctx.size = 0;
    gwb_records = apr_array_make(pconf, 4, sizeof(gwb_balancer *));
    gwb_each_balancer(main_s, gwb_add_record, &ctx);

    size = GWB_BALANCERS_OFFSET + ctx.size;
    if ((rv = apr_shm_create(&shm, size, NULL, pconf)) != APR_SUCCESS) {
        gwb_shared = NULL;
        return rv;
    }
    gwb_shared = apr_shm_baseaddr_get(shm);
    memset(gwb_shared, 0, size);
    gwb_shared->start_time = apr_time_now();
    next = (char *)gwb_shared + GWB_BALANCERS_OFFSET;
    for (i = 0; i < gwb_records->nelts; i++) {
        gwb_balancer *rec = APR_ARRAY_IDX(gwb_records, i, gwb_balancer *);

        if (rec->shows_counters) {
            rec->shm = (gwb_balancer_shm *)next;
            next += gwb_shm_size(rec->member_rows);
        }
        else {
            const gwb_balancer *first =
                apr_hash_get(ctx.first_copy, &rec->balancer->workers,
                             sizeof(rec->balancer->workers));

            rec->shm = first->shm;
        }
        rec->rows = rec->shm->rows;
    }
    return APR_SUCCESS;
}

/* ------------------------------------------------------------------------
 * The counters in /server-status.
 * ------------------------------------------------------------------------ */

const char *gwb_row_name(const gwb_balancer *rec, int row, apr_pool_t *p)
{
    int i;

    for (i = 0; i < rec->balancer->workers->nelts; i++) {
        const proxy_worker *w = APR_ARRAY_IDX(rec->balancer->workers, i,
                                              proxy_worker *);

        if (w->s->index == row - 1) {
            return *w->s->route ? w->s->route : w->s->name;
        }
    }
    /* A member this process has not seen yet (added in balancer-manager
     * and not yet synced here): named by its slot, one word for ?auto. */
    return apr_psprintf(p, "slot-%d", row - 1);
}

const char *gwb_short_name(const proxy_balancer *balancer)
{
    const char *name = balancer->s->name;

    if (!ap_cstr_casecmpn(name, GWB_BALANCER_PREFIX,
                          GWB_BALANCER_PREFIX_LEN)) {
        name += GWB_BALANCER_PREFIX_LEN;
    }
    return name;
}

int gwb_row_is_empty(const gwb_counts *row)
{
    int k;

    for (k = 0; k < GWB_N_COUNTERS; k++) {
        if (gwb_counter_read(&row->n[k])) {
            return 0;
        }
    }
    return 1;
}

/* A member's count, or with row 0 the balancer's total. */
static apr_uint64_t gwb_shown_count(const gwb_balancer *rec, int row,
                                    gwb_counter which)
{
    return row ? gwb_counter_read(&rec->rows[row].n[which])
               : gwb_count_total(rec, which);
}

/* ?auto: one "key: value" line per counter, e.g.
 * "GWEBalancer gwe GWE_Node_1 sticky: 12"; the route "*" is the total. */
static void gwb_status_short(request_rec *r, const gwb_balancer *rec)
{
    const char *name = gwb_short_name(rec->balancer);
    int row, k;

    for (row = 0; row <= rec->member_rows; row++) {
        if (row && gwb_row_is_empty(&rec->rows[row])) {
            continue;
        }
        for (k = 0; k < GWB_N_COUNTERS; k++) {
            ap_rprintf(r, "GWEBalancer %s %s %s: %" APR_UINT64_T_FMT "\n",
                       name, row ? gwb_row_name(rec, row, r->pool) : "*",
                       gwb_counter_names[k], gwb_shown_count(rec, row, k));
        }
    }
}

static void gwb_status_table(request_rec *r, const gwb_balancer *rec)
{
    int row, k;

    ap_rprintf(r, "<table border=\"1\"><tr><th>%s</th>",
               ap_escape_html(r->pool, rec->balancer->s->name));
    for (k = 0; k < GWB_N_COUNTERS; k++) {
        ap_rprintf(r, "<th>%s</th>", gwb_counter_names[k]);
    }
    ap_rputs("</tr>\n", r);
    for (row = 1; row <= rec->member_rows + 1; row++) {
        int shown = row <= rec->member_rows ? row : 0;  /* total last */

        if (shown && gwb_row_is_empty(&rec->rows[shown])) {
            continue;
        }
        ap_rprintf(r, "<tr><td>%s</td>", shown
                   ? ap_escape_html(r->pool, gwb_row_name(rec, shown,
                                                          r->pool))
                   : "<b>all routes</b>");
        for (k = 0; k < GWB_N_COUNTERS; k++) {
            ap_rprintf(r, "<td>%" APR_UINT64_T_FMT "</td>",
                       gwb_shown_count(rec, shown, k));
        }
        ap_rputs("</tr>\n", r);
    }
    ap_rputs("</table>\n", r);
}

/* WebSocket tunnels per member: open now (every process, old
 * generations' included), closed by the module since httpd started.
 * ?auto: "GWEBalancerTunnels gwe-ws GWE_Node_1 open: 12" and
 * "... closed-recycle: 3", "... closed-evict: 0". */
static void gwb_tunnel_status(request_rec *r, int flags)
{
    gwb_tunnel_count *c;
    int n = gwb_tunnel_counts(r->pool, &c), i, k;

    if (!n) {
        return;
    }
    if (flags & AP_STATUS_SHORT) {
        for (i = 0; i < n; i++) {
            ap_rprintf(r, "GWEBalancerTunnels %s %s open: %" APR_UINT64_T_FMT
                       "\n", c[i].balancer, c[i].member, c[i].open);
            for (k = 0; k < GWB_N_CLOSE_REASONS; k++) {
                ap_rprintf(r, "GWEBalancerTunnels %s %s closed-%s: %"
                           APR_UINT64_T_FMT "\n", c[i].balancer,
                           c[i].member, gwb_close_reason_names[k],
                           c[i].closed[k]);
            }
        }
        return;
    }
    ap_rputs("<h3>WebSocket tunnels: open now (every process, old "
             "generations' too), closed by recycle and evict since httpd "
             "started</h3>\n<table border=\"1\"><tr><th>balancer</th>"
             "<th>member</th><th>open</th><th>closed-recycle</th>"
             "<th>closed-evict</th></tr>\n", r);
    for (i = 0; i < n; i++) {
        ap_rprintf(r, "<tr><td>%s</td><td>%s</td><td>%" APR_UINT64_T_FMT
                   "</td>", ap_escape_html(r->pool, c[i].balancer),
                   ap_escape_html(r->pool, c[i].member), c[i].open);
        for (k = 0; k < GWB_N_CLOSE_REASONS; k++) {
            ap_rprintf(r, "<td>%" APR_UINT64_T_FMT "</td>", c[i].closed[k]);
        }
        ap_rputs("</tr>\n", r);
    }
    ap_rputs("</table>\n", r);
}

int gwb_status_hook(request_rec *r, int flags)
{
    int i;

    if (!gwb_records || !gwb_records->nelts) {
        return OK;
    }
    if (!(flags & AP_STATUS_SHORT)) {
        ap_rputs("<hr />\n<h2>GWE balancer routing decisions since start "
                 "(mod_gwe_balancer/" GWB_VERSION ")</h2>\n", r);
    }
    for (i = 0; i < gwb_records->nelts; i++) {
        const gwb_balancer *rec = APR_ARRAY_IDX(gwb_records, i,
                                                gwb_balancer *);

        if (!rec->shows_counters) {
            continue;
        }
        if (flags & AP_STATUS_SHORT) {
            gwb_status_short(r, rec);
        }
        else {
            gwb_status_table(r, rec);
        }
    }
    gwb_tunnel_status(r, flags);
    return OK;
}
