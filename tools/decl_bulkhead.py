"""Declared binding of the bulkhead, its _Ready awaitable and the asyncio waiters
(csrc/python/bulkhead.c, wait.c; the ring queue's is tools/decl_queue.py): loaded
by binding_decl.py beside the other areas."""
from binding_decl import M, P, Prop, Type


def at(p, member):
    """p, its field reached through `member` of the binding's argument struct
    (the core config embedded in it): offsetof(config, member)."""
    p.at = member
    return p


AWAITABLE_SELF = "Awaitable[Self]"
STAT = "PyLong_FromLongLong(bh_stats_of(o).%s)"  # a counter of the bulkhead's core
EXIT = "exc_type: Any, exc: Any, tb: Any, /"

# Releases a Bulkhead's slot, then the value of a release()-like method.
RELEASED = "prs_py_bulkhead_release_at(self, prs_monotonic_ns()) < 0 ? NULL : %s"

BULKHEAD = Type(
    "Bulkhead", "bulkhead", "bh", config="bh_args", obj="bh_obj",
    init="bh_args_init", check="bh_args_check",
    flags=("BASETYPE", "HAVE_GC", "IMMUTABLETYPE"),
    offsets={"weaklist": "weakreflist"}, refs=[], kept=["name", "ready"], keep={"name": "name"},
    build=["o->a = cfg;", "o->ready = (PyTypeObject *)Py_NewRef(st->slots[PRS_SLOT_Ready]);",
           "PyObject *shared = v[P_Bulkhead_shared];",
           "rc = shared && shared != Py_None ? prs_py_shm_place(st, shared, o->name, "
           "PRS_PY_PLACE_BULKHEAD, NULL, &cfg.core, &o->core, NULL) "
           ": prs_bulkhead_new(&cfg.core, &o->core);"],
    free="prs_bulkhead_free(o->core); /* no waiter is queued: each holds this object */",
    params=[
        P("name", "STR", "str", nonempty=True),
        at(P("max_concurrent", "COUNT", "int", field="max_concurrent"), "core.max_concurrent"),
        P("max_wait_seconds", "REAL", "float", "30.0", field="max_wait_s", flags=("zero", "inf")),
        P("shared", "OBJECT", "Optional[SharedMemory]", "None", kw=True),
    ],
    doc="At most max_concurrent callers at once; others wait up to\n"
        "max_wait_seconds for a slot, first come, first served. The C core of\n"
        "pyresilience.Bulkhead (which adds execute(), call(), decorators and\n"
        "async with).",
    methods=[
        M("acquire", params=[P("timeout", "OBJECT", "Optional[float]", "...")],
          expr="acquire_for(self, v[0])",
          doc="Take a slot, waiting up to `timeout` seconds (... default: max_wait_seconds;\n"
              "None or math.inf: no limit; 0: fail at once). Waiters are served first\n"
              "come, first served, threads and asyncio tasks alike. The GIL is released\n"
              "while waiting and Ctrl-C interrupts the wait (nothing is taken). Raises\n"
              "BulkheadFullError (counted in rejected_count) when no slot frees in time.\n"
              "Pair every acquire() with one release()."),
        M("try_acquire", returns="bool",
          expr="PyBool_FromLong(prs_py_bulkhead_try_at(self, prs_monotonic_ns()))",
          doc="Take a slot if one is free and nobody is waiting: True, else False (not\n"
              "counted as a rejection)."),
        M("release", expr=RELEASED % "Py_NewRef(Py_None)", doc="Give a slot back (to the oldest waiter, if any). RuntimeError when no "
                         "slot is held."),
        M("__enter__", returns="Self", c="bh_enter",
          doc="acquire() with max_wait_seconds; returns the bulkhead."),
        M("__exit__", EXIT, c="bh_exit", expr=RELEASED % "Py_NewRef(Py_False)", doc="release(); never suppresses the exception."),
        M("__aenter__", returns=AWAITABLE_SELF, c="bh_aenter",  # a slot free now: no coroutine
          expr="prs_py_bulkhead_try_at(self, prs_monotonic_ns()) ? ready_new(o->ready, self) "
               ": PyObject_CallMethod(self, \"_aenter_slow\", NULL)",
          doc="async with: take a slot (waiting up to max_wait_seconds without blocking the\n"
              "event loop; BulkheadFullError when none frees); the bulkhead is the value."),
        M("__aexit__", EXIT, "Awaitable[None]", c="bh_aexit",
          expr=RELEASED % "ready_new(o->ready, Py_None)",
          doc="Release the slot; never suppresses the exception."),
        M("_acquire_async", returns="Union[bool, _AsyncWaiter]", expr="acquire_async(self, v[0], v[1])",
          params=[P("new_waiter", "OBJECT", "Callable[[], Any]"),
                  P("wait", "OBJECT", "Optional[bool]", posonly=True)],
          doc="Internal (asyncio form): True if a slot was taken, False if none and\n"
              "wait is false (None: max_wait_seconds is 0) - a rejection - else a\n"
              "queued waiter whose .future is woken when a slot is handed to it."),
        M("_full_error", returns="Exception",
          doc="Internal: a new BulkheadFullError for this bulkhead."),
        M("_after_fork_child",
          doc="Internal: call in a child process right after fork, with one thread\n"
              "running (pyresilience.bulkhead's os.register_at_fork hook does): a new\n"
              "lock; the parent's threads leave the queue and a slot handed to one of\n"
              "them comes back. asyncio waiters stay queued."),
        M("_stats", returns="tuple[Any, ...]",
          doc="Internal: a snapshot of every counter (BulkheadMetrics' fields after name)."),
        M("_reap", returns="int", expr="PyLong_FromLong(prs_bulkhead_reap(o->core))",
          doc="Internal: free now the permits held by dead processes (shared): how many."),
    ],
    props=[
        Prop("name", "str", "The bulkhead's name.", member="name"),
        Prop("max_concurrent", "int", "Slots in the bulkhead.",
             expr="PyLong_FromLongLong(prs_bulkhead_max_concurrent(o->core))"),
        Prop("shared", "bool", "True when its permits live in a SharedMemory region.",
             expr="PyBool_FromLong(prs_bulkhead_shared(o->core))"),
        Prop("max_wait_seconds", "float", "Default wait for a slot, in seconds.",
             expr="PyFloat_FromDouble(o->a.max_wait_s)"),
        Prop("active_count", "int", "Slots held now.", expr=STAT % "active"),
        Prop("available", "int", "Slots free now (max_concurrent - active_count).",
             expr=STAT % "available"),
        Prop("waiting_count", "int", "Callers waiting for a slot now.", expr=STAT % "waiting"),
        Prop("rejected_count", "int", "Calls refused because no slot freed in time.",
             expr=STAT % "rejected_total"),
    ])

ASYNC_WAITER = Type(
    "_AsyncWaiter", "wait", "waiter", obj="prs_py_waiter",
    flags=("HAVE_GC", "IMMUTABLETYPE", "DISALLOW_INSTANTIATION"),
    refs=["future", "wake"], kept=["owner"], free="waiter_free(o);",
    doc="A queued asyncio waiter of a Bulkhead or queue (internal; made by them).",
    methods=[M("finish", returns="Any", expr="finish(o, v[0])",
               params=[P("cancel", "OBJECT", "bool", "False", posonly=True)],
               doc="Settle the waiter through its owner, once (a later call finds it settled):\n"
                   "cancel=False keeps what it was handed, cancel=True gives it back. The owner's\n"
                   "result: a Bulkhead's True if it holds a slot (False: timed out - a rejection -\n"
                   "or cancelled); a put's True if its item is stored, a get's item (None when\n"
                   "cancelled), a join's True.")],
    props=[Prop("future", "Any", "The asyncio future woken when this waiter is served.",
                member="future")])

READY = Type(
    "_Ready", "bulkhead", "ready", obj="ready_obj",
    flags=("IMMUTABLETYPE", "DISALLOW_INSTANTIATION"),
    slots={"am_await": "PyObject_SelfIter", "iter": "PyObject_SelfIter", "iternext": "ready_next"},
    refs=["value"],
    doc="An awaitable that is already done (internal).",
    methods=[M("send", "value: Any, /", "Any", doc="Finish: raise StopIteration(result)."),
             M("__await__", returns="Any", slot=True), M("__iter__", returns="Any", slot=True),
             M("__next__", returns="Any", slot=True)])

TYPES = [BULKHEAD, ASYNC_WAITER, READY]

# bulkhead.c registers through the generated prs_py_register_bulkhead (its types only).
SETUP = {"bulkhead": None}
