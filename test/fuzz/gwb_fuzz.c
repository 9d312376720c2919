/* libFuzzer target for the cookie parser and route choice of
 * mod_gwe_balancer (gwb_cookie.h, as the unit tests use it).  Fuzz:
 * test/fuzz/run.sh [SECONDS]; replay the seeds with any C compiler
 * (test/fuzz/replay.c): make -f Makefile.apxs unit
 *
 * The input, up to its first NUL byte, is a Cookie header; it is copied
 * into a malloc'ed buffer of exactly its length + 1, so that AddressSanitizer
 * catches a read past the terminating NUL.  Bytes after the first NUL, if
 * any, are a GWEBalancerCookie list: NUL-separated names, of which those
 * the directive would accept (RFC 2616 tokens) are used, each in a buffer
 * of exactly its length (gwb_name carries a length, not a terminator).
 *
 * Every input runs:
 *   - gwb_next_cookie() over the header, checked against an independent
 *     reference splitter (same spans, same order, cursor always advancing);
 *   - gwb_trim() and gwb_route_of_value() on the raw input;
 *   - gwb_pick_route() with the default names, with the names of the
 *     header's own cookies (so that custom lists match something) and with
 *     the list after the NUL, each against a member table and against the
 *     same table with usability inverted; every pick is checked against
 *     invariants and against a reference pick computed from the reference
 *     splitter.
 * A violated invariant aborts, which libFuzzer reports as a crash with the
 * input that caused it.
 */
#include "../../gwb_cookie.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The fuzzer's own code (member table, reference model, checks) gets no
 * coverage instrumentation: coverage feedback then comes from the module's
 * code alone, and runs are about twice as fast.  The sanitizers still
 * check it. */
#if defined(__clang__) && __clang_major__ >= 13
#define HARNESS __attribute__((no_sanitize("coverage")))
#else
#define HARNESS
#endif

#define REQUIRE(cond)                                                    \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "gwb_fuzz: invariant violated: %s (%s:%d)\n", \
                    #cond, __FILE__, __LINE__);                          \
            abort();                                                     \
        }                                                                \
    } while (0)

/* httpd's PROXY_WORKER_MAX_ROUTE_SIZE: a route= holds at most 63 chars,
 * and gwb_lookup_member() returns no member for anything longer. */
#define MAX_ROUTE_SIZE 64
#define MAX_NAMES 8
#define MAX_COOKIES 65536   /* more cookies than this: no reference */

#define ROUTE_63 \
    "GWE_Node_63_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNO"
#define ROUTE_63_STALE \
    "GWE_Stale_63_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN"

/* ---- a member table standing in for the balancer ---- */

typedef struct {
    const char *route;
    int usable;
} member;

static member members[] = {
    { "GWE_Node_1", 1 },
    { "GWE_Node_2", 1 },
    { "GWE_Node_3", 0 },
    { "GWE_Node_4", 0 },
    { "GWE_Node_10", 1 },
    { ROUTE_63, 1 },            /* the longest route a member can have */
    { ROUTE_63_STALE, 0 },
    { "node.1", 1 },            /* inner dot */
    { "a\"b", 1 },              /* a quote inside */
    { "x", 1 },                 /* short ones, easy to stumble on */
    { "y", 0 },
    { "dup", 0 },               /* the same route twice: as in httpd's */
    { "dup", 1 },               /* lookup, a usable one wins */
};
#define N_MEMBERS ((int)(sizeof(members) / sizeof(members[0])))

typedef struct {
    int invert;             /* usability inverted */
    const char *hdr;        /* the header's bounds, for the checks */
    size_t hlen;
    int lookups;
} cluster;

/* The member carrying a route, as gwb_lookup_member() finds it: none for a
 * route too long for route=, else the first usable one, else the first. */
HARNESS static member *find_member(int invert, const char *route, size_t len,
                           int *usable)
{
    member *unusable = NULL;
    int i;

    *usable = 0;
    if (len >= MAX_ROUTE_SIZE) {
        return NULL;
    }
    for (i = 0; i < N_MEMBERS; i++) {
        if (strlen(members[i].route) != len
            || memcmp(members[i].route, route, len) != 0) {
            continue;
        }
        if (members[i].usable ^ invert) {
            *usable = 1;
            return &members[i];
        }
        if (!unusable) {
            unusable = &members[i];
        }
    }
    return unusable;
}

HARNESS static void *lookup(void *ctx, const char *route, size_t len, int *usable)
{
    cluster *c = ctx;

    c->lookups++;
    /* Only non-empty routes, and only spans of the header, are looked up. */
    REQUIRE(len > 0 && len <= c->hlen);
    REQUIRE(route >= c->hdr && route + len <= c->hdr + c->hlen);
    return find_member(c->invert, route, len, usable);
}

/* ---- a reference splitter, written from the README's rules ---- */

typedef struct {
    const char *name, *value;
    size_t name_len, value_len;
} ref_cookie;

HARNESS static void ref_trim(const char **s, size_t *len)
{
    while (*len && (**s == ' ' || **s == '\t')) {
        ++*s;
        --*len;
    }
    while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t')) {
        --*len;
    }
}

/* Pieces between ';' and ',' that hold a '=': name before the first '=',
 * value after it, each without surrounding blanks.  Returns the count, or
 * -1 if there are more than max. */
HARNESS static int ref_split(const char *hdr, size_t hlen, ref_cookie *out, int max)
{
    size_t i = 0;
    int n = 0;

    while (i < hlen) {
        size_t j = i;
        const char *eq;

        while (j < hlen && hdr[j] != ';' && hdr[j] != ',') {
            j++;
        }
        eq = memchr(hdr + i, '=', j - i);
        if (eq) {
            if (n == max) {
                return -1;
            }
            out[n].name = hdr + i;
            out[n].name_len = (size_t)(eq - (hdr + i));
            out[n].value = eq + 1;
            out[n].value_len = (size_t)(hdr + j - (eq + 1));
            ref_trim(&out[n].name, &out[n].name_len);
            ref_trim(&out[n].value, &out[n].value_len);
            n++;
        }
        i = j + 1;
    }
    return n;
}

HARNESS static int ref_name_index(const ref_cookie *c, const gwb_name *names, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        if (names[i].len == c->name_len
            && memcmp(names[i].name, c->name, c->name_len) == 0) {
            return i;
        }
    }
    return -1;
}

HARNESS static void ref_route(const char *v, size_t len, const char **r, size_t *rl)
{
    if (len >= 2 && v[0] == '"' && v[len - 1] == '"') {
        v++;
        len -= 2;
    }
    if (len && v[0] == '.') {
        v++;
        len--;
    }
    *r = v;
    *rl = len;
}

/* ---- the checks ---- */

HARNESS static void check_next_cookie(const char *hdr, size_t hlen,
                              const ref_cookie *ref, int n_ref)
{
    const char *cursor = hdr, *before;
    gwb_cookie c;
    int n = 0;

    for (;;) {
        int got;

        before = cursor;
        got = gwb_next_cookie(&cursor, &c);
        REQUIRE(cursor >= before && cursor <= hdr + hlen);
        if (!got) {
            break;
        }
        REQUIRE(cursor > before);   /* progress: the loop ends */
        REQUIRE(c.name >= hdr && c.name + c.name_len <= hdr + hlen);
        REQUIRE(c.value >= hdr && c.value + c.value_len <= hdr + hlen);
        REQUIRE(c.name + c.name_len < c.value);     /* '=' in between */
        REQUIRE(c.value + c.value_len <= cursor);
        REQUIRE(!memchr(c.name, '=', c.name_len));
        REQUIRE(!memchr(c.name, ';', c.name_len)
                && !memchr(c.name, ',', c.name_len));
        REQUIRE(!memchr(c.value, ';', c.value_len)
                && !memchr(c.value, ',', c.value_len));
        REQUIRE(!c.name_len || (!gwb_is_blank(c.name[0])
                                && !gwb_is_blank(c.name[c.name_len - 1])));
        REQUIRE(!c.value_len || (!gwb_is_blank(c.value[0])
                                 && !gwb_is_blank(c.value[c.value_len - 1])));
        if (n_ref >= 0) {
            REQUIRE(n < n_ref);
            REQUIRE(c.name == ref[n].name && c.name_len == ref[n].name_len);
            REQUIRE(c.value == ref[n].value
                    && c.value_len == ref[n].value_len);
        }
        n++;
    }
    REQUIRE(*cursor == '\0' && cursor == hdr + hlen);
    REQUIRE(n_ref < 0 || n == n_ref);
    REQUIRE(!gwb_next_cookie(&cursor, &c));     /* stays at the end */
    REQUIRE(cursor == hdr + hlen);
}

HARNESS static void check_pick(const char *hdr, size_t hlen, const gwb_name *names,
                       int n_names, int invert, const ref_cookie *ref,
                       int n_ref)
{
    cluster cl = { invert, hdr, hlen, 0 };
    gwb_route_pick p, want;
    int usable = 0, candidates = 0, i;
    member *m;

    gwb_pick_route(hdr, names, n_names, lookup, &cl, &p);

    /* Invariants that hold whatever the header. */
    REQUIRE(p.state >= GWB_NO_ROUTE && p.state <= GWB_LIVE_ROUTE);
    if (p.state == GWB_NO_ROUTE) {
        REQUIRE(!p.member && !p.route && !p.route_len && !p.name_index);
    }
    else {
        REQUIRE(p.name_index >= 0 && p.name_index < n_names);
        REQUIRE(p.route_len > 0 && p.route_len <= hlen);
        REQUIRE(p.route >= hdr && p.route + p.route_len <= hdr + hlen);
        REQUIRE(!memchr(p.route, ';', p.route_len)
                && !memchr(p.route, ',', p.route_len));
        m = find_member(invert, p.route, p.route_len, &usable);
        REQUIRE(p.member == (void *)m);
        switch (p.state) {
        case GWB_LIVE_ROUTE:
            REQUIRE(m && usable && (m->usable ^ invert));
            REQUIRE(p.route_len < MAX_ROUTE_SIZE);
            REQUIRE(strlen(m->route) == p.route_len
                    && memcmp(m->route, p.route, p.route_len) == 0);
            break;
        case GWB_STALE_ROUTE:
            REQUIRE(m && !usable && !(m->usable ^ invert));
            REQUIRE(p.route_len < MAX_ROUTE_SIZE);
            break;
        default:
            REQUIRE(!m);
            break;
        }
    }
    if (n_ref < 0) {
        return;
    }

    /* The reference pick: the route cookies in header order, each with a
     * non-empty route; the best live one (lowest name index, then the
     * earliest), else the best stale one, else the best unknown one. */
    memset(&want, 0, sizeof(want));
    for (i = 0; i < n_ref; i++) {
        gwb_route_pick cand;
        int live;

        cand.name_index = ref_name_index(&ref[i], names, n_names);
        if (cand.name_index < 0) {
            continue;
        }
        ref_route(ref[i].value, ref[i].value_len, &cand.route,
                  &cand.route_len);
        if (!cand.route_len) {
            continue;
        }
        candidates++;
        cand.member = find_member(invert, cand.route, cand.route_len, &live);
        cand.state = !cand.member ? GWB_UNKNOWN_ROUTE
                     : live ? GWB_LIVE_ROUTE : GWB_STALE_ROUTE;
        if (cand.state == GWB_LIVE_ROUTE && p.state == GWB_LIVE_ROUTE) {
            /* A live pick's name ranks first among all live candidates. */
            REQUIRE(p.name_index <= cand.name_index);
        }
        if (cand.state > want.state
            || (cand.state == want.state
                && cand.name_index < want.name_index)) {
            want = cand;
        }
    }
    REQUIRE(p.state == want.state);
    if (p.state != GWB_NO_ROUTE) {
        REQUIRE(p.name_index == want.name_index);
        REQUIRE(p.route == want.route && p.route_len == want.route_len);
        REQUIRE(p.member == want.member);
    }
    /* Each route cookie looked up at most once: work bounded by the
     * header. */
    REQUIRE(cl.lookups <= candidates && (cl.lookups > 0) == (candidates > 0));
}

/* RFC 2616 token, as GWEBalancerCookie accepts them. */
HARNESS static int is_cookie_name(const char *s, size_t len)
{
    size_t i;

    if (!len) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch < 32 || ch > 126 || strchr(" \t()<>@,;:\\\"/[]?={}", ch)) {
            return 0;
        }
    }
    return 1;
}

/* Appends a copy of s (exactly len bytes, no terminator) to names. */
HARNESS static int add_name(gwb_name *names, int n, const char *s, size_t len)
{
    char *copy;

    if (n == MAX_NAMES || !is_cookie_name(s, len)) {
        return n;
    }
    copy = malloc(len);
    if (!copy) {
        abort();
    }
    memcpy(copy, s, len);
    names[n].name = copy;
    names[n].len = len;
    return n + 1;
}

HARNESS static void free_names(gwb_name *names, int n)
{
    while (n--) {
        free((void *)names[n].name);
    }
}

HARNESS static void check_lower_level(const uint8_t *data, size_t size)
{
    /* The raw bytes, NULs and all, as one span: no terminator needed. */
    char *raw = malloc(size ? size : 1);
    const char *s, *r;
    size_t len, rl;

    if (!raw) {
        abort();
    }
    memcpy(raw, data, size);

    s = raw;
    len = size;
    gwb_trim(&s, &len);
    REQUIRE(s >= raw && s + len <= raw + size);
    REQUIRE(!len || (!gwb_is_blank(s[0]) && !gwb_is_blank(s[len - 1])));

    gwb_route_of_value(raw, size, &r, &rl);
    REQUIRE(r >= raw && r + rl <= raw + size);
    REQUIRE(rl <= size && size - rl <= 3);
    ref_route(raw, size, &s, &len);
    REQUIRE(r == s && rl == len);
    free(raw);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const gwb_name default_names[] = {
        { "GWROUTEID", 9 },
        { "GWEROUTEID", 10 },
    };
    static ref_cookie ref[MAX_COOKIES];
    const uint8_t *nul = memchr(data, 0, size);
    size_t hlen = nul ? (size_t)(nul - data) : size;
    gwb_name own[MAX_NAMES], given[MAX_NAMES];
    int n_own = 0, n_given = 0, n_ref, i, invert;
    char *hdr;
    gwb_route_pick p;

    hdr = malloc(hlen + 1);
    if (!hdr) {
        abort();
    }
    memcpy(hdr, data, hlen);
    hdr[hlen] = '\0';

    n_ref = ref_split(hdr, hlen, ref, MAX_COOKIES);
    check_next_cookie(hdr, hlen, ref, n_ref);
    check_lower_level(data, size);

    /* The header's own cookie names, last first: a custom list that
     * matches, in an order unlike the header's. */
    for (i = (n_ref < 0 ? MAX_COOKIES : n_ref) - 1; i >= 0; i--) {
        n_own = add_name(own, n_own, ref[i].name, ref[i].name_len);
    }
    /* The list after the first NUL. */
    if (nul) {
        const uint8_t *cur = nul + 1, *end = data + size;

        while (cur < end) {
            const uint8_t *q = memchr(cur, 0, (size_t)(end - cur));

            if (!q) {
                q = end;
            }
            n_given = add_name(given, n_given, (const char *)cur,
                               (size_t)(q - cur));
            cur = q + 1;
        }
    }

    for (invert = 0; invert <= 1; invert++) {
        check_pick(hdr, hlen, default_names, 2, invert, ref, n_ref);
        if (n_own) {
            check_pick(hdr, hlen, own, n_own, invert, ref, n_ref);
        }
        if (n_given) {
            check_pick(hdr, hlen, given, n_given, invert, ref, n_ref);
        }
    }

    /* No header at all. */
    gwb_pick_route(NULL, default_names, 2, lookup, NULL, &p);
    REQUIRE(p.state == GWB_NO_ROUTE && !p.member && !p.route);

    free_names(own, n_own);
    free_names(given, n_given);
    free(hdr);
    return 0;
}
