"""Declared binding of the bulkhead and the ring queue (csrc/python/bulkhead.c,
queue.c): loaded by binding_decl.py beside the other areas."""
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
# An owner's _finish*(waiter, cancel): settles an asyncio waiter (wait.c).
FINISH = "prs_py_cond_finish(self, args, nargs)"

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
        M("__aenter__", returns=AWAITABLE_SELF, c="bh_aenter",
          doc="async with: take a slot (waiting up to max_wait_seconds without blocking the\n"
              "event loop; BulkheadFullError when none frees); the bulkhead is the value."),
        M("__aexit__", EXIT, "Awaitable[None]", c="bh_aexit",
          expr=RELEASED % "prs_py_ready_new(o->ready, Py_None)",
          doc="Release the slot; never suppresses the exception."),
        M("_acquire_async", "get_running_loop: Callable[[], Any], wait: Optional[bool], /",
          "Union[bool, _AsyncWaiter]",
          doc="Internal (asyncio form): True if a slot was taken, False if none and\n"
              "wait is false (None: max_wait_seconds is 0) - a rejection - else a\n"
              "queued waiter whose .future is woken when a slot is handed to it."),
        M("_finish", "waiter: _AsyncWaiter, cancel: bool, /", "bool", expr=FINISH,
          doc="Internal: settle a waiter. cancel=False: True if it holds a slot, False if\n"
              "it timed out (a rejection). cancel=True: a slot it was handed goes back."),
        M("_full_error", returns="Exception",
          doc="Internal: a new BulkheadFullError for this bulkhead."),
        M("_after_fork_child",
          doc="Internal: call in a child process right after fork, with one thread\n"
              "running (pyresilience.bulkhead's os.register_at_fork hook does): a new\n"
              "lock; the parent's threads leave the queue and a slot handed to one of\n"
              "them comes back. asyncio waiters stay queued."),
        M("_stats", returns="Dict[str, Any]", doc="Internal: a dict snapshot of every counter."),
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

WAITER = "waiter: _AsyncWaiter, cancel: bool, /"
OPT_MARK = ("o->a.ring.watermarks ? PyFloat_FromDouble(o->a.ring.%s_watermark) : "
            "Py_NewRef(Py_None)")
BLOCK = P("block", "BOOL", "bool", "True", field="block")
LOOP = "get_running_loop: Callable[[], Any], /"

# A watermark: a fraction the core checks (None: not given, NaN in the config).
MARK = ("zero", "neg", "inf", "none")
# queue.Queue's name of max_size (the same field; at most one of the two).
MAXSIZE = at(P("maxsize", "COUNT", "Optional[int]", "None", field="capacity", flags=("none",),
               kw=True), "given")

RING_QUEUE = Type(
    "RingQueue", "queue", "q", config="q_args", obj="q_obj",
    init="q_args_init", check="q_args_check",
    flags=("BASETYPE", "HAVE_GC", "IMMUTABLETYPE"),
    slots={"len": None}, offsets={"weaklist": "weakreflist"}, refs=["on_high", "on_low"],
    free="prs_ring_free(o->core); /* no waiter is queued: each holds this object */",
    params=[
        at(P("max_size", "COUNT", "Optional[int]", "0", field="capacity", flags=("none",)),
           "given"),
        at(P("strategy", "ENUM", "Any", "'block'", field="strategy",  # a str, or the str enum
             choices=("block", "drop_oldest", "drop_newest", "error")), "ring.strategy"),
        P("block_timeout", "REAL", "Optional[float]", "30.0", field="block_timeout_s",
          flags=("zero", "inf", "none_inf")),
        at(P("high_watermark", "REAL", "Optional[float]", "None", field="high_watermark",
             flags=MARK), "ring.high_watermark"),
        at(P("low_watermark", "REAL", "Optional[float]", "None", field="low_watermark",
             flags=MARK), "ring.low_watermark"),
        P("on_high_watermark", "CALLABLE", "Optional[Callable[[], Any]]", "None", flags=("none",)),
        P("on_low_watermark", "CALLABLE", "Optional[Callable[[], Any]]", "None", flags=("none",)),
        MAXSIZE,
    ],
    doc="A bounded FIFO on a C ring with a backpressure strategy: the C core of\n"
        "pyresilience.BoundedQueue and pyresilience.BackpressureQueue.",
    methods=[
        M("put", returns="bool", config="q_wait_args",
          params=[P("item", "OBJECT", "Any"), BLOCK,
                  P("timeout", "TIMEOUT", "Optional[float]", "None", field="timeout_ns",
                    flags=("none",))],
          doc="Put an item (queue.Queue.put): True if it is queued, False if it was\n"
              "dropped. When full: BLOCK waits up to `timeout` seconds (None:\n"
              "block_timeout, itself None for no limit) for room, then raises\n"
              "QueueFullError (a queue.Full; the item is counted dropped); block=False\n"
              "raises it at once. DROP_OLDEST evicts the oldest item (True); DROP_NEWEST\n"
              "drops this one (False); ERROR raises QueueFullError. QueueClosedError\n"
              "after close(). The GIL is released while waiting and Ctrl-C interrupts\n"
              "the wait."),
        M("put_nowait", "item: Any, /", "bool", expr="Q_CALL(PUT, arg, 0, NULL)",
          doc="put(item, block=False): a full BLOCK queue raises QueueFullError (a\n"
              "queue.Full and an asyncio.QueueFull; the item is counted dropped)."),
        M("get", returns="Any", config="q_wait_args",
          params=[BLOCK, P("timeout", "TIMEOUT", "Optional[float]", "None", field="timeout_ns")],
          doc="Remove and return the oldest item (queue.Queue.get), waiting up to\n"
              "`timeout` seconds (None: no limit; block=False: not at all) for one:\n"
              "QueueEmptyError (a queue.Empty) when none came, QueueClosedError once a\n"
              "closed queue is drained. The GIL is released while waiting; Ctrl-C\n"
              "interrupts the wait, and an interrupted get takes nothing (an item\n"
              "handed to it in the same instant goes back to the front)."),
        M("get_nowait", returns="Any", expr="Q_CALL(GET, NULL, 0, NULL)",
          doc="get(block=False): QueueEmptyError (a queue.Empty and an\n"
              "asyncio.QueueEmpty) when empty."),
        M("task_done",
          doc="Mark one item taken from the queue as processed (queue.Queue.task_done):\n"
              "join() returns once every item put has been marked. ValueError when\n"
              "called more times than items were put. An evicted item (DROP_OLDEST)\n"
              "counts as done; a dropped one was never counted."),
        M("join", expr="Q_CALL(JOIN, NULL, PRS_NEVER, NULL)",
          doc="Wait until every item put has been marked done with task_done()\n"
              "(queue.Queue.join). The GIL is released while waiting and Ctrl-C\n"
              "interrupts the wait."),
        M("_join_async", LOOP, "Union[bool, _AsyncWaiter]", expr="Q_CALL(JOIN, NULL, PRS_NEVER, arg)",
          doc="Internal (asyncio form of join): True now, or a queued waiter."),
        M("_finish_join", "waiter: _AsyncWaiter, /", "bool", expr=FINISH, flags="METH_FASTCALL",
          doc="Internal: settle a joiner waiter."),
        M("close",
          doc="Close the queue: later puts raise QueueClosedError; getters drain what is\n"
              "left, then raise QueueClosedError. Blocked producers (their items are\n"
              "dropped) and consumers wake at once. Idempotent."),
        M("qsize", returns="int", expr="PyLong_FromLongLong(prs_ring_size(o->core))",
          doc="Items in the queue."),
        M("empty", returns="bool", expr="PyBool_FromLong(prs_ring_size(o->core) == 0)",
          doc="True when no item is queued."),
        M("full", returns="bool", expr="PyBool_FromLong(prs_ring_is_full(o->core))",
          doc="True when qsize() == max_size."),
        M("__len__", returns="int", slot=True),
        M("_put_async", returns="Union[bool, _AsyncWaiter]",
          params=[P("item", "OBJECT", "Any"),
                  P("get_running_loop", "OBJECT", "Callable[[], Any]", posonly=True)],
          expr="Q_CALL(PUT, v[0], o->block_timeout_ns, v[1])",
          doc="Internal (asyncio form of put): a verdict now, or a queued waiter."),
        M("_get_async", LOOP, "Any", expr="Q_CALL(GET, NULL, PRS_NEVER, arg)",
          doc="Internal (asyncio form of get): an item now, or a queued waiter."),
        M("_finish_put", WAITER, "bool", expr=FINISH, doc="Internal: settle a producer waiter."),
        M("_finish_get", WAITER, "Any", expr=FINISH, doc="Internal: settle a consumer waiter."),
        M("_after_fork_child",
          doc="Internal: call in a child process right after fork, with one thread\n"
              "running (pyresilience.queues' os.register_at_fork hook does): a new lock;\n"
              "an item handed to a parent's thread goes back to the front, the parent's\n"
              "blocked puts and gets leave. asyncio waiters stay queued."),
        M("_stats", returns="tuple[int, ...]",
          doc="Internal: (received, processed, dropped, blocked, size, high_events,\n"
              "low_events, producers_waiting, consumers_waiting, closed, above_high,\n"
              "unfinished)."),
    ],
    props=[
        Prop("fill_ratio", "float", "qsize() / max_size, in [0, 1].",
             expr="PyFloat_FromDouble(q_given(o) <= 0 ? 0.0 : (double)prs_ring_size(o->core) / "
                  "(double)prs_ring_capacity(o->core))"),
        Prop("max_size", None,
             "The queue's capacity (<= 0: unbounded); assigning it resizes the queue.", closure=1,
             set="q_set_size", expr="PyLong_FromLongLong(q_given(o))"),
        Prop("maxsize", None, "Alias of max_size (the queue.Queue name).", closure=2,
             set="q_set_size", expr="PyLong_FromLongLong(q_given(o))"),
        Prop("unfinished_tasks", "int", "Items put and not yet marked done with task_done().",
             expr="PyLong_FromLongLong(q_stats_of(o).unfinished)"),
        Prop("_strategy_name", "str", "The strategy's value ('block', ...).",
             expr="PyUnicode_FromString(prs_ring_strategy_name(prs_ring_strategy_of(o->core)))"),
        Prop("block_timeout", "Optional[float]",
             "Seconds a BLOCK put waits by default (None: no limit).",
             expr="isinf(o->a.block_timeout_s) ? Py_NewRef(Py_None) : "
                  "PyFloat_FromDouble(o->a.block_timeout_s)"),
        Prop("closed", "bool", "True after close().",
             expr="PyBool_FromLong(prs_ring_is_closed(o->core))"),
        Prop("high_watermark", "Optional[float]", "The high watermark fraction, or None.",
             expr=OPT_MARK % "high"),
        Prop("low_watermark", "Optional[float]", "The low watermark fraction, or None.",
             expr=OPT_MARK % "low"),
    ],
    stub_tail=["@property", "def max_size(self) -> int: ...", "@max_size.setter",
               "def max_size(self, value: int) -> None: ...", "@property",
               "def maxsize(self) -> int: ...", "@maxsize.setter",
               "def maxsize(self, value: int) -> None: ..."])

RING_QUEUE.visit = "q_visit_items(o, visit, arg)"  # the stored items
RING_QUEUE.drop = "if (o->core) prs_ring_drain(o->core, decref_item, NULL);"

ASYNC_WAITER = Type(
    "_AsyncWaiter", "wait", "waiter", obj="prs_py_waiter",
    flags=("HAVE_GC", "IMMUTABLETYPE", "DISALLOW_INSTANTIATION"), slots={"call": "waiter_call"},
    refs=["loop", "future", "get_loop"], kept=["owner"], free="waiter_free(o);",
    doc="A queued asyncio waiter of a Bulkhead or queue (internal; made by them).",
    methods=[M("__call__", slot=True, expr="waiter_resolve((prs_py_waiter *)self) < 0 ? NULL : Py_NewRef(Py_None)")],
    props=[Prop("future", "Any", "The asyncio future woken when this waiter is served.",
                member="future")])

READY = Type(
    "_Ready", "wait", "ready", obj="ready_obj",
    flags=("IMMUTABLETYPE", "DISALLOW_INSTANTIATION"),
    slots={"am_await": "PyObject_SelfIter", "iter": "PyObject_SelfIter", "iternext": "ready_next"},
    refs=["value"],
    doc="An awaitable that is already done (internal).",
    methods=[M("send", "value: Any, /", "Any", doc="Finish: raise StopIteration(result)."),
             M("__await__", returns="Any", slot=True), M("__iter__", returns="Any", slot=True),
             M("__next__", returns="Any", slot=True)])

TYPES = [BULKHEAD, RING_QUEUE, ASYNC_WAITER, READY]
