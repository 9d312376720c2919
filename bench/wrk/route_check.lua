-- wrk script: counts the answers that did not come from the node the
-- cookie names (header X-GWE-Node), and prints one JSON line with the run's
-- numbers for http_bench.py.  Usage: wrk ... -s route_check.lua URL -- NODE
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    expected = args[1]
    answered = 0
    misrouted = 0
end

function response(status, headers, body)
    answered = answered + 1
    -- Header names are case-insensitive: HAProxy sends them in lower case.
    if (headers["X-GWE-Node"] or headers["x-gwe-node"]) ~= expected then
        misrouted = misrouted + 1
    end
end

function done(summary, latency, requests)
    local total_answered, total_misrouted = 0, 0
    for _, thread in ipairs(threads) do
        total_answered = total_answered + thread:get("answered")
        total_misrouted = total_misrouted + thread:get("misrouted")
    end
    local e = summary.errors
    io.write(string.format(
        'WRKJSON {"requests": %d, "duration_us": %d, "connect_errors": %d, ' ..
        '"read_errors": %d, "write_errors": %d, "status_errors": %d, ' ..
        '"timeouts": %d, "p50_us": %d, "p99_us": %d, "answered": %d, ' ..
        '"misrouted": %d}\n',
        summary.requests, summary.duration, e.connect, e.read, e.write,
        e.status, e.timeout, latency:percentile(50), latency:percentile(99),
        total_answered, total_misrouted))
end
