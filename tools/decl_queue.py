"""Declared binding of the ring queue (csrc/python/queue.c): loaded by
binding_decl.py beside the other areas."""
from binding_decl import M, P, Prop, Type
from decl_bulkhead import at

OPT_MARK = ("o->a.ring.watermarks ? PyFloat_FromDouble(o->a.ring.%s_watermark) : "
            "Py_NewRef(Py_None)")
BLOCK = P("block", "BOOL", "bool", "True", field="block")
NEW_WAITER = "new_waiter: Callable[[], Any], /"

# A watermark: a fraction the core checks (None: not given, NaN in the config).
MARK = ("zero", "neg", "inf", "none")
# queue.Queue's name of max_size (the same field; at most one of the two).
MAXSIZE = at(P("maxsize", "COUNT", "Optional[int]", "None", field="capacity", flags=("none",),
               kw=True), "given")
MAXSIZE.alias_of = "max_size"

RING_QUEUE = Type(
    "RingQueue", "queue", "q", config="q_args", obj="q_obj",
    init="q_args_init", check="q_args_check",
    flags=("BASETYPE", "HAVE_GC", "IMMUTABLETYPE"),
    slots={"len": None}, offsets={"weaklist": "weakreflist"}, refs=["on_high", "on_low"],
    free="prs_ring_free(o->core); /* no waiter is queued: each holds this object */",
    keep={"on_high": "on_high_watermark", "on_low": "on_low_watermark"},
    build="rc = q_build(o, &cfg);",
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
        M("put", returns="bool", config="q_wait_args", init="{1, o->block_timeout_ns}",
          expr="Q_CALL(PUT, v[0], a.block ? a.timeout_ns : 0, NULL)",
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
        M("get", returns="Any", config="q_wait_args", init="{1, PRS_NEVER}",
          expr="Q_CALL(GET, NULL, a.block ? a.timeout_ns : 0, NULL)",
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
        M("task_done", expr='q_op(self, prs_ring_task_done, "task_done() called too many times")',
          doc="Mark one item taken from the queue as processed (queue.Queue.task_done):\n"
              "join() returns once every item put has been marked. ValueError when\n"
              "called more times than items were put. An evicted item (DROP_OLDEST)\n"
              "counts as done; a dropped one was never counted."),
        M("join", expr="Q_CALL(JOIN, NULL, PRS_NEVER, NULL)",
          doc="Wait until every item put has been marked done with task_done()\n"
              "(queue.Queue.join). The GIL is released while waiting and Ctrl-C\n"
              "interrupts the wait."),
        M("_join_async", NEW_WAITER, "Union[bool, _AsyncWaiter]", expr="Q_CALL(JOIN, NULL, PRS_NEVER, arg)",
          doc="Internal (asyncio form of join): True now, or a queued waiter."),
        M("close", expr="q_op(self, prs_ring_close, NULL)",
          doc="Close the queue: later puts raise QueueClosedError; getters drain what is\n"
              "left, then raise QueueClosedError. Blocked producers (their items are\n"
              "dropped) and consumers wake at once. Idempotent."),
        M("qsize", returns="int", expr="PyLong_FromLongLong(prs_ring_size(o->core))",
          doc="Items in the queue."),
        M("empty", returns="bool", expr="PyBool_FromLong(prs_ring_size(o->core) == 0)",
          doc="True when no item is queued."),
        M("full", returns="bool", expr="PyBool_FromLong(prs_ring_is_full(o->core))",
          doc="True when qsize() == max_size."),
        M("__len__", returns="int", slot=True, expr="prs_ring_size(o->core)"),
        M("_put_async", returns="Union[bool, _AsyncWaiter]",
          params=[P("item", "OBJECT", "Any"),
                  P("new_waiter", "OBJECT", "Callable[[], Any]", posonly=True)],
          expr="Q_CALL(PUT, v[0], o->block_timeout_ns, v[1])",
          doc="Internal (asyncio form of put): a verdict now, or a queued waiter."),
        M("_get_async", NEW_WAITER, "Any", expr="Q_CALL(GET, NULL, PRS_NEVER, arg)",
          doc="Internal (asyncio form of get): an item now, or a queued waiter."),
        M("_after_fork_child",
          expr='q_op(self, prs_ring_after_fork_child, "cannot re-create the queue\'s lock after fork")',
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


TYPES = [RING_QUEUE]

# queue.c registers through the generated prs_py_register_queue (its type only).
SETUP = {"queue": None}
