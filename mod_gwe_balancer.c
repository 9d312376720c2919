/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 *
 * mod_gwe_balancer: the lbmethod "gwesticky" for mod_proxy_balancer, which
 * keeps every visitor of a Genesys Web Engagement (GWE) cluster on the node
 * that holds its session.
 *
 * Build:   make -f Makefile.apxs
 *          (or: apxs -c mod_gwe_balancer.c gwb_route.c gwb_counters.c
 *                       gwb_metrics.c gwb_checks.c gwb_tunnels.c
 *                       gwb_sizing.c)
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
 * Files (README, "Hacking", has the map): this one holds the configuration
 * (directives, server config, startup) and the hooks; gwb_cookie.h the
 * cookie parser; gwb_route.c the finder and the WebSocket handoff;
 * gwb_counters.c the balancer records, counters and server-status;
 * gwb_metrics.c the Prometheus metrics; gwb_checks.c the startup checks;
 * gwb_sizing.c the MPM's sizes for a number of visitors
 * (GWEBalancerSizing) and the check of the system's limits;
 * gwb_tunnels.c the WebSocket tunnels: counted, recycled after a graceful
 * restart and evicted from unusable members (GWEBalancerTunnelRecycle,
 * GWEBalancerTunnelEvict).
 */

#include "ap_provider.h"
#include "apr_optional_hooks.h"
#include "apr_strings.h"
#include "mod_status.h"

#include "mod_gwe_balancer.h"

/* The startup checks need only the configuration; their log lines must
 * reach whoever can act on them, once.  httpd reads its configuration
 * twice at startup.  In the first pass (all that "apachectl configtest"
 * runs), what is logged before the logs are open goes to the console; in
 * the second (configuration generation 1), to nowhere once the daemon has
 * detached, else to the error log.  On a restart (generation 2 on) it goes
 * to the error log, which httpd keeps as its stderr. */
static int gwb_is_initial_real_pass(void)
{
    return ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_CONFIG
           && ap_state_query(AP_SQ_CONFIG_GEN) == 1;
}

static int gwb_run_checks(server_rec *s, apr_pool_t *ptemp)
{
    gwb_check_balancers(s, ptemp);
    gwb_check_system_limits(s, ptemp);
    return gwb_check_all_handoffs(s, ptemp);
}

/* In every pass but the daemon's second, check_config runs the checks: so
 * configtest reports everything, and refuses (exit 1) what would stop
 * httpd, before a restart could take the site down. */
static int gwb_check_config(apr_pool_t *pconf, apr_pool_t *plog,
                            apr_pool_t *ptemp, server_rec *s)
{
    /* mod_proxy registers the optional functions gwb_route_init() needs;
     * without mod_proxy_balancer httpd would answer 500 to every request
     * for a balancer. */
    if (!gwb_route_init() || !ap_find_linked_module("mod_proxy_balancer.c")) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                     "GWB0001: mod_proxy and mod_proxy_balancer (2.4.35 or "
                     "later) must be loaded for gwesticky: add LoadModule "
                     "proxy_module and proxy_balancer_module before "
                     "gwe_balancer_module");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return gwb_is_initial_real_pass() ? OK : gwb_run_checks(s, ptemp);
}

static int gwb_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                           apr_pool_t *ptemp, server_rec *s)
{
    apr_status_t rv;
    int status;

    /* The first of the two startup passes only tests the configuration. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    /* The daemon's second pass: the checks once more, into the error log
     * that is open now. */
    if (gwb_is_initial_real_pass()
        && (status = gwb_run_checks(s, ptemp)) != OK) {
        return status;
    }
    if ((rv = gwb_create_balancers(s, pconf)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     "GWB0004: no shared memory for the routing counters "
                     "and indexes; "
                     "check the system's shared memory limits");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    gwb_link_handoffs(s, ptemp);
    if ((rv = gwb_tunnels_post_config(s, pconf)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     "GWB0005: no shared memory for the WebSocket tunnel "
                     "counts; check the system's shared memory limits");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    ap_add_version_component(pconf, "mod_gwe_balancer/" GWB_VERSION);
    /* NOTICE is logged whatever the LogLevel: one line per (re)start. */
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                 "GWB0003: mod_gwe_balancer/" GWB_VERSION " (lbmethod "
                 GWB_METHOD_NAME ") ready");
    return OK;
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

/* A time as httpd's own timeouts take it: seconds by default, or with a
 * unit (ms, s, min, h). */
static const char *gwb_parse_interval(cmd_parms *cmd, const char *arg,
                                      apr_interval_time_t *t)
{
    if (ap_timeout_parameter_parse(arg, t, "s") != APR_SUCCESS || *t < 0) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a time; write "
                            "seconds (30 or 30s), milliseconds (500ms), "
                            "minutes (2min) or hours (1h)", cmd->cmd->name,
                            arg);
    }
    return NULL;
}

/* GWEBalancerTunnelRecycle and GWEBalancerTunnelEvict: "off", or GRACE
 * SPREAD.  cmd->info is the policy's offset in gwb_server_conf. */
static const char *gwb_set_tunnel_policy(cmd_parms *cmd, void *dummy,
                                         const char *grace,
                                         const char *spread)
{
    gwb_server_conf *conf =
        ap_get_module_config(cmd->server->module_config,
                             &gwe_balancer_module);
    gwb_tunnel_policy *policy =
        (gwb_tunnel_policy *)((char *)conf + (apr_size_t)cmd->info);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    if (err) {
        return err;
    }
    if (!spread) {
        if (ap_cstr_casecmp(grace, "off") != 0) {
            return apr_psprintf(cmd->pool, "%s: takes GRACE SPREAD (two "
                                "times, e.g. 60s 120s) or off",
                                cmd->cmd->name);
        }
        policy->on = 0;
        return NULL;
    }
    if ((err = gwb_parse_interval(cmd, grace, &policy->grace))
        || (err = gwb_parse_interval(cmd, spread, &policy->spread))) {
        return err;
    }
    policy->on = 1;
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
    AP_INIT_TAKE12("GWEBalancerTunnelRecycle", gwb_set_tunnel_policy,
                   (void *)APR_OFFSETOF(gwb_server_conf, recycle), RSRC_CONF,
                   "After a graceful restart, a process of the old "
                   "generation closes its WebSocket tunnels GRACE after "
                   "the restart, spread over SPREAD, and exits; or off "
                   "(the default)"),
    AP_INIT_TAKE12("GWEBalancerTunnelEvict", gwb_set_tunnel_policy,
                   (void *)APR_OFFSETOF(gwb_server_conf, evict), RSRC_CONF,
                   "WebSocket tunnels of a member unusable for GRACE "
                   "(disabled, stopped, in error, failing its health check; "
                   "not draining) are closed, spread over SPREAD; or off "
                   "(the default)"),
    AP_INIT_TAKE12("GWEBalancerSizing", gwb_set_sizing, NULL,
                   RSRC_CONF | EXEC_ON_READ,
                   "VISITORS [THREADS_PER_CHILD]: defines GWE_THREADS_PER_"
                   "CHILD, GWE_MAX_REQUEST_WORKERS, GWE_SERVER_LIMIT, "
                   "GWE_MIN_SPARE_THREADS and GWE_MAX_SPARE_THREADS for "
                   "the MPM directives that follow"),
    { NULL }
};

static void gwb_register_hooks(apr_pool_t *p)
{
    static const char *const before_balancer[] = { "mod_proxy_balancer.c",
                                                   NULL };

    ap_register_provider(p, PROXY_LBMETHOD, GWB_METHOD_NAME, "0",
                         &gwb_method);
    /* Last: the system limits check reads the limits the MPM's own
     * check_config settles. */
    ap_hook_check_config(gwb_check_config, NULL, NULL, APR_HOOK_LAST);
    ap_hook_post_config(gwb_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    proxy_hook_pre_request(gwb_hand_off_websocket, NULL, before_balancer,
                           APR_HOOK_FIRST);
    /* Before mod_proxy_wstunnel's and mod_proxy_http's (APR_HOOK_FIRST):
     * it declines, having noted which member the tunnel goes to. */
    proxy_hook_scheme_handler(gwb_track_tunnel, NULL, NULL,
                              APR_HOOK_REALLY_FIRST);
    ap_hook_child_init(gwb_tunnels_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(gwb_metrics_handler, NULL, NULL, APR_HOOK_MIDDLE);
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
