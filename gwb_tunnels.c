/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 *
 * gwb_tunnels.c: the WebSocket tunnels that GWEBalancerWebSocket hands
 * off, counted per member, and closed on purpose in two cases.
 *
 * Why.  httpd 2.4 serves each tunnel with a thread for as long as the page
 * is open.  After a graceful restart a process of the old generation keeps
 * its scoreboard slot until its last tunnel closes, which for a CometD page
 * open all day is never: reloads pile up processes until ServerLimit
 * leaves none for new visitors.  And a member an operator disables keeps
 * the tunnels it has.  So:
 *
 *   GWEBalancerTunnelRecycle GRACE SPREAD: once a process sees that its
 *     generation has ended (the scoreboard's running generation moved on),
 *     it waits GRACE, then closes its tunnels one by one, evenly spread
 *     over SPREAD (see gwb_schedule()), so that thousands of clients do
 *     not reconnect in the same second; its
 *     threads then return, and the MPM lets it exit.
 *   GWEBalancerTunnelEvict GRACE SPREAD: a tunnel whose member has been
 *     unusable for GRACE (stopped, disabled, failing its health check, or
 *     in error within its retry= interval, as a request would find it; a
 *     draining member is usable: drain keeps the sessions it has) is
 *     closed, the member's tunnels of the process spread over SPREAD.
 *
 * CometD reconnects at once with its cookie: through the new generation to
 * the same node, or by the routing rules to a live one.
 *
 * How.  The handoff marks the request (gwb_tunnel_begin()).  A proxy
 * scheme_handler hook that runs before every tunnelling module's and
 * declines sees the member mod_proxy_balancer chose, at every attempt (a
 * failover retry moves the tunnel), whichever module tunnels next
 * (mod_proxy_http or mod_proxy_wstunnel).  When a directive is on, the
 * tunnel is listed with its visitor's socket in this process's list, under
 * one mutex taken twice per tunnel (listed; unlisted by a cleanup of the
 * request pool), never per message; a watcher thread per process looks at
 * the list five times a second and logs one line per batch it closes.
 * Closing is apr_socket_shutdown() of the visitor's socket, never close():
 * the descriptor belongs to the thread serving the tunnel, and could be
 * reused.  First its read side: the tunnel's poll loop reads EOF and ends
 * (mod_proxy_wstunnel before 2.4.47), or passes the EOF on to the node,
 * which closes, and then ends (ap_proxy_tunnel_run()); the visitor gets
 * what the node still sent, then a FIN, and the request ends as if the
 * visitor had left.  Shutting both sides at once would make httpd log an
 * error (EPIPE) for every tunnel the node still wrote to.  A tunnel still
 * open GWB_CLOSE_LINGER later (its node ignores the EOF) gets its write
 * side shut down too, so that its visitor reconnects at once.  No
 * WebSocket close frame: writing one from the watcher would race the
 * tunnel's own writes; CometD reconnects on any close.
 *
 * Counting.  Open tunnels and closed ones per member live in a shared
 * memory segment made when httpd starts and kept across restarts
 * (ap_retained_data), since recycling happens after a restart and the old
 * generations' tunnels are open tunnels too.  A row per member, named by
 * its balancer and route, so that every generation counts in the same row.
 * Open tunnels are counted per process, in a cell the process claims when
 * it starts; a reader adds up the cells of live processes, so that a
 * process killed with tunnels open (a crash, a hard restart) leaves none
 * counted.
 */

#include <errno.h>
#include <signal.h>

#include "ap_mpm.h"
#include "http_core.h"
#include "scoreboard.h"
#include "apr_atomic.h"
#include "apr_shm.h"
#include "apr_strings.h"
#include "apr_thread_cond.h"
#include "apr_thread_mutex.h"
#include "apr_thread_proc.h"

#include "mod_gwe_balancer.h"

APLOG_USE_MODULE(gwe_balancer);

const char *const gwb_close_reason_names[GWB_N_CLOSE_REASONS] = {
    "recycle", "evict"
};

/* Members of WebSocket balancers counted, over all restarts: GWE clusters
 * have a handful of nodes. */
#define GWB_TUNNEL_ROWS 256
/* How often the watcher looks while it closes tunnels or a member is
 * unusable: the grain of the spread. */
#define GWB_WATCH_INTERVAL apr_time_from_msec(200)
/* How often it looks otherwise: the most an eviction or a recycle starts
 * late.  Every look wakes a thread in every process (128 of them for
 * 24,000 visitors), which costs more than the look. */
#define GWB_WATCH_IDLE_INTERVAL apr_time_from_sec(1)
/* How long a closing tunnel may take to end by itself (see above). */
#define GWB_CLOSE_LINGER apr_time_from_sec(2)
/* Batches the watcher logs per look; more wait for the next look. */
#define GWB_MAX_BATCHES 16
#define GWB_RETAINED_KEY "mod_gwe_balancer-tunnels"

/* ------------------------------------------------------------------------
 * The book: rows and cells in shared memory, kept across restarts.
 * ------------------------------------------------------------------------ */

typedef struct {
    char balancer[PROXY_BALANCER_MAX_NAME_SIZE];    /* "gwe-ws" */
    char member[PROXY_WORKER_MAX_NAME_SIZE];        /* route, else URL */
    apr_uint64_t closed[GWB_N_CLOSE_REASONS];
} gwb_tunnel_row;

/* One process's open tunnels, per row. */
typedef struct {
    apr_uint32_t pid;           /* 0: free */
    apr_uint32_t open[GWB_TUNNEL_ROWS];
} gwb_tunnel_cell;

typedef struct {
    apr_uint32_t rows;          /* in use; only the parent adds rows */
    apr_uint32_t cells;
    gwb_tunnel_row row[GWB_TUNNEL_ROWS];
    gwb_tunnel_cell cell[1];    /* [cells] */
} gwb_tunnel_book;

typedef struct {
    gwb_tunnel_book *book;
} gwb_tunnel_retained;

static gwb_tunnel_book *gwb_book;       /* set by the parent at each start */
static gwb_tunnel_cell *gwb_my_cell;    /* this process's, or NULL */

/* Processes alive at once: in the worker MPM a process of an old
 * generation may share its scoreboard slot with a new one, so there can be
 * more than ServerLimit. */
static apr_uint32_t gwb_cells_needed(void)
{
    int daemons = 0;

    ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &daemons);
    return 2 * (apr_uint32_t)(daemons > 0 ? daemons : 1) + 16;
}

/* Made once, in the process pool, which lives as long as httpd does; the
 * children of every generation inherit it. */
static apr_status_t gwb_book_create(server_rec *s, gwb_tunnel_book **book)
{
    gwb_tunnel_retained *kept = ap_retained_data_get(GWB_RETAINED_KEY);
    apr_uint32_t cells = gwb_cells_needed();
    apr_size_t size = APR_OFFSETOF(gwb_tunnel_book, cell)
                      + cells * sizeof(gwb_tunnel_cell);
    apr_shm_t *shm;
    apr_status_t rv;

    if (!kept) {
        kept = ap_retained_data_create(GWB_RETAINED_KEY, sizeof(*kept));
    }
    if (!kept->book) {
        rv = apr_shm_create(&shm, size, NULL, s->process->pool);
        if (rv != APR_SUCCESS) {
            return rv;
        }
        kept->book = apr_shm_baseaddr_get(shm);
        memset(kept->book, 0, size);
        kept->book->cells = cells;
    }
    *book = kept->book;
    return APR_SUCCESS;
}

/* The row of a member, made if it is new; -1 when the book is full. */
static int gwb_book_row(gwb_tunnel_book *book, const char *balancer,
                        const char *member)
{
    apr_uint32_t i, rows = apr_atomic_read32(&book->rows);

    for (i = 0; i < rows; i++) {
        if (strcmp(book->row[i].balancer, balancer) == 0
            && strcmp(book->row[i].member, member) == 0) {
            return (int)i;
        }
    }
    if (rows == GWB_TUNNEL_ROWS) {
        return -1;
    }
    apr_cpystrn(book->row[rows].balancer, balancer,
                sizeof(book->row[rows].balancer));
    apr_cpystrn(book->row[rows].member, member,
                sizeof(book->row[rows].member));
    /* Readers in running children see the row once it is complete. */
    apr_atomic_set32(&book->rows, rows + 1);
    return (int)rows;
}

static const char *gwb_member_label(const proxy_worker *w)
{
    return *w->s->route ? w->s->route : w->s->name;
}

static void gwb_assign_rows(gwb_tunnel_book *book, gwb_balancer *rec,
                            server_rec *s, apr_pool_t *pconf)
{
    const apr_array_header_t *workers = rec->balancer->workers;
    int i;

    rec->tunnel_rows = apr_palloc(pconf, (workers->nelts + 1) * sizeof(int));
    rec->tunnel_row_count = workers->nelts;
    for (i = 0; i < workers->nelts; i++) {
        rec->tunnel_rows[i] = gwb_book_row(
            book, gwb_short_name(rec->balancer),
            gwb_member_label(APR_ARRAY_IDX(workers, i, proxy_worker *)));
        if (rec->tunnel_rows[i] < 0) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                         "GWB0111: %s: no room left to count the tunnels "
                         "of member %s (%d members counted since httpd "
                         "started); restart httpd (stop, start) to "
                         "count afresh", rec->balancer->s->name,
                         gwb_member_label(APR_ARRAY_IDX(workers, i,
                                                        proxy_worker *)),
                         GWB_TUNNEL_ROWS);
        }
    }
}

/* Gives every WebSocket balancer named by a GWEBalancerWebSocket its
 * rows (gwb_link_handoffs() has marked them). */
apr_status_t gwb_tunnels_post_config(server_rec *main_s, apr_pool_t *pconf)
{
    const apr_array_header_t *all = gwb_all_balancers();
    apr_status_t rv;
    int i;

    if ((rv = gwb_book_create(main_s, &gwb_book)) != APR_SUCCESS) {
        gwb_book = NULL;
        return rv;
    }
    for (i = 0; all && i < all->nelts; i++) {
        gwb_balancer *rec = APR_ARRAY_IDX(all, i, gwb_balancer *);

        if (rec->takes_websockets) {
            gwb_assign_rows(gwb_book, rec, main_s, pconf);
        }
    }
    return APR_SUCCESS;
}

static int gwb_pid_alive(apr_uint32_t pid)
{
    return pid && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

static int gwb_cell_claim(gwb_tunnel_cell *cell, apr_uint32_t old,
                          apr_uint32_t me)
{
    if (apr_atomic_cas32(&cell->pid, me, old) != old) {
        return 0;
    }
    memset(cell->open, 0, sizeof(cell->open));
    return 1;
}

/* A cell left by a process that had this pid, else a free one, else one
 * of a process that died without freeing its own. */
static gwb_tunnel_cell *gwb_claim_cell(gwb_tunnel_book *book)
{
    apr_uint32_t me = (apr_uint32_t)getpid(), i;
    int pass;

    for (pass = 0; pass < 3; pass++) {
        for (i = 0; i < book->cells; i++) {
            gwb_tunnel_cell *cell = &book->cell[i];
            apr_uint32_t pid = apr_atomic_read32(&cell->pid);

            if ((pass == 0 && pid == me)
                || (pass == 1 && pid == 0)
                || (pass == 2 && !gwb_pid_alive(pid))) {
                if (gwb_cell_claim(cell, pid, me)) {
                    return cell;
                }
            }
        }
    }
    return NULL;
}

static apr_status_t gwb_free_cell(void *data)
{
    gwb_tunnel_cell *cell = gwb_my_cell;

    /* Whatever the process still counts as it ends counts nowhere. */
    gwb_my_cell = NULL;
    if (cell) {
        memset(cell->open, 0, sizeof(cell->open));
        apr_atomic_set32(&cell->pid, 0);
    }
    return APR_SUCCESS;
}

static void gwb_count_open(int row, int delta)
{
    gwb_tunnel_cell *cell = gwb_my_cell;

    if (!cell || row < 0) {
        return;
    }
    if (delta > 0) {
        apr_atomic_inc32(&cell->open[row]);
    }
    else {
        apr_atomic_dec32(&cell->open[row]);
    }
}

int gwb_tunnel_counts(apr_pool_t *p, gwb_tunnel_count **counts)
{
    gwb_tunnel_book *book = gwb_book;
    gwb_tunnel_count *c;
    apr_uint32_t rows, i, r;
    int k;

    if (!book || !(rows = apr_atomic_read32(&book->rows))) {
        return 0;
    }
    c = apr_pcalloc(p, rows * sizeof(*c));
    for (r = 0; r < rows; r++) {
        c[r].balancer = book->row[r].balancer;
        c[r].member = book->row[r].member;
        for (k = 0; k < GWB_N_CLOSE_REASONS; k++) {
            c[r].closed[k] = gwb_counter_read(&book->row[r].closed[k]);
        }
    }
    for (i = 0; i < book->cells; i++) {
        const gwb_tunnel_cell *cell = &book->cell[i];

        if (!gwb_pid_alive(apr_atomic_read32((apr_uint32_t *)&cell->pid))) {
            continue;
        }
        for (r = 0; r < rows; r++) {
            apr_int32_t open = (apr_int32_t)apr_atomic_read32(
                (apr_uint32_t *)&cell->open[r]);

            if (open > 0) {
                c[r].open += (apr_uint64_t)open;
            }
        }
    }
    *counts = c;
    return (int)rows;
}

/* ------------------------------------------------------------------------
 * The tunnels of this process.
 * ------------------------------------------------------------------------ */

typedef struct gwb_tunnel gwb_tunnel;
struct gwb_tunnel {
    gwb_tunnel *prev, *next;    /* in gwb_watch.list, while listed */
    gwb_balancer *rec;          /* the WebSocket balancer's record */
    proxy_worker *worker;       /* the member; NULL until chosen */
    int row;                    /* in the book; -1: not counted */
    apr_socket_t *sock;         /* the visitor's; NULL: not ours to close */
    int listed;
    /* The watcher's, under gwb_watch.lock: */
    apr_time_t unusable_since;  /* when its member was seen unusable */
    apr_time_t close_at;        /* 0: not scheduled */
    gwb_close_reason reason;
    int closed;                 /* 1: read side shut, 2: both */
};

/* The watcher and what it watches; lock is NULL when no directive is on
 * (tunnels are then only counted). */
static struct {
    apr_thread_mutex_t *lock;
    apr_thread_cond_t *wake;
    gwb_tunnel list;            /* the ring's sentinel */
    apr_thread_t *thread;
    int stopping;
    gwb_tunnel_policy recycle;
    gwb_tunnel_policy evict;
    int generation;             /* this process's */
    apr_time_t ended_at;        /* when it saw its generation end, or 0 */
    int evicting;               /* a member was unusable at the last look */
    apr_time_t closing_until;   /* every close is due by then; 0: none */
} gwb_watch;

#define GWB_EACH_TUNNEL(t) \
    for ((t) = gwb_watch.list.next; (t) != &gwb_watch.list; (t) = (t)->next)

void gwb_tunnel_begin(request_rec *r, const gwb_ws_handoff *handoff)
{
    gwb_tunnel *t;

    if (!handoff->ws) {
        return;
    }
    t = apr_pcalloc(r->pool, sizeof(*t));
    t->rec = handoff->ws;
    t->row = -1;
    ap_set_module_config(r->request_config, &gwe_balancer_module, t);
}

/* The member's row, by its place among the balancer's members (those
 * balancer-manager adds at run time have none). */
static int gwb_row_of(const gwb_balancer *rec, const proxy_worker *worker)
{
    int i;

    for (i = 0; i < rec->tunnel_row_count; i++) {
        if (APR_ARRAY_IDX(rec->balancer->workers, i, proxy_worker *)
            == worker) {
            return rec->tunnel_rows[i];
        }
    }
    return -1;
}

/* The socket to shut down to end the tunnel.  Not that of an HTTP/2
 * stream (H2WebSockets): it carries the visitor's other streams too. */
static apr_socket_t *gwb_closable_socket(conn_rec *c)
{
    return c->master ? NULL : ap_get_conn_socket(c);
}

static apr_status_t gwb_untrack(void *data)
{
    gwb_tunnel *t = data;

    if (t->listed) {
        apr_thread_mutex_lock(gwb_watch.lock);
        t->prev->next = t->next;
        t->next->prev = t->prev;
        t->listed = 0;
        apr_thread_mutex_unlock(gwb_watch.lock);
    }
    gwb_count_open(t->row, -1);
    return APR_SUCCESS;
}

static void gwb_list(gwb_tunnel *t, proxy_worker *worker)
{
    apr_thread_mutex_lock(gwb_watch.lock);
    t->worker = worker;
    if (!t->closed) {
        t->unusable_since = 0;
        t->close_at = 0;
    }
    if (!t->listed) {
        t->next = gwb_watch.list.next;
        t->prev = &gwb_watch.list;
        t->next->prev = t;
        gwb_watch.list.next = t;
        t->listed = 1;
    }
    apr_thread_mutex_unlock(gwb_watch.lock);
}

/* Runs before the tunnelling modules' scheme handlers, at each attempt,
 * and declines: the tunnel is counted for, and listed with, the member
 * this attempt goes to. */
int gwb_track_tunnel(request_rec *r, proxy_worker *worker,
                     proxy_server_conf *conf, char *url,
                     const char *proxyhost, apr_port_t proxyport)
{
    gwb_tunnel *t = ap_get_module_config(r->request_config,
                                         &gwe_balancer_module);

    if (!t || t->worker == worker) {
        return DECLINED;
    }
    if (!t->worker) {
        t->sock = gwb_closable_socket(r->connection);
        apr_pool_cleanup_register(r->pool, t, gwb_untrack,
                                  apr_pool_cleanup_null);
    }
    gwb_count_open(t->row, -1);
    t->row = gwb_row_of(t->rec, worker);
    gwb_count_open(t->row, +1);
    if (gwb_watch.lock && t->sock) {
        gwb_list(t, worker);
    }
    else {
        t->worker = worker;
    }
    return DECLINED;
}

/* ------------------------------------------------------------------------
 * The watcher: a thread per process, when a directive is on.  Everything
 * below runs under gwb_watch.lock, but the logging.
 * ------------------------------------------------------------------------ */

/* What the watcher began to close in one look, for one log line. */
typedef struct {
    gwb_close_reason reason;
    proxy_worker *member;       /* evict: whose tunnels */
    gwb_balancer *rec;
    const char *state;          /* evict: why the member is unusable */
    int count;
} gwb_batch;

static int gwb_generation_ended(void)
{
    return ap_scoreboard_image
           && ap_scoreboard_image->global->running_generation
              != gwb_watch.generation;
}

/* Why the member is unusable, or NULL.  A member in error counts as a
 * request would find it: usable again once its retry= interval is over. */
static const char *gwb_unusable_state(const proxy_worker *w, apr_time_t now)
{
    unsigned int status = w->s->status;

    if ((status & PROXY_WORKER_IN_ERROR)
        && now > w->s->error_time + w->s->retry) {
        status &= ~PROXY_WORKER_IN_ERROR;
    }
    return (status & PROXY_WORKER_NOT_USABLE_BITMAP)
           ? gwb_status_state(status) : NULL;
}

/* Whether t belongs to the batch being made: not yet scheduled, and for
 * an eviction, a tunnel of member that has been unusable for GRACE. */
static int gwb_in_batch(const gwb_tunnel *t, gwb_close_reason reason,
                        const proxy_worker *member, apr_time_t now)
{
    if (!t->sock || t->closed || t->close_at) {
        return 0;
    }
    return reason == GWB_CLOSE_RECYCLE
           || (t->worker == member && t->unusable_since
               && now >= t->unusable_since + gwb_watch.evict.grace);
}

/* Schedules a batch: tunnel i of n closes at now + (i + u) * spread / n,
 * with u random in [0, 1) for the batch: evenly spread in this process.
 * Each process spreads its own tunnels; the random offset spreads those
 * of processes that hold few (one each, under prefork) too, instead of
 * closing them all at once. */
static int gwb_schedule(gwb_close_reason reason, const proxy_worker *member,
                        apr_time_t now, apr_interval_time_t spread)
{
    apr_interval_time_t offset;
    gwb_tunnel *t;
    int n = 0, i = 0;

    GWB_EACH_TUNNEL(t) {
        n += gwb_in_batch(t, reason, member, now);
    }
    if (!n) {
        return 0;
    }
    offset = spread / n * ap_random_pick(0, 999) / 1000;
    GWB_EACH_TUNNEL(t) {
        if (gwb_in_batch(t, reason, member, now)) {
            t->close_at = now + offset + spread * i++ / n;
            t->reason = reason;
        }
    }
    if (now + spread + GWB_CLOSE_LINGER > gwb_watch.closing_until) {
        gwb_watch.closing_until = now + spread + GWB_CLOSE_LINGER;
    }
    return n;
}

static int gwb_plan_recycle(apr_time_t now, gwb_batch *batches, int n)
{
    if (!gwb_watch.ended_at) {
        if (!gwb_generation_ended()) {
            return n;
        }
        gwb_watch.ended_at = now;
    }
    if (n == GWB_MAX_BATCHES
        || now < gwb_watch.ended_at + gwb_watch.recycle.grace) {
        return n;
    }
    batches[n].count = gwb_schedule(GWB_CLOSE_RECYCLE, NULL, now,
                                    gwb_watch.recycle.spread);
    batches[n].reason = GWB_CLOSE_RECYCLE;
    return batches[n].count ? n + 1 : n;
}

/* Notes when each tunnel's member became unusable, and forgets evictions
 * of members usable again. */
static void gwb_note_unusable(apr_time_t now)
{
    gwb_tunnel *t;

    GWB_EACH_TUNNEL(t) {
        if (t->closed) {
            continue;
        }
        if (gwb_unusable_state(t->worker, now)) {
            if (!t->unusable_since) {
                t->unusable_since = now;
            }
        }
        else {
            t->unusable_since = 0;
            if (t->reason == GWB_CLOSE_EVICT) {
                t->close_at = 0;
            }
        }
    }
}

/* Whether a member of any balancer is unusable: a handful of members to
 * look at, where the tunnels are thousands of records scattered over
 * their request pools. */
static int gwb_any_member_unusable(apr_time_t now)
{
    const apr_array_header_t *all = gwb_all_balancers();
    int i, j;

    for (i = 0; all && i < all->nelts; i++) {
        const apr_array_header_t *members =
            APR_ARRAY_IDX(all, i, gwb_balancer *)->balancer->workers;

        for (j = 0; j < members->nelts; j++) {
            if (gwb_unusable_state(APR_ARRAY_IDX(members, j, proxy_worker *),
                                   now)) {
                return 1;
            }
        }
    }
    return 0;
}

static int gwb_plan_evictions(apr_time_t now, gwb_batch *batches, int n)
{
    gwb_tunnel *t;
    int unusable = gwb_any_member_unusable(now);

    /* The tunnels are walked while a member is unusable, and once more
     * after: that look forgets the evictions of members usable again. */
    if (!unusable && !gwb_watch.evicting) {
        return n;
    }
    gwb_watch.evicting = unusable;
    gwb_note_unusable(now);
    GWB_EACH_TUNNEL(t) {
        if (n == GWB_MAX_BATCHES) {
            break;
        }
        if (gwb_in_batch(t, GWB_CLOSE_EVICT, t->worker, now)) {
            batches[n].reason = GWB_CLOSE_EVICT;
            batches[n].member = t->worker;
            batches[n].rec = t->rec;
            batches[n].state = gwb_unusable_state(t->worker, now);
            batches[n].count = gwb_schedule(GWB_CLOSE_EVICT, t->worker, now,
                                            gwb_watch.evict.spread);
            n++;
        }
    }
    return n;
}

static void gwb_close_due(apr_time_t now)
{
    gwb_tunnel *t;

    GWB_EACH_TUNNEL(t) {
        if (!t->close_at || now < t->close_at) {
            continue;
        }
        if (!t->closed) {
            apr_socket_shutdown(t->sock, APR_SHUTDOWN_READ);
            t->closed = 1;
            if (t->row >= 0 && gwb_book) {
                gwb_counter_inc(&gwb_book->row[t->row].closed[t->reason]);
            }
        }
        else if (t->closed == 1 && now >= t->close_at + GWB_CLOSE_LINGER) {
            apr_socket_shutdown(t->sock, APR_SHUTDOWN_WRITE);
            t->closed = 2;
        }
    }
}

static double gwb_seconds(apr_interval_time_t t)
{
    return (double)t / APR_USEC_PER_SEC;
}

static void gwb_log_batch(const gwb_batch *b)
{
    if (b->reason == GWB_CLOSE_RECYCLE) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, ap_server_conf,
                     "GWB0301: a graceful restart ended generation %d: "
                     "closing this process's %d WebSocket tunnels over %g s "
                     "(GWEBalancerTunnelRecycle); their visitors reconnect "
                     "through the new generation", gwb_watch.generation,
                     b->count, gwb_seconds(gwb_watch.recycle.spread));
    }
    else {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, ap_server_conf,
                     "GWB0302: %s: member %s is %s: closing its %d "
                     "WebSocket tunnels in this process over %g s "
                     "(GWEBalancerTunnelEvict); their visitors reconnect "
                     "to a usable member", b->rec->balancer->s->name,
                     gwb_member_label(b->member), b->state, b->count,
                     gwb_seconds(gwb_watch.evict.spread));
    }
}

static void *APR_THREAD_FUNC gwb_watcher(apr_thread_t *thread, void *data)
{
    gwb_batch batches[GWB_MAX_BATCHES];
    int n, i;

    apr_thread_mutex_lock(gwb_watch.lock);
    while (!gwb_watch.stopping) {
        apr_time_t now;

        apr_thread_cond_timedwait(gwb_watch.wake, gwb_watch.lock,
                                  gwb_watch.evicting
                                  || gwb_watch.closing_until
                                  ? GWB_WATCH_INTERVAL
                                  : GWB_WATCH_IDLE_INTERVAL);
        now = apr_time_now();
        n = 0;
        if (gwb_watch.recycle.on) {
            n = gwb_plan_recycle(now, batches, n);
        }
        if (gwb_watch.evict.on) {
            n = gwb_plan_evictions(now, batches, n);
        }
        if (gwb_watch.closing_until) {
            gwb_close_due(now);
            if (now >= gwb_watch.closing_until) {
                gwb_watch.closing_until = 0;
            }
        }
        if (n) {
            apr_thread_mutex_unlock(gwb_watch.lock);
            for (i = 0; i < n; i++) {
                gwb_log_batch(&batches[i]);
            }
            apr_thread_mutex_lock(gwb_watch.lock);
        }
    }
    apr_thread_mutex_unlock(gwb_watch.lock);
    /* A return, not apr_thread_exit(): the thread's pool goes with pchild,
     * and pthread_exit()'s unwinding would leave this frame poisoned for
     * AddressSanitizer (test/asan.sh), which then reports the thread's own
     * exit as a stack-buffer-overflow. */
    return NULL;
}

/* Before the process's pool goes, and with it the thread's. */
static apr_status_t gwb_stop_watcher(void *data)
{
    apr_status_t rv;

    apr_thread_mutex_lock(gwb_watch.lock);
    gwb_watch.stopping = 1;
    apr_thread_cond_signal(gwb_watch.wake);
    apr_thread_mutex_unlock(gwb_watch.lock);
    apr_thread_join(&rv, gwb_watch.thread);
    return APR_SUCCESS;
}

/* The lock and the list live in pconf, which outlives every request pool
 * of the process (their cleanups unlist tunnels), and pchild. */
static void gwb_start_watcher(apr_pool_t *pchild, server_rec *s,
                              const gwb_server_conf *conf)
{
    apr_pool_t *pconf = s->process->pconf;
    apr_status_t rv;

    gwb_watch.recycle = conf->recycle;
    gwb_watch.evict = conf->evict;
    ap_mpm_query(AP_MPMQ_GENERATION, &gwb_watch.generation);
    gwb_watch.list.next = gwb_watch.list.prev = &gwb_watch.list;
    if ((rv = apr_thread_mutex_create(&gwb_watch.lock,
                                      APR_THREAD_MUTEX_DEFAULT, pconf))
        || (rv = apr_thread_cond_create(&gwb_watch.wake, pconf))
        || (rv = apr_thread_create(&gwb_watch.thread, NULL, gwb_watcher,
                                   NULL, pchild))) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "GWB0006: cannot start the tunnel watcher: this "
                     "process will not recycle or evict its WebSocket "
                     "tunnels");
        gwb_watch.lock = NULL;
        return;
    }
    apr_pool_pre_cleanup_register(pchild, NULL, gwb_stop_watcher);
}

void gwb_tunnels_child_init(apr_pool_t *pchild, server_rec *s)
{
    const gwb_server_conf *conf =
        ap_get_module_config(s->module_config, &gwe_balancer_module);

    if (gwb_book) {
        gwb_my_cell = gwb_claim_cell(gwb_book);
        apr_pool_cleanup_register(pchild, NULL, gwb_free_cell,
                                  apr_pool_cleanup_null);
    }
    if (conf->recycle.on || conf->evict.on) {
        gwb_start_watcher(pchild, s, conf);
    }
}
