/* Unit tests of the cookie parser and route choice of mod_gwe_balancer
 * (gwb_cookie.h, which needs nothing of httpd).  A small table stands in
 * for the balancer's member list.  Build and run: make -f Makefile.apxs unit
 */
#include "../../gwb_cookie.h"

#include <stdio.h>
#include <stdlib.h>

static int passed, failed;

#define CHECK(cond) check((cond), #cond, __FILE__, __LINE__)

static void check(int ok, const char *what, const char *file, int line)
{
    if (ok) {
        passed++;
    }
    else {
        failed++;
        fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what);
    }
}

static int span_is(const char *p, size_t len, const char *expected)
{
    return p && len == strlen(expected) && memcmp(p, expected, len) == 0;
}

/* ---- a member table standing in for the balancer ---- */

typedef struct {
    const char *route;
    int usable;
} member;

typedef struct {
    member *members;
    int n;
    int lookups;
} cluster;

static void *lookup(void *ctx, const char *route, size_t len, int *usable)
{
    cluster *c = ctx;
    int i;

    c->lookups++;
    for (i = 0; i < c->n; i++) {
        if (span_is(route, len, c->members[i].route)) {
            *usable = c->members[i].usable;
            return &c->members[i];
        }
    }
    *usable = 0;
    return NULL;
}

static member members[] = {
    { "GWE_Node_1", 1 },
    { "GWE_Node_2", 1 },
    { "GWE_Node_3", 0 },    /* in error, disabled or failing its check */
    { "GWE_Node_4", 0 },
    { "GWE_Node_10", 1 },
};
static cluster gwe = { members, 5, 0 };

static const gwb_name default_names[] = {
    { "GWROUTEID", 9 },
    { "GWEROUTEID", 10 },
};

static gwb_route_pick pick_with(const char *header, const gwb_name *names,
                                int n_names)
{
    gwb_route_pick p;

    gwe.lookups = 0;
    gwb_pick_route(header, names, n_names, lookup, &gwe, &p);
    return p;
}

static gwb_route_pick pick(const char *header)
{
    return pick_with(header, default_names, 2);
}

static int picks_member(const char *header, gwb_route_state state,
                        const char *route)
{
    gwb_route_pick p = pick(header);

    return p.state == state && p.member
           && strcmp(((member *)p.member)->route, route) == 0;
}

static int picks_nothing(const char *header)
{
    gwb_route_pick p = pick(header);

    return p.state == GWB_NO_ROUTE && !p.member;
}

/* ---- the splitter ---- */

static void test_next_cookie(void)
{
    const char *cur = " a=1;b = 2 ,c=3=4;; lonely ; d= \"q\" ;=e,";
    gwb_cookie c;

    CHECK(gwb_next_cookie(&cur, &c));
    CHECK(span_is(c.name, c.name_len, "a") && span_is(c.value, c.value_len, "1"));
    CHECK(gwb_next_cookie(&cur, &c));
    CHECK(span_is(c.name, c.name_len, "b") && span_is(c.value, c.value_len, "2"));
    CHECK(gwb_next_cookie(&cur, &c));
    CHECK(span_is(c.name, c.name_len, "c") && span_is(c.value, c.value_len, "3=4"));
    CHECK(gwb_next_cookie(&cur, &c));   /* "lonely" has no '=' */
    CHECK(span_is(c.name, c.name_len, "d") && span_is(c.value, c.value_len, "\"q\""));
    CHECK(gwb_next_cookie(&cur, &c));
    CHECK(c.name_len == 0 && span_is(c.value, c.value_len, "e"));
    CHECK(!gwb_next_cookie(&cur, &c));
    CHECK(!gwb_next_cookie(&cur, &c));  /* stays at the end */

    cur = "";
    CHECK(!gwb_next_cookie(&cur, &c));
    cur = " ;;, ,";
    CHECK(!gwb_next_cookie(&cur, &c));
    cur = "GWROUTEID";
    CHECK(!gwb_next_cookie(&cur, &c));
    cur = "x=";
    CHECK(gwb_next_cookie(&cur, &c) && c.value_len == 0);
}

/* ---- the value ---- */

static int route_is(const char *value, const char *expected)
{
    const char *r;
    size_t len;

    gwb_route_of_value(value, strlen(value), &r, &len);
    return span_is(r, len, expected);
}

static void test_route_of_value(void)
{
    CHECK(route_is(".GWE_Node_1", "GWE_Node_1"));
    CHECK(route_is("GWE_Node_1", "GWE_Node_1"));          /* dot optional */
    CHECK(route_is("\".GWE_Node_1\"", "GWE_Node_1"));     /* quoted */
    CHECK(route_is("\"GWE_Node_1\"", "GWE_Node_1"));
    CHECK(route_is("..GWE_Node_1", ".GWE_Node_1"));       /* one dot only */
    CHECK(route_is(".", ""));
    CHECK(route_is("..", "."));
    CHECK(route_is("", ""));
    CHECK(route_is("\"\"", ""));
    CHECK(route_is("\".\"", ""));
    CHECK(route_is("\"", "\""));                          /* unbalanced */
    CHECK(route_is("\".GWE_Node_1", "\".GWE_Node_1"));
    CHECK(route_is(".GWE_Node_1\"", "GWE_Node_1\""));
    CHECK(route_is("node.1", "node.1"));                  /* inner dots kept */
}

/* ---- the routing rules ---- */

static void test_single_cookie(void)
{
    gwb_route_pick p;

    CHECK(picks_member("GWROUTEID=.GWE_Node_1", GWB_LIVE_ROUTE, "GWE_Node_1"));
    CHECK(picks_member("GWROUTEID=.GWE_Node_2", GWB_LIVE_ROUTE, "GWE_Node_2"));
    CHECK(picks_member("GWEROUTEID=.GWE_Node_2", GWB_LIVE_ROUTE, "GWE_Node_2"));
    CHECK(picks_member("GWROUTEID=GWE_Node_1", GWB_LIVE_ROUTE, "GWE_Node_1"));
    CHECK(picks_member("GWROUTEID=\".GWE_Node_1\"", GWB_LIVE_ROUTE, "GWE_Node_1"));
    CHECK(picks_member("  GWROUTEID = .GWE_Node_1  ", GWB_LIVE_ROUTE, "GWE_Node_1"));
    CHECK(picks_member("a=b;GWROUTEID=.GWE_Node_1;c=d", GWB_LIVE_ROUTE, "GWE_Node_1"));
    CHECK(picks_member("a=b, GWROUTEID=.GWE_Node_2, c=d", GWB_LIVE_ROUTE, "GWE_Node_2"));
    CHECK(picks_member("GWROUTEID=.GWE_Node_3", GWB_STALE_ROUTE, "GWE_Node_3"));

    p = pick("x=1; GWEROUTEID=.GWE_Node_1");
    CHECK(p.state == GWB_LIVE_ROUTE && p.name_index == 1);
    CHECK(span_is(p.route, p.route_len, "GWE_Node_1"));
}

static void test_names_match_exactly(void)
{
    CHECK(picks_nothing("XGWROUTEID=.GWE_Node_1"));
    CHECK(picks_nothing("GWROUTEIDX=.GWE_Node_1"));
    CHECK(picks_nothing("gwrouteid=.GWE_Node_1"));
    CHECK(picks_nothing("GWROUTID=.GWE_Node_1"));         /* the seed's typo 2 */
    CHECK(picks_nothing("JSESSIONID=abc.GWE_Node_1"));
    CHECK(picks_nothing("GWROUTEID"));                    /* a name alone */
    CHECK(picks_member("GWROUTEID; GWROUTEID=.GWE_Node_1", GWB_LIVE_ROUTE,
                       "GWE_Node_1"));
    CHECK(picks_member("foo=GWROUTEID=.GWE_Node_2; GWROUTEID=.GWE_Node_1",
                       GWB_LIVE_ROUTE, "GWE_Node_1"));
}

static void test_routes_match_exactly(void)
{
    gwb_route_pick p;

    CHECK(picks_member("GWROUTEID=.GWE_Node_10", GWB_LIVE_ROUTE, "GWE_Node_10"));
    p = pick("GWROUTEID=.GWE_Node_1x");
    CHECK(p.state == GWB_UNKNOWN_ROUTE && !p.member);
    CHECK(span_is(p.route, p.route_len, "GWE_Node_1x"));
    CHECK(pick("GWROUTEID=.GWE_Node_").state == GWB_UNKNOWN_ROUTE);
    CHECK(pick("GWROUTEID=.gwe_node_1").state == GWB_UNKNOWN_ROUTE);
    CHECK(pick("GWROUTEID=.GWE_Node_1 x").state == GWB_UNKNOWN_ROUTE);
}

static void test_empty_values(void)
{
    CHECK(picks_nothing(NULL));
    CHECK(picks_nothing(""));
    CHECK(picks_nothing("GWROUTEID="));
    CHECK(picks_nothing("GWROUTEID=."));
    CHECK(picks_nothing("GWROUTEID=\"\""));
    CHECK(picks_nothing("GWROUTEID=\".\""));
    CHECK(picks_nothing("GWROUTEID=   ;GWEROUTEID=."));
    CHECK(pick("GWROUTEID=..").state == GWB_UNKNOWN_ROUTE);
    CHECK(pick("GWROUTEID=\"").state == GWB_UNKNOWN_ROUTE);
    /* An empty one does not hide a real one behind it. */
    CHECK(picks_member("GWROUTEID=; GWROUTEID=.GWE_Node_2", GWB_LIVE_ROUTE,
                       "GWE_Node_2"));
}

static void test_several_route_cookies(void)
{
    gwb_route_pick p;

    /* A stale host-only cookie beside a live domain cookie: live wins. */
    CHECK(picks_member("GWROUTEID=.GWE_Node_3; GWROUTEID=.GWE_Node_1",
                       GWB_LIVE_ROUTE, "GWE_Node_1"));
    CHECK(picks_member("GWROUTEID=.nobody; GWROUTEID=.GWE_Node_2",
                       GWB_LIVE_ROUTE, "GWE_Node_2"));
    /* Two live ones: the first. */
    CHECK(picks_member("GWROUTEID=.GWE_Node_2; GWROUTEID=.GWE_Node_1",
                       GWB_LIVE_ROUTE, "GWE_Node_2"));
    /* None live: the first naming a member is the stale route. */
    CHECK(picks_member("GWROUTEID=.nobody; GWROUTEID=.GWE_Node_4; "
                       "GWROUTEID=.GWE_Node_3", GWB_STALE_ROUTE, "GWE_Node_4"));
    /* Nothing known: the first unknown route is reported. */
    p = pick("GWROUTEID=.a; GWROUTEID=.b");
    CHECK(p.state == GWB_UNKNOWN_ROUTE && span_is(p.route, p.route_len, "a"));
    /* Name order before header order. */
    CHECK(picks_member("GWEROUTEID=.GWE_Node_2; GWROUTEID=.GWE_Node_1",
                       GWB_LIVE_ROUTE, "GWE_Node_1"));
    CHECK(picks_member("GWEROUTEID=.GWE_Node_2; GWROUTEID=.GWE_Node_3",
                       GWB_LIVE_ROUTE, "GWE_Node_2"));
    CHECK(picks_member("GWEROUTEID=.GWE_Node_4; GWROUTEID=.GWE_Node_3",
                       GWB_STALE_ROUTE, "GWE_Node_3"));
    p = pick("GWEROUTEID=.b; GWROUTEID=.a");
    CHECK(p.state == GWB_UNKNOWN_ROUTE && p.name_index == 0);
    /* Once the first name gives a live route nothing can beat it. */
    p = pick("GWROUTEID=.GWE_Node_1; GWROUTEID=.GWE_Node_2; GWROUTEID=.x");
    CHECK(p.state == GWB_LIVE_ROUTE && gwe.lookups == 1);
}

static void test_configured_names(void)
{
    static const gwb_name mine[] = { { "SITEROUTE", 9 } };
    gwb_route_pick p;

    p = pick_with("GWROUTEID=.GWE_Node_1; SITEROUTE=.GWE_Node_2", mine, 1);
    CHECK(p.state == GWB_LIVE_ROUTE
          && strcmp(((member *)p.member)->route, "GWE_Node_2") == 0);
    p = pick_with("GWROUTEID=.GWE_Node_1", mine, 1);
    CHECK(p.state == GWB_NO_ROUTE);
}

/* ---- hostile input: defined results, bounded work, no crash ---- */

static char *repeat(const char *unit, int times, const char *tail)
{
    size_t ulen = strlen(unit), tlen = strlen(tail);
    char *s = malloc(ulen * (size_t)times + tlen + 1), *p = s;
    int i;

    for (i = 0; i < times; i++, p += ulen) {
        memcpy(p, unit, ulen);
    }
    memcpy(p, tail, tlen + 1);
    return s;
}

static void test_hostile(void)
{
    char *s;
    gwb_route_pick p;

    /* A 64 KB value: unknown, and the whole value is what was read. */
    s = repeat("A", 65536, "");
    memcpy(s, "GWROUTEID=.", 11);
    p = pick(s);
    CHECK(p.state == GWB_UNKNOWN_ROUTE && p.route_len == 65536 - 11);
    free(s);

    /* Hundreds of cookies before the route cookie. */
    s = repeat("junk=xxxxxxxx; ", 500, "GWROUTEID=.GWE_Node_2");
    CHECK(picks_member(s, GWB_LIVE_ROUTE, "GWE_Node_2"));
    free(s);

    /* Hundreds of route cookies, none known: each looked up once. */
    s = repeat("GWROUTEID=.zz; ", 300, "GWROUTEID=.GWE_Node_1");
    CHECK(picks_member(s, GWB_LIVE_ROUTE, "GWE_Node_1"));
    CHECK(gwe.lookups == 301);
    free(s);

    /* Separators only, quotes only, equals only. */
    s = repeat(";,", 5000, "");
    CHECK(picks_nothing(s));
    free(s);
    s = repeat("\"", 5000, "");
    CHECK(picks_nothing(s));
    free(s);
    s = repeat("=", 5000, "");
    CHECK(picks_nothing(s));
    free(s);

    /* Control characters and high bytes never match a route. */
    CHECK(pick("GWROUTEID=.GWE_Node_1\x01").state == GWB_UNKNOWN_ROUTE);
    CHECK(pick("GWROUTEID=.GWE_\x7fNode_1").state == GWB_UNKNOWN_ROUTE);
    CHECK(pick("GWROUTEID=.GWE_Node_1\xff").state == GWB_UNKNOWN_ROUTE);
    CHECK(pick("GWROUTEID=\r\n.GWE_Node_1").state == GWB_UNKNOWN_ROUTE);
    CHECK(picks_nothing("GW\x01ROUTEID=.GWE_Node_1"));
    CHECK(picks_member("\x01\x02=\x03; GWROUTEID=.GWE_Node_1", GWB_LIVE_ROUTE,
                       "GWE_Node_1"));
    /* Quotes in odd places. */
    CHECK(pick("GWROUTEID=\"\".GWE_Node_1").state == GWB_UNKNOWN_ROUTE);
    CHECK(pick("GWROUTEID=\"\"\"").state == GWB_UNKNOWN_ROUTE);
    CHECK(picks_nothing("\"GWROUTEID\"=.GWE_Node_1"));
}

int main(void)
{
    test_next_cookie();
    test_route_of_value();
    test_single_cookie();
    test_names_match_exactly();
    test_routes_match_exactly();
    test_empty_values();
    test_several_route_cookies();
    test_configured_names();
    test_hostile();
    printf("unit: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
