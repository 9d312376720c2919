/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 *
 * gwb_metrics.c: the handler gwe-balancer-metrics, which serves the routing
 * counters and the members' states in Prometheus' text exposition format
 * (version 0.0.4), so that Prometheus scrapes the balancer directly:
 *
 *     <Location "/metrics">
 *         SetHandler gwe-balancer-metrics
 *         Require ip 127.0.0.1 ::1
 *     </Location>
 *
 * Every value comes from shared memory, so any child answers for all.
 */

#include "http_protocol.h"
#include "apr_hash.h"
#include "apr_strings.h"

#include "mod_gwe_balancer.h"

APLOG_USE_MODULE(gwe_balancer);

#define GWB_METRICS_HANDLER "gwe-balancer-metrics"

/* A member's state, one of gwb_state_names: the first that applies, in
 * that order (an operator's choice before what the checks found). */
typedef enum {
    GWB_S_STOPPED, GWB_S_DISABLED, GWB_S_ERROR, GWB_S_HCHECK_FAILED,
    GWB_S_DRAINING, GWB_S_STANDBY, GWB_S_OK, GWB_N_STATES
} gwb_state;

static const char *const gwb_state_names[GWB_N_STATES] = {
    "stopped", "disabled", "error", "hcheck_failed", "draining", "standby",
    "ok"
};

static gwb_state gwb_state_of(unsigned int status)
{
    if (status & PROXY_WORKER_STOPPED) {
        return GWB_S_STOPPED;
    }
    if (status & PROXY_WORKER_DISABLED) {
        return GWB_S_DISABLED;
    }
    if (status & PROXY_WORKER_IN_ERROR) {
        return GWB_S_ERROR;
    }
    if (status & PROXY_WORKER_HC_FAIL) {
        return GWB_S_HCHECK_FAILED;
    }
    if (status & PROXY_WORKER_DRAIN) {
        return GWB_S_DRAINING;
    }
#ifdef PROXY_WORKER_HOT_SPARE
    if (status & PROXY_WORKER_HOT_SPARE) {
        return GWB_S_STANDBY;
    }
#endif
    if (status & PROXY_WORKER_HOT_STANDBY) {
        return GWB_S_STANDBY;
    }
    return GWB_S_OK;
}

const char *gwb_status_state(unsigned int status)
{
    return gwb_state_names[gwb_state_of(status)];
}

/* A label value as the format wants it: \, " and newline escaped. */
static const char *gwb_label(apr_pool_t *p, const char *value)
{
    char *out, *o;

    if (!value[strcspn(value, "\\\"\n")]) {
        return value;
    }
    o = out = apr_palloc(p, 2 * strlen(value) + 1);
    for (; *value; value++) {
        if (*value == '\n') {
            *o++ = '\\';
            *o++ = 'n';
            continue;
        }
        if (*value == '\\' || *value == '"') {
            *o++ = '\\';
        }
        *o++ = *value;
    }
    *o = '\0';
    return out;
}

static void gwb_family(request_rec *r, const char *name, const char *type,
                       const char *help)
{
    ap_rprintf(r, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The balancers to show, one per name: the copies virtual hosts hold
 * share their first copy's counters. */
static apr_array_header_t *gwb_shown_balancers(apr_pool_t *p)
{
    const apr_array_header_t *all = gwb_all_balancers();
    apr_array_header_t *shown = apr_array_make(p, 4, sizeof(gwb_balancer *));
    apr_hash_t *names = apr_hash_make(p);
    int i;

    for (i = 0; all && i < all->nelts; i++) {
        gwb_balancer *rec = APR_ARRAY_IDX(all, i, gwb_balancer *);
        const char *name = gwb_short_name(rec->balancer);

        if (rec->shows_counters
            && !apr_hash_get(names, name, APR_HASH_KEY_STRING)) {
            apr_hash_set(names, name, APR_HASH_KEY_STRING, rec);
            APR_ARRAY_PUSH(shown, gwb_balancer *) = rec;
        }
    }
    return shown;
}

static int gwb_has_member_in_row(const gwb_balancer *rec, int row)
{
    int i;

    for (i = 0; i < rec->balancer->workers->nelts; i++) {
        if (APR_ARRAY_IDX(rec->balancer->workers, i,
                          proxy_worker *)->s->index == row - 1) {
            return 1;
        }
    }
    return 0;
}

/* Every member's row, and the row of decisions about no member as
 * route="" (answered 503 with no member to name, or handoffs). */
static void gwb_decisions(request_rec *r, const gwb_balancer *rec)
{
    const char *balancer = gwb_label(r->pool, gwb_short_name(rec->balancer));
    int row, k;

    for (row = 0; row <= rec->member_rows; row++) {
        const char *route = "";

        if (row) {
            if (!gwb_has_member_in_row(rec, row)
                && gwb_row_is_empty(&rec->rows[row])) {
                continue;   /* a free slot */
            }
            route = gwb_label(r->pool, gwb_row_name(rec, row, r->pool));
        }
        for (k = 0; k < GWB_N_COUNTERS; k++) {
            if (k == GWB_C_HANDOFF) {
                continue;   /* a metric of its own */
            }
            ap_rprintf(r, "gwe_balancer_decisions_total{balancer=\"%s\","
                       "route=\"%s\",decision=\"%s\"} %" APR_UINT64_T_FMT
                       "\n", balancer, route, gwb_counter_names[k],
                       gwb_counter_read(&rec->rows[row].n[k]));
        }
    }
}

static const char *gwb_member_label(request_rec *r, const proxy_worker *w)
{
    return gwb_label(r->pool, *w->s->route ? w->s->route : w->s->name);
}

static void gwb_member_states(request_rec *r, const gwb_balancer *rec)
{
    const char *balancer = gwb_label(r->pool, gwb_short_name(rec->balancer));
    int i, k;

    for (i = 0; i < rec->balancer->workers->nelts; i++) {
        const proxy_worker *w = APR_ARRAY_IDX(rec->balancer->workers, i,
                                              proxy_worker *);
        const char *route = gwb_member_label(r, w);
        gwb_state state = gwb_state_of(w->s->status);

        for (k = 0; k < GWB_N_STATES; k++) {
            ap_rprintf(r, "gwe_balancer_member_state{balancer=\"%s\","
                       "route=\"%s\",state=\"%s\"} %d\n", balancer, route,
                       gwb_state_names[k], state == (gwb_state)k);
        }
    }
}

static void gwb_member_busy(request_rec *r, const gwb_balancer *rec)
{
    const char *balancer = gwb_label(r->pool, gwb_short_name(rec->balancer));
    int i;

    for (i = 0; i < rec->balancer->workers->nelts; i++) {
        const proxy_worker *w = APR_ARRAY_IDX(rec->balancer->workers, i,
                                              proxy_worker *);

        ap_rprintf(r, "gwe_balancer_member_busy{balancer=\"%s\","
                   "route=\"%s\"} %" APR_SIZE_T_FMT "\n", balancer,
                   gwb_member_label(r, w), w->s->busy);
    }
}

static void gwb_tunnel_metrics(request_rec *r)
{
    gwb_tunnel_count *c;
    int n = gwb_tunnel_counts(r->pool, &c), i, k;

    gwb_family(r, "gwe_balancer_member_tunnels", "gauge",
               "WebSocket tunnels open to the member, in every process "
               "(old generations' too).");
    for (i = 0; i < n; i++) {
        ap_rprintf(r, "gwe_balancer_member_tunnels{balancer=\"%s\","
                   "route=\"%s\"} %" APR_UINT64_T_FMT "\n",
                   gwb_label(r->pool, c[i].balancer),
                   gwb_label(r->pool, c[i].member), c[i].open);
    }
    gwb_family(r, "gwe_balancer_tunnels_closed_total", "counter",
               "WebSocket tunnels the balancer closed since httpd started "
               "(across graceful restarts): recycle "
               "(GWEBalancerTunnelRecycle), evict (GWEBalancerTunnelEvict).");
    for (i = 0; i < n; i++) {
        for (k = 0; k < GWB_N_CLOSE_REASONS; k++) {
            ap_rprintf(r, "gwe_balancer_tunnels_closed_total{balancer=\"%s\","
                       "route=\"%s\",reason=\"%s\"} %" APR_UINT64_T_FMT
                       "\n", gwb_label(r->pool, c[i].balancer),
                       gwb_label(r->pool, c[i].member),
                       gwb_close_reason_names[k], c[i].closed[k]);
        }
    }
}

static void gwb_write_metrics(request_rec *r)
{
    apr_array_header_t *shown = gwb_shown_balancers(r->pool);
    int i;

    gwb_family(r, "gwe_balancer_info", "gauge",
               "mod_gwe_balancer's version (the value is always 1).");
    ap_rputs("gwe_balancer_info{version=\"" GWB_VERSION "\"} 1\n", r);
    gwb_family(r, "gwe_balancer_start_time_seconds", "gauge",
               "When httpd last (re)started, in seconds since the epoch: "
               "every counter starts from 0 then.");
    ap_rprintf(r, "gwe_balancer_start_time_seconds %" APR_TIME_T_FMT "\n",
               apr_time_sec(gwb_start_time()));

    gwb_family(r, "gwe_balancer_decisions_total", "counter",
               "Routing decisions: sticky and new count for the member "
               "that took the request, unknown-route too; redirect, "
               "failover and nofailover for the member the cookie named.");
    for (i = 0; i < shown->nelts; i++) {
        gwb_decisions(r, APR_ARRAY_IDX(shown, i, gwb_balancer *));
    }
    gwb_family(r, "gwe_balancer_websocket_handoffs_total", "counter",
               "WebSocket upgrades handed to the balancer's ws:// twin "
               "(GWEBalancerWebSocket).");
    for (i = 0; i < shown->nelts; i++) {
        const gwb_balancer *rec = APR_ARRAY_IDX(shown, i, gwb_balancer *);

        ap_rprintf(r, "gwe_balancer_websocket_handoffs_total{balancer=\"%s\"}"
                   " %" APR_UINT64_T_FMT "\n",
                   gwb_label(r->pool, gwb_short_name(rec->balancer)),
                   gwb_count_total(rec, GWB_C_HANDOFF));
    }
    gwb_family(r, "gwe_balancer_member_state", "gauge",
               "1 for the member's current state, 0 for the others.");
    for (i = 0; i < shown->nelts; i++) {
        gwb_member_states(r, APR_ARRAY_IDX(shown, i, gwb_balancer *));
    }
    gwb_family(r, "gwe_balancer_member_busy", "gauge",
               "Requests and tunnels the member has in flight.");
    for (i = 0; i < shown->nelts; i++) {
        gwb_member_busy(r, APR_ARRAY_IDX(shown, i, gwb_balancer *));
    }
    gwb_tunnel_metrics(r);
}

int gwb_metrics_handler(request_rec *r)
{
    if (!r->handler || strcmp(r->handler, GWB_METRICS_HANDLER) != 0) {
        return DECLINED;
    }
    r->allowed |= (AP_METHOD_BIT << M_GET);
    if (r->method_number != M_GET) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (!r->header_only) {
        gwb_write_metrics(r);
    }
    return OK;
}
