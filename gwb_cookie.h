/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 *
 * gwb_cookie.h: the cookie parser and route choice of mod_gwe_balancer.
 *
 * Pure functions of a Cookie header, with no httpd dependency: the module's
 * finder (gwb_route.c), the C unit tests (test/unit) and the fuzz target
 * (test/fuzz) include this header, each compiling its own copy.  The
 * functions are static inline so that the compiler can inline them into
 * the finder, whose cost bench/finder_cost.py measures, and so that a file
 * that includes the header only for its types does not warn.
 *
 * The rules (README, "Routing rules"): a header is split at ';' and ','
 * into name=value pairs; a value loses its surrounding blanks, its double
 * quotes and one leading dot; of the route cookies found, the best live
 * route wins, else the best stale one, else the best unknown one, where a
 * name earlier in the list of names ranks first, then the earlier cookie.
 */

#ifndef GWB_COOKIE_H
#define GWB_COOKIE_H

#include <stddef.h>
#include <string.h>

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

static inline int gwb_is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static inline void gwb_trim(const char **s, size_t *len)
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
static inline int gwb_next_cookie(const char **cursor, gwb_cookie *c)
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
static inline void gwb_route_of_value(const char *value, size_t len,
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
static inline int gwb_name_index(const gwb_cookie *c, const gwb_name *names,
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
static inline void gwb_consider(gwb_route_pick *best, const gwb_route_pick *cand)
{
    if (best->state == GWB_NO_ROUTE || cand->name_index < best->name_index) {
        *best = *cand;
    }
}

/* Reads every route cookie of a Cookie header (NULL for none) and says
 * which route counts: the best live one, else the best stale one, else the
 * best unknown one, else none. */
static inline void gwb_pick_route(const char *header, const gwb_name *names,
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

#endif /* GWB_COOKIE_H */
