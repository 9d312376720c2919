/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 *
 * mod_gwe_balancer.h: what the module's files share (README, "Hacking",
 * has the map).  Not an API: nothing outside this module includes it.
 */

#ifndef MOD_GWE_BALANCER_H
#define MOD_GWE_BALANCER_H

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "mod_proxy.h"

#include "gwb_cookie.h"

/* The module's version: the one place it is written (debian/changelog is
 * checked against it by the tests, Makefile.apxs reads it). */
#define GWB_VERSION "0.1.0"

#define GWB_METHOD_NAME "gwesticky"

#define GWB_BALANCER_PREFIX "balancer://"
#define GWB_BALANCER_PREFIX_LEN (sizeof(GWB_BALANCER_PREFIX) - 1)

extern module AP_MODULE_DECLARE_DATA gwe_balancer_module;

/* What the files share stays inside the .so: httpd loads modules with
 * RTLD_GLOBAL, and calls between the files need no PLT. */
#if defined(__GNUC__) && __GNUC__ >= 4
#define GWB_INTERNAL __attribute__((visibility("hidden")))
#else
#define GWB_INTERNAL
#endif

/* ------------------------------------------------------------------------
 * Configuration (mod_gwe_balancer.c).
 * ------------------------------------------------------------------------ */

typedef struct gwb_balancer gwb_balancer;

/* GWEBalancerWebSocket: upgrades aimed at http_url go to ws_url. */
typedef struct {
    const char *http_url;   /* "balancer://gwe" */
    const char *http_host;  /* "gwe": what a request URL is matched on */
    const char *ws_url;     /* "balancer://gwe-ws" */
    gwb_balancer *http;     /* the HTTP balancer's record, set at startup */
    gwb_balancer *ws;       /* the WebSocket balancer's record, likewise */
} gwb_ws_handoff;

/* GWEBalancerTunnelRecycle and GWEBalancerTunnelEvict: close tunnels
 * after grace, spread evenly over spread (gwb_tunnels.c). */
typedef struct {
    int on;
    apr_interval_time_t grace;
    apr_interval_time_t spread;
} gwb_tunnel_policy;

typedef struct {
    apr_array_header_t *cookie_names;   /* of gwb_name; NULL: inherit */
    const proxy_balancer_method *fallback; /* NULL: weighted least busy */
    int fallback_set;
    apr_array_header_t *ws_handoffs;    /* of gwb_ws_handoff; NULL: inherit */
    /* Main server only: */
    gwb_tunnel_policy recycle;          /* after a graceful restart */
    gwb_tunnel_policy evict;            /* when a member becomes unusable */
} gwb_server_conf;

/* ------------------------------------------------------------------------
 * Balancer records: counters and route index (gwb_counters.c).
 * ------------------------------------------------------------------------ */

/* What the counters count: one per routing decision, plus handoffs. */
typedef enum {
    GWB_C_STICKY, GWB_C_REDIRECT, GWB_C_FAILOVER, GWB_C_NOFAILOVER,
    GWB_C_NEW, GWB_C_UNKNOWN, GWB_C_HANDOFF, GWB_N_COUNTERS
} gwb_counter;

GWB_INTERNAL extern const char *const gwb_counter_names[GWB_N_COUNTERS];

/* One row of counters, in shared memory: every child process and thread
 * adds to it with atomic increments, so no count is lost and no lock is
 * taken.  64 bits, or 25,000 decisions a second would wrap a count in two
 * days, which monitoring reads as a restart; the compiler's atomics, since
 * APR has 64-bit ones only from 1.7 (RHEL 8 ships 1.6). */
typedef struct {
    apr_uint64_t n[GWB_N_COUNTERS];
} gwb_counts;

static inline void gwb_counter_inc(apr_uint64_t *n)
{
    __atomic_fetch_add(n, 1, __ATOMIC_RELAXED);
}

static inline apr_uint64_t gwb_counter_read(const apr_uint64_t *n)
{
    return __atomic_load_n(n, __ATOMIC_RELAXED);
}

typedef struct {
    apr_uint32_t hash;
    proxy_worker *worker;       /* NULL: an empty slot */
} gwb_index_slot;

/* An open-addressing table of (route hash, member), in lookup order
 * (gwb_route.c says when it is rebuilt). */
typedef struct {
    gwb_index_slot *slots;      /* malloc'ed; size is a power of two */
    apr_uint32_t mask;
    int built_from;             /* balancer->workers->nelts, or -1 */
    apr_uint32_t generation;
    apr_time_t wupdated;        /* balancer->wupdated when built */
} gwb_route_index;

/* What the processes share of a balancer, in shared memory. */
typedef struct {
    apr_uint32_t unknown_warned_at; /* when GWB0204 was last logged (s) */
    gwb_counts rows[];          /* [0] counts what is about no member, then
                                 * one row per member slot; a total is
                                 * their sum */
} gwb_balancer_shm;

/* Unknown routes this process saw since the last GWB0204, for the next. */
#define GWB_UNKNOWN_SAMPLES 4
typedef struct {
    int n;
    char route[GWB_UNKNOWN_SAMPLES][PROXY_WORKER_MAX_ROUTE_SIZE];
    apr_size_t len[GWB_UNKNOWN_SAMPLES];    /* as sent: longer if cut */
} gwb_unknown_sample;

/* Everything the module keeps for one balancer, found from it in O(1)
 * through balancer->context.  Each virtual host holds its own copy of the
 * balancers it inherits, with its own lock, so each copy has its own record
 * and route index; the copies share their members and so their counters. */
struct gwb_balancer {
    proxy_balancer *balancer;
    gwb_balancer_shm *shm;      /* the first copy's */
    gwb_counts *rows;           /* shm->rows */
    int member_rows;
    int shows_counters;         /* the first copy, which the pages show */
    int takes_websockets;       /* a GWEBalancerWebSocket names it */
    /* A WebSocket balancer's rows of tunnel counts (gwb_tunnels.c), by
     * member position; -1: not counted (a member added at run time). */
    int *tunnel_rows;
    int tunnel_row_count;
    /* Per copy, guarded by the copy's lock, as the finder runs under it: */
    gwb_route_index index;
    gwb_unknown_sample unknown;
};

GWB_INTERNAL
apr_status_t gwb_create_balancers(server_rec *main_s, apr_pool_t *pconf);
GWB_INTERNAL void gwb_count(gwb_balancer *rec, const proxy_worker *about,
                            gwb_counter which);
GWB_INTERNAL apr_uint64_t gwb_count_total(const gwb_balancer *rec,
                                          gwb_counter which);
/* The name of a member row (1..member_rows): its route, else its URL. */
GWB_INTERNAL const char *gwb_row_name(const gwb_balancer *rec, int row,
                                      apr_pool_t *p);
GWB_INTERNAL int gwb_row_is_empty(const gwb_counts *row);
/* "gwe" for balancer://gwe. */
GWB_INTERNAL const char *gwb_short_name(const proxy_balancer *balancer);
GWB_INTERNAL apr_uint32_t gwb_manager_generation(void);
/* When httpd last (re)started: the counters count from then. */
GWB_INTERNAL apr_time_t gwb_start_time(void);
/* Every record (gwb_balancer *), in server order; NULL before startup. */
GWB_INTERNAL const apr_array_header_t *gwb_all_balancers(void);
GWB_INTERNAL int gwb_note_manager_request(request_rec *r);
GWB_INTERNAL int gwb_status_hook(request_rec *r, int flags);

/* The record of a balancer (NULL for one made after startup). */
static inline gwb_balancer *gwb_balancer_of(const proxy_balancer *balancer)
{
    gwb_balancer *rec = balancer->context;

    return rec && rec->balancer == balancer ? rec : NULL;
}

/* Calls fn for every balancer of every server, in server order (main
 * server first). */
typedef void gwb_balancer_fn(server_rec *s, proxy_server_conf *proxy_conf,
                             proxy_balancer *balancer, void *baton);
GWB_INTERNAL void gwb_each_balancer(server_rec *main_s, gwb_balancer_fn *fn,
                                    void *baton);

/* ------------------------------------------------------------------------
 * Routing: the lbmethod and the WebSocket handoff (gwb_route.c).
 * ------------------------------------------------------------------------ */

GWB_INTERNAL extern const proxy_balancer_method gwb_method;

GWB_INTERNAL int gwb_is_ours(const proxy_balancer *balancer);
GWB_INTERNAL int gwb_route_init(void);
/* The balancers a GWEBalancerWebSocket names, as server s defines them
 * (NULL: not defined there). */
GWB_INTERNAL void gwb_handoff_balancers(server_rec *s,
                                        const gwb_ws_handoff *h,
                                        apr_pool_t *p, proxy_balancer **http,
                                        proxy_balancer **ws);
GWB_INTERNAL void gwb_link_handoffs(server_rec *main_s, apr_pool_t *ptemp);
GWB_INTERNAL int gwb_hand_off_websocket(proxy_worker **worker,
                                        proxy_balancer **balancer,
                                        request_rec *r,
                                        proxy_server_conf *pconf,
                                        char **url);

/* ------------------------------------------------------------------------
 * WebSocket tunnels: counted, recycled and evicted (gwb_tunnels.c).
 * ------------------------------------------------------------------------ */

/* Why the module closed a tunnel. */
typedef enum {
    GWB_CLOSE_RECYCLE, GWB_CLOSE_EVICT, GWB_N_CLOSE_REASONS
} gwb_close_reason;

GWB_INTERNAL extern const char *const gwb_close_reason_names[];

/* A WebSocket balancer member's tunnels, over every process and
 * generation. */
typedef struct {
    const char *balancer;       /* "gwe-ws" */
    const char *member;         /* its route, else its URL */
    apr_uint64_t open;
    apr_uint64_t closed[GWB_N_CLOSE_REASONS];   /* since httpd started */
} gwb_tunnel_count;

GWB_INTERNAL apr_status_t gwb_tunnels_post_config(server_rec *main_s,
                                                  apr_pool_t *pconf);
GWB_INTERNAL void gwb_tunnels_child_init(apr_pool_t *pchild, server_rec *s);
/* The handoff's part: the request is a WebSocket for handoff->ws. */
GWB_INTERNAL void gwb_tunnel_begin(request_rec *r,
                                   const gwb_ws_handoff *handoff);
GWB_INTERNAL int gwb_track_tunnel(request_rec *r, proxy_worker *worker,
                                  proxy_server_conf *conf, char *url,
                                  const char *proxyhost,
                                  apr_port_t proxyport);
/* Every member row, in the order rows were made; returns how many. */
GWB_INTERNAL int gwb_tunnel_counts(apr_pool_t *p, gwb_tunnel_count **counts);

/* ------------------------------------------------------------------------
 * Prometheus metrics (gwb_metrics.c).
 * ------------------------------------------------------------------------ */

GWB_INTERNAL int gwb_metrics_handler(request_rec *r);
/* The state a member's status bits give, the first that applies:
 * "stopped", "disabled", "error", "hcheck_failed", "draining", "standby",
 * "ok". */
GWB_INTERNAL const char *gwb_status_state(unsigned int status);

/* ------------------------------------------------------------------------
 * Startup checks (gwb_checks.c).
 * ------------------------------------------------------------------------ */

GWB_INTERNAL void gwb_check_balancers(server_rec *main_s, apr_pool_t *ptemp);
GWB_INTERNAL int gwb_check_all_handoffs(server_rec *main_s, apr_pool_t *ptemp);

/* ------------------------------------------------------------------------
 * Sizing for visitors, and the system's limits (gwb_sizing.c).
 * ------------------------------------------------------------------------ */

GWB_INTERNAL const char *gwb_set_sizing(cmd_parms *cmd, void *dummy,
                                        const char *visitors_arg,
                                        const char *per_child_arg);
/* Needs the MPM's limits: after the MPM's check_config. */
GWB_INTERNAL void gwb_check_system_limits(server_rec *s, apr_pool_t *ptemp);

#endif /* MOD_GWE_BALANCER_H */
