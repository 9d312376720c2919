"""A reader for callgrind's output format, for bench/finder_cost.py and
bench/request_profile.py.

Reads one dump (callgrind.out file, format version 1, event Ir) into
functions ("contexts": with --separate-callers=N a function's name carries
its callers, "apr_palloc'apr_pstrmemdup'gwb_note_decision"), their self
cost and their call records (callee, count, inclusive cost, call site).
The questions those scripts ask are answered from those:

  - inclusive(): the inclusive cost of a function, as the sum of the costs
    of the calls made to it from other functions (how callgrind_annotate
    --inclusive=yes counts too, minus its cycle handling, which we do not
    need: none of the functions asked about recurse);
  - self_by_object(), self_by_function(): flat profiles;
  - allocations_under(): every call to an allocator in the call tree below
    a function, with the call site in our module that led to it.

Standard library only.  Format reference: valgrind's
docs/callgrind-format (Callgrind Format Specification).
"""

import collections
import os

# Where memory comes from.  Pool allocations all end in apr_palloc (the
# apr_pstr*/apr_pmemdup/apr_pcalloc helpers, apr_array_push, the growth of
# an apr_table_t, apr_pool_cleanup_register) except apr_pvsprintf (behind
# apr_psprintf), which grows its string in allocator blocks of its own.
# The heap functions are reached when a pool needs a new block.
POOL_ALLOCATORS = frozenset(("apr_palloc", "apr_pcalloc", "apr_pvsprintf"))
HEAP_ALLOCATORS = frozenset(("malloc", "calloc", "realloc", "posix_memalign",
                             "aligned_alloc", "memalign", "valloc"))
ALLOCATORS = POOL_ALLOCATORS | HEAP_ALLOCATORS

# Name-compression namespaces: "fn=(3) name" defines id 3 for both fn= and
# cfn= lines, and so on.
_NAMESPACE = {"ob": "ob", "cob": "ob",
              "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl",
              "fn": "fn", "cfn": "fn"}

Call = collections.namedtuple(
    "Call", "callee count inclusive file line")


class Function:
    """One function context of a dump: key (object, name), self cost, and
    the calls it made."""

    __slots__ = ("key", "self_cost", "calls")

    def __init__(self, key):
        self.key = key
        self.self_cost = 0
        self.calls = []

    @property
    def obj(self):
        return self.key[0]

    @property
    def name(self):
        return self.key[1]

    @property
    def base(self):
        return base_name(self.name)


def base_name(context):
    """The function's own name, without the callers that --separate-callers
    appends ("f'caller'caller2") or the recursion level ("f'2")."""
    return context.split("'", 1)[0]


def short_object(path):
    """mod_proxy.so, libapr-1.so.0.7.2, apache2 ... from an ob= path."""
    return os.path.basename(path) if path else "???"


class Dump:
    """One parsed callgrind dump."""

    def __init__(self, path):
        self.path = path
        self.functions = {}
        self.summary = 0
        self.header = {}
        self._parse()

    # -- parsing --------------------------------------------------------------

    def _function(self, key):
        fn = self.functions.get(key)
        if fn is None:
            fn = self.functions[key] = Function(key)
        return fn

    def _parse(self):
        names = {"ob": {}, "fl": {}, "fn": {}}

        def resolve(kind, value):
            # "(id) name" defines, "(id)" refers, a bare name is itself.
            table = names[_NAMESPACE[kind]]
            if value.startswith("("):
                close = value.index(")")
                ident, rest = value[1:close], value[close + 1:].strip()
                if rest:
                    table[ident] = rest
                    return rest
                return table[ident]
            return value

        obj = source = fn = None     # current object, file, function
        line = 0                     # last position (relative positions)
        callee_obj = callee_name = None
        pending_call = None          # (callee key, count) of a calls= line

        with open(self.path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                text = raw.rstrip("\n")
                if not text or text.startswith("#"):
                    continue
                first = text[0]
                if first.isdigit() or first in "+-*":
                    fields = text.split()
                    line = _position(fields[0], line)
                    cost = int(fields[1]) if len(fields) > 1 else 0
                    if pending_call:
                        callee, count = pending_call
                        fn.calls.append(Call(callee, count, cost,
                                             source, line))
                        pending_call = None
                    else:
                        fn.self_cost += cost
                    continue
                key, _, value = text.partition("=")
                if key in ("ob", "fl", "fi", "fe", "fn", "cob", "cfi", "cfl",
                           "cfn"):
                    name = resolve(key, value)
                    if key == "ob":
                        obj = name
                    elif key == "fl":
                        source = name
                    elif key in ("fi", "fe"):
                        source = name     # inlined code: its own file
                    elif key == "fn":
                        fn = self._function((obj, name))
                        callee_obj = None
                    elif key == "cob":
                        callee_obj = name
                    elif key == "cfn":
                        callee_name = name
                    # cfi/cfl: the callee's file, not needed
                elif key == "calls":
                    count = int(value.split()[0])
                    pending_call = ((callee_obj or obj, callee_name), count)
                    callee_obj = None
                elif ":" in text:
                    name, _, rest = text.partition(":")
                    self.header[name.strip()] = rest.strip()
                    if name == "summary" or name == "totals":
                        self.summary = int(rest.split()[0])

    # -- questions ------------------------------------------------------------

    def total(self):
        """All instructions of the dump."""
        return self.summary or sum(f.self_cost
                                   for f in self.functions.values())

    def inclusive(self, base):
        """(calls, inclusive Ir) of the function named base: every call to
        it from another function, summed over all contexts."""
        calls = cost = 0
        for fn in self.functions.values():
            if fn.base == base:
                continue
            for call in fn.calls:
                if base_name(call.callee[1]) == base:
                    calls += call.count
                    cost += call.inclusive
        return calls, cost

    def callees(self, base):
        """{(callee object, callee base): [calls, inclusive]} of the calls
        that the function named base makes."""
        out = collections.defaultdict(lambda: [0, 0])
        for fn in self.functions.values():
            if fn.base != base:
                continue
            for call in fn.calls:
                entry = out[(call.callee[0], base_name(call.callee[1]))]
                entry[0] += call.count
                entry[1] += call.inclusive
        return dict(out)

    def self_by_object(self):
        out = collections.Counter()
        for fn in self.functions.values():
            out[short_object(fn.obj)] += fn.self_cost
        return out

    def self_by_function(self):
        out = collections.Counter()
        for fn in self.functions.values():
            out[(short_object(fn.obj), fn.base)] += fn.self_cost
        return out

    def self_cost_of(self, base):
        """Self Ir of the function named base, over all its contexts."""
        return sum(fn.self_cost for fn in self.functions.values()
                   if fn.base == base)

    def allocations_under(self, base, module_object):
        """Every allocator call in the call tree below the function named
        base, as a Counter of (site, api, via, allocator, nested) -> calls.

        site: where our module's code (module_object, built with -g) made
        the call that led to the allocation, "file:line (function)"; or,
        when no frame of ours is on the way, "object:function" of the last
        frame outside libapr/libc.  api: what that site called
        (apr_pstrmemdup, apr_table_setn, "mod_proxy.so:0x..." for a
        stripped function).  via: the function that called the allocator.
        nested: the allocator was called by another allocator (malloc
        behind apr_palloc when the pool needs a new block).

        Needs --separate-callers deep enough that a context below base
        names base among its callers: otherwise contexts of different call
        paths are merged, and a walk through them would count foreign
        calls.  Those are skipped, and left in self.truncated."""
        found = collections.Counter()
        seen = set()
        self.truncated = set()

        def walk(fn, site, api, ours, in_allocator):
            for call in fn.calls:
                callee_base = base_name(call.callee[1])
                here_site, here_api, here_ours = site, api, ours
                if fn.obj == module_object:
                    here_site = "%s:%d (%s)" % (
                        os.path.basename(call.file or "?"), call.line,
                        fn.base)
                    here_api, here_ours = label(call.callee), True
                elif not ours and not _is_library(fn.obj):
                    here_site = label(fn.key, with_object=True)
                    here_api = label(call.callee)
                if callee_base in ALLOCATORS:
                    found[(here_site, here_api, label(fn.key), callee_base,
                           in_allocator)] += call.count
                if call.callee in seen:
                    continue        # a context's calls count once
                seen.add(call.callee)
                if base not in call.callee[1].split("'"):
                    self.truncated.add(call.callee[1])
                    continue
                callee = self.functions.get(call.callee)
                if callee is not None:
                    walk(callee, here_site, here_api, here_ours,
                         in_allocator or callee_base in ALLOCATORS)

        for fn in list(self.functions.values()):
            if fn.base == base:
                walk(fn, None, None, False, False)
        return found


def label(key, with_object=False):
    """A function for people: its name (after its object's, if asked), or
    object:address when its object is stripped of it."""
    obj, name = key
    name = base_name(name)
    if name.startswith("0x"):
        return "%s:0x%x" % (short_object(obj), int(name, 16))
    return "%s:%s" % (short_object(obj), name) if with_object else name


def _is_library(obj):
    """Code that only serves others: APR, libc, the dynamic linker."""
    name = short_object(obj)
    return name.startswith(("libapr", "libc.", "libc-", "ld-linux",
                            "libpthread", "libcrypt", "libuuid"))


def _position(field, last):
    """A (compressed) line position: absolute, +N / -N relative to the
    last, or * for the same."""
    if field == "*":
        return last
    if field[0] in "+-":
        return last + int(field)
    return int(field)
