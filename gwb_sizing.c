/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 *
 * gwb_sizing.c: how many visitors the server is sized for, and whether the
 * running system lets it grow that far.
 *
 * Every GWE visitor holds a connection, and httpd 2.4 holds a thread for
 * every connection in flight (a long-poll until it returns, a WebSocket
 * tunnel for as long as it is open).  So a site sizes the MPM by its
 * visitors, and the MPM's limits follow from that one number by
 * arithmetic, which httpd's configuration language cannot do:
 * GWEBalancerSizing does it, and defines the results as variables for
 * the MPM directives that follow it.
 *
 * Those threads are kernel tasks and their sockets open files, so the
 * kernel (pid_max, threads-max), the service manager (TasksMax, which
 * systemd sets as the cgroup's pids.max) and the process limits (ulimit -u,
 * -n) must allow them.  When one does not, httpd runs fine until the busy
 * hour and then fails to start threads, with nothing but "Resource
 * temporarily unavailable" in the log.  The startup check says so first.
 */

#include "apr_strings.h"
#include "ap_mpm.h"

#include <sys/resource.h>

#include "mod_gwe_balancer.h"

APLOG_USE_MODULE(gwe_balancer);

/* Threads per visitor, as a fraction: one held connection each, and a
 * third more.  Page loads, a long-poll's second connection (its
 * publishes) and reconnects take threads beside the held ones, and a
 * peak above the visitors planned for must still find threads: with a
 * fifth more, 24,000 visitors sized 29,000 threads and 30,000 mixed
 * visitors (a quarter above the plan) timed out waiting for one
 * (bench/README.md, Capacity). */
#define GWB_THREADS_PER_VISITOR_NUM 4
#define GWB_THREADS_PER_VISITOR_DEN 3

/* Two sockets per tunnel (visitor, node) fit in the usual 1024 open files
 * with room for pooled node connections, listeners and logs. */
#define GWB_DEFAULT_THREADS_PER_CHILD 250

/* The worker and event MPMs' compile-time ceilings (MAX_SERVER_LIMIT,
 * MAX_THREAD_LIMIT). */
#define GWB_MPM_MAX_SERVER_LIMIT 20000
#define GWB_MPM_MAX_THREAD_LIMIT 20000

/* Files a process opens besides its tunnels' sockets: listeners, logs,
 * shared memory, the pipe of death, pooled node connections. */
#define GWB_FILES_PER_PROCESS 64

typedef struct {
    int threads_per_child;
    int max_request_workers;
    int server_limit;
    int min_spare_threads;
    int max_spare_threads;
} gwb_mpm_sizes;

static int gwb_round_up(apr_int64_t n, int unit)
{
    return (int)((n + unit - 1) / unit * unit);
}

/* The MPM sizes for visitors: MaxRequestWorkers as above, a whole number
 * of processes; ServerLimit twice the processes it needs, since a reload
 * starts a new generation while each process of the old one keeps its
 * slot until its last WebSocket closes; two processes' worth of spare
 * threads for a surge (the visitors of a failed node reconnecting at
 * once); and no idle trimming at all (MaxSpareThreads as many as
 * MaxRequestWorkers): a process trimmed while it still holds WebSockets
 * or long-polls keeps its slot while new processes take others, and under
 * long-poll churn that filled every ServerLimit slot (AH00288, "scoreboard
 * is full") with threads to spare (bench/README.md, Capacity).  Idle
 * threads cost their touched stack, about 10 KiB each. */
static gwb_mpm_sizes gwb_size_mpm(int visitors, int threads_per_child)
{
    gwb_mpm_sizes m;
    apr_int64_t threads = (apr_int64_t)visitors * GWB_THREADS_PER_VISITOR_NUM
                          / GWB_THREADS_PER_VISITOR_DEN;

    m.threads_per_child = threads_per_child;
    m.max_request_workers = gwb_round_up(threads, threads_per_child);
    m.server_limit = 2 * (m.max_request_workers / threads_per_child);
    m.min_spare_threads = 2 * threads_per_child;
    if (m.min_spare_threads > m.max_request_workers) {
        m.min_spare_threads = m.max_request_workers;
    }
    m.max_spare_threads = m.max_request_workers;
    if (m.max_spare_threads < m.min_spare_threads + threads_per_child) {
        m.max_spare_threads = m.min_spare_threads + threads_per_child;
    }
    return m;
}

static const char *gwb_parse_count(cmd_parms *cmd, const char *what,
                                   const char *arg, int max, int *n)
{
    char *end;
    apr_int64_t v = apr_strtoi64(arg, &end, 10);

    if (*end || end == arg || v < 1 || v > max) {
        return apr_psprintf(cmd->pool, "%s: %s '%s' is not a whole number "
                            "from 1 to %d", cmd->cmd->name, what, arg, max);
    }
    *n = (int)v;
    return NULL;
}

/* Defines a variable as the Define directive does, by calling it: httpd
 * keeps its variables to itself (core.c), and only Define can set one
 * that the lines read after it see. */
static const char *gwb_define(cmd_parms *cmd, const char *name, int value)
{
    module *from = ap_top_module;   /* where the search starts */
    const command_rec *define = ap_find_command_in_modules("Define", &from);

    if (!define) {
        return "GWEBalancerSizing: this httpd has no Define directive";
    }
    return define->AP_TAKE2(cmd, NULL, name,
                            apr_itoa(cmd->pool, value));
}

/* GWEBalancerSizing VISITORS [THREADS_PER_CHILD]: runs while the
 * configuration is read (EXEC_ON_READ), so the variables it defines are
 * there for the MPM directives below it. */
GWB_INTERNAL const char *gwb_set_sizing(cmd_parms *cmd, void *dummy,
                                        const char *visitors_arg,
                                        const char *per_child_arg)
{
    /* ServerLimit is twice the processes, at most the MPM's ceiling. */
    const int max_visitors = (int)((apr_int64_t)GWB_MPM_MAX_SERVER_LIMIT / 2
                                   * GWB_DEFAULT_THREADS_PER_CHILD
                                   * GWB_THREADS_PER_VISITOR_DEN
                                   / GWB_THREADS_PER_VISITOR_NUM);
    int visitors, per_child = GWB_DEFAULT_THREADS_PER_CHILD;
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    gwb_mpm_sizes m;

    if (err
        || (err = gwb_parse_count(cmd, "visitors", visitors_arg,
                                  max_visitors, &visitors))
        || (per_child_arg
            && (err = gwb_parse_count(cmd, "threads per child",
                                      per_child_arg,
                                      GWB_MPM_MAX_THREAD_LIMIT,
                                      &per_child)))) {
        return err;
    }
    m = gwb_size_mpm(visitors, per_child);
    if (m.server_limit > GWB_MPM_MAX_SERVER_LIMIT) {
        return apr_psprintf(cmd->pool, "GWEBalancerSizing: %d visitors at "
                            "%d threads per child need ServerLimit %d, "
                            "above the MPM's %d; give more threads per "
                            "child", visitors, per_child, m.server_limit,
                            GWB_MPM_MAX_SERVER_LIMIT);
    }
    if ((err = gwb_define(cmd, "GWE_THREADS_PER_CHILD", m.threads_per_child))
        || (err = gwb_define(cmd, "GWE_MAX_REQUEST_WORKERS",
                             m.max_request_workers))
        || (err = gwb_define(cmd, "GWE_SERVER_LIMIT", m.server_limit))
        || (err = gwb_define(cmd, "GWE_MIN_SPARE_THREADS",
                             m.min_spare_threads))
        || (err = gwb_define(cmd, "GWE_MAX_SPARE_THREADS",
                             m.max_spare_threads))) {
        return err;
    }
    return NULL;
}

/* ------------------------------------------------------------------------
 * What the running system allows.
 * ------------------------------------------------------------------------ */

/* The first number in file (a /proc or /sys file), or -1: unreadable, or
 * "max". */
static apr_int64_t gwb_read_number(const char *file, apr_pool_t *p)
{
    apr_file_t *f;
    char line[64];
    char *end;
    apr_int64_t v;

    if (apr_file_open(&f, file, APR_FOPEN_READ | APR_FOPEN_BUFFERED,
                      APR_OS_DEFAULT, p)
        != APR_SUCCESS) {
        return -1;
    }
    if (apr_file_gets(line, sizeof(line), f) != APR_SUCCESS) {
        line[0] = '\0';
    }
    apr_file_close(f);
    v = apr_strtoi64(line, &end, 10);
    return end == line ? -1 : v;
}

/* The cgroup this process is in, as /sys/fs/cgroup shows the pids
 * controller's hierarchy: cgroup v1's "N:pids:/path" line, else v2's
 * "0::/path" (one hierarchy for every controller).  NULL: neither. */
static const char *gwb_pids_cgroup(apr_pool_t *p)
{
    apr_file_t *f;
    char line[1024];
    const char *v2 = NULL;

    if (apr_file_open(&f, "/proc/self/cgroup",
                      APR_FOPEN_READ | APR_FOPEN_BUFFERED,
                      APR_OS_DEFAULT, p) != APR_SUCCESS) {
        return NULL;
    }
    while (apr_file_gets(line, sizeof(line), f) == APR_SUCCESS) {
        char *path = strchr(line, ':');
        char *nl = strchr(line, '\n');

        if (nl) {
            *nl = '\0';
        }
        if (!path) {
            continue;
        }
        if (!strncmp(path, ":pids:", 6)) {
            apr_file_close(f);
            return apr_pstrcat(p, "/sys/fs/cgroup/pids", path + 6, NULL);
        }
        if (!strncmp(line, "0::", 3)) {
            v2 = apr_pstrcat(p, "/sys/fs/cgroup", line + 3, NULL);
        }
    }
    apr_file_close(f);
    return v2;
}

/* The tasks this process's cgroup and its ancestors allow (systemd's
 * TasksMax is the service's pids.max; its slice may set one too), or -1:
 * no limit, or no pids controller. */
static apr_int64_t gwb_cgroup_tasks_max(apr_pool_t *p)
{
    char *dir = (char *)gwb_pids_cgroup(p);
    apr_int64_t least = -1;

    while (dir) {
        char *slash;
        apr_int64_t v = gwb_read_number(apr_pstrcat(p, dir, "/pids.max",
                                                    NULL), p);

        if (v >= 0 && (least < 0 || v < least)) {
            least = v;
        }
        slash = strrchr(dir, '/');
        if (!slash || slash == dir || !strcmp(dir, "/sys/fs/cgroup")) {
            break;
        }
        *slash = '\0';
    }
    return least;
}

static apr_int64_t gwb_soft_rlimit(int resource)
{
    struct rlimit rl;

    if (getrlimit(resource, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
        return -1;
    }
    return (apr_int64_t)rl.rlim_cur;
}

static int gwb_mpm_value(int query)
{
    int v = 0;

    return ap_mpm_query(query, &v) == APR_SUCCESS ? v : 0;
}

/* One warning when a limit the system sets is below what the
 * configuration asks for. */
static void gwb_warn_if_below(server_rec *s, const char *tag_and_limit,
                              apr_int64_t limit, apr_int64_t needed,
                              const char *what, const char *fix)
{
    if (limit < 0 || limit >= needed) {
        return;
    }
    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                 "%s is %" APR_INT64_T_FMT ", below the %" APR_INT64_T_FMT
                 " %s this configuration may need; %s", tag_and_limit, limit,
                 needed, what, fix);
}

/* The tasks httpd may run: ServerLimit processes (two generations while a
 * reload overlaps them) of ThreadsPerChild workers, a listener and a
 * main thread each, and the parent. */
GWB_INTERNAL void gwb_check_system_limits(server_rec *s, apr_pool_t *ptemp)
{
    int per_child = gwb_mpm_value(AP_MPMQ_MAX_THREADS);
    int processes = gwb_mpm_value(AP_MPMQ_HARD_LIMIT_DAEMONS);
    apr_int64_t tasks, files;

    if (per_child < 1 || processes < 1) {
        return;
    }
    tasks = (apr_int64_t)processes * (per_child + 2) + 1;
    files = 2 * (apr_int64_t)per_child + GWB_FILES_PER_PROCESS;

    gwb_warn_if_below(s, "GWB0112: kernel.pid_max",
                      gwb_read_number("/proc/sys/kernel/pid_max", ptemp),
                      tasks, "threads", "raise it (sysctl -w kernel.pid_max=4194304, "
                      "and in /etc/sysctl.d/) or lower GWE_MAX_VISITORS");
    gwb_warn_if_below(s, "GWB0113: kernel.threads-max",
                      gwb_read_number("/proc/sys/kernel/threads-max", ptemp),
                      tasks, "threads", "raise it (sysctl -w kernel.threads-max=..., "
                      "and in /etc/sysctl.d/) or lower GWE_MAX_VISITORS");
    gwb_warn_if_below(s, "GWB0114: the cgroup's task limit (systemd "
                      "TasksMax=)", gwb_cgroup_tasks_max(ptemp), tasks,
                      "threads", "raise it (TasksMax=infinity in a drop-in of the "
                      "service, systemctl edit apache2 or httpd) or lower "
                      "GWE_MAX_VISITORS");
    gwb_warn_if_below(s, "GWB0115: the process limit (ulimit -u, systemd "
                      "LimitNPROC=)", gwb_soft_rlimit(RLIMIT_NPROC), tasks,
                      "threads", "raise it for httpd's user (LimitNPROC= in a drop-in "
                      "of the service, or ulimit -u where httpd starts) or "
                      "lower GWE_MAX_VISITORS");
    gwb_warn_if_below(s, "GWB0116: the open-files limit (ulimit -n, "
                      "systemd LimitNOFILE=)", gwb_soft_rlimit(RLIMIT_NOFILE),
                      files, "open files per process", "raise it (LimitNOFILE= in a drop-in of the "
                      "service, or ulimit -n where httpd starts) or lower "
                      "ThreadsPerChild");
}
