"""The declared binding of the Redis types (csrc/python/redis.c): RedisBackend,
RedisRateLimiter, RedisLimiterGroup. Validation is csrc/redis's
(prs_redis_config_check, prs_redis_limiter_config_check)."""
from binding_decl import M, P, Prop, Type

KEY = "Union[str, bytes]"


def declared(sig):
    """Declared params (OBJECT: the binding converts each) from stub syntax
    "name: type = default, ..."; the text signature and stub come out as written."""
    parts, depth, cur = [], 0, ""
    for ch in sig:
        depth += ch in "[(" and 1 or ch in "])" and -1 or 0
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    params = []
    for part in filter(None, (x.strip() for x in parts + [cur])):
        name, rest = part.split(":", 1)
        typ, _, default = rest.partition("=")
        params.append(P(name.strip(), "OBJECT", typ.strip(), default.strip() or None))
    return params



MEMBER = "Tuple[RedisRateLimiter, Union[str, bytes], int]"
# A transport's failure, by status name (csrc/redis maps it: transport_failure).
FAILURE = [P("status", "ENUM", "str", "'OK'", field="status",
             choices=("OK", "ECONN", "ETIMEDOUT", "EPROTO", "EBACKEND", "EBACKENDCLOSED")),
           P("message", "STR", "str", "''")]
FLAGS = ("BASETYPE", "HAVE_GC")
WEAK = {"weaklist": "weakreflist"}

BACKEND = Type(
    "RedisBackend", "redis", "backend", obj="backend_obj", config="prs_redis_config",
    flags=FLAGS, offsets=WEAK, refs=[], kept=["url"], init="prs_redis_config_init", check="prs_redis_config_check",
    build="rc = backend_build(o, &cfg, v[P_RedisBackend_url]);",
    free="prs_redis_backend *b = o->b; Py_BEGIN_ALLOW_THREADS prs_redis_backend_free(b); "
         "Py_END_ALLOW_THREADS",
    params=[
        P("url", "STR", "str", "'redis://127.0.0.1:6379/0'", field="url"),
        P("connect_timeout", "DURATION", "float", "0.25", field="connect_timeout_ns",
          flags=("zero", "neg", "inf"), kw=True),
        P("timeout", "DURATION", "float", "0.25", field="timeout_ns", flags=("zero", "neg", "inf")),
        P("max_connections", "CONVERT", "int", "8", field="max_connections",
          convert="backend_max_connections"),
    ],
    doc="A thread-safe pool of connections to one Redis server.\n"
        "url: redis://[user:password@]host:port/db or unix:///path/to/socket?db=N,\n"
        "or redis+cluster://host:port[,host:port...] for a Redis Cluster (each\n"
        "command goes to the primary of its keys' hash slot; MOVED/ASK followed).\n"
        "timeout bounds a whole call (including any connection it must open);\n"
        "connect_timeout bounds opening one. Connections open lazily, reopen after\n"
        "errors, and a forked child opens its own. After repeated failures the\n"
        "backend fails fast for 200 ms at a time instead of waiting out a timeout\n"
        "on every call, and recovers by itself once Redis answers again.",
    methods=[
        M("close", expr="backend_call(self, 0)", doc="Close every connection; later calls raise BackendError. Idempotent."),
        M("ping", returns="bool", expr="backend_call(self, 1)",
          doc="PING the server: True, or BackendError when it cannot be reached\n"
              "within the timeout."),
        M("_endpoint", params=declared("node: int = 0"), expr="backend_node_endpoint(self, v[0])",
          returns="Tuple[Optional[str], int, Optional[str], Optional[str], Optional[str], int]",
          doc="Internal (asyncio transport): (host, port, unix_path, user, password, db)\n"
              "of the parsed url, or of a Cluster's node (an index the ops name)."),
        M("_admit", returns="Tuple[int, Tuple[str, str]]",
          doc="Internal (asyncio transport): ask the backend's circuit, shared with\n"
              "the blocking calls: (1 or 2, ('OK', '')) to go, (0, (status, message)) to fail fast."),
        M("_clock", config="clock_args", call="prs_redis_backend_clock_us(o->b, a.sent_us, a.got_us, a.server_us)",
          params=[P(x, "INT", "int", field=x, lo="INT64_MIN", hi="INT64_MAX")
                  for x in ("sent_us", "got_us", "server_us")],
          doc="Internal (asyncio transport): learn Redis's clock from a TIME reply (server_us)\n"
              "sent and read at these time.time_ns() // 1000, as a pooled connection does."),
        M("_outcome", config="transport_args", params=[P("admit", "INT", "int", field="admit", lo="0", hi="2")] + FAILURE,
          call="prs_redis_backend_outcome(o->b, (int)a.admit, transport_failure(&a, v[2]))",
          doc="Internal (asyncio transport): report an admitted exchange's outcome to the\n"
              "circuit (status, message: a transport failure's)."),
        M("_now_us", returns="int", expr="PyLong_FromLongLong(prs_redis_backend_now_us(((backend_obj *)self)->b))",
          doc="Internal: Redis's clock now (microseconds since the epoch), as the\n"
              "backend's connections learned it (the shared breaker sends it to its script)."),
        M("_breaker_script", returns="bytes", expr="PyBytes_FromString(prs_redis_breaker_script(NULL))",
          doc="Internal: the distributed circuit breaker's Lua script\n"
              "(csrc/redis/breaker_script.c; pyresilience.redis_breaker runs it)."),
        M("_op_step", "op: Any, /", "Tuple[Tuple[int, bytes, int], ...]",
          doc="Internal (asyncio transport): the op's next sends, (node, bytes, replies)\n"
              "each; () when it is complete."),
        M("_op_finish", config="transport_args", params=[P("op", "OBJECT", "Any")] + FAILURE, returns="Any",
          expr="op_finish(self, v[0], transport_failure(&a, v[2]))",
          doc="Internal (asyncio transport): finish op with the replies put into it, or\n"
              "with a transport failure (status, message) that the failure policy decides.\n"
              "Returns what the blocking call returns (Decision, list of Decisions, None)."),
        M("_command", "*args: Union[str, bytes, int]", "Any", flags="METH_FASTCALL",
          doc="Run one raw Redis command (arguments str, bytes or int) and\n"
              "return its reply (bytes, int, None, str status, list). For tests and tools."),
    ],
    props=[
        Prop("url", "str", "The server URL.", member="url"),
        Prop("timeout", "float", "Seconds a call may take in total.",
             expr="PyFloat_FromDouble((double)o->cfg.timeout_ns / 1e9)"),
        Prop("connect_timeout", "float", "Seconds to establish a connection.",
             expr="PyFloat_FromDouble((double)o->cfg.connect_timeout_ns / 1e9)"),
        Prop("max_connections", "int", "Pool size.", expr="PyLong_FromLong(o->cfg.max_connections)"),
        Prop("closed", "bool", "True after close().", expr="PyBool_FromLong(prs_redis_backend_closed(o->b))"),
        Prop("connections", "int", "Connections open in this process now.",
             expr="PyLong_FromLong(prs_redis_backend_connections(o->b))"),
        Prop("_counts", "tuple[int, int]",
             "(round_trips, errors): calls made to Redis and those that failed, since creation.",
             expr='Py_BuildValue("(KK)", (unsigned long long)prs_redis_backend_round_trips(o->b), '
                  '(unsigned long long)prs_redis_backend_errors(o->b))'),
    ])

LIMITER = Type(
    "RedisRateLimiter", "redis", "rl", obj="limiter_obj", config="prs_redis_limiter_config",
    flags=FLAGS, offsets=WEAK, kept=["backend", "algorithm", "key_prefix"], rate="rl_target", rate_key=True,
    refs=["limit", "window", "rate", "burst", "local_share", "lease"],  # as given: tp_clear drops them
    keep={x: x for x in ("backend", "limit", "window", "rate", "burst", "local_share", "lease")},
    init="prs_redis_limiter_config_init", build="rc = rl_build(o, st, &cfg, v);",
    free="prs_redis_limiter_free(o->l); /* no I/O: held lease permits lapse; before the backend */",
    params=[
        P("backend", "OBJECT", "RedisBackend", instance="RedisBackend"),
        P("algorithm", "ENUM", "str", "'gcra'", field="algorithm",
          choices=("gcra", "token_bucket", "fixed_window", "sliding_window_counter",
                   "sliding_window_log")),
        P("limit", "COUNT", "Optional[int]", "None", field="limit", flags=("none",), kw=True),
        P("window", "DURATION", "Optional[float]", "None", field="window_ns",
          flags=("zero", "neg", "inf", "none")),
        P("rate", "REAL", "Optional[float]", "None", field="rate", flags=("zero", "neg", "inf", "none")),
        P("burst", "COUNT", "Optional[int]", "None", field="burst", flags=("none",)),
        P("key_prefix", "STR", "str", "'prs:'", field="key_prefix"),
        P("on_backend_error", "CONVERT", "str", "'raise'", field="on_backend_error",
          convert="rl_policy"),
        P("local_share", "REAL", "Optional[float]", "None", field="local_share", flags=("none",)),
        P("lease", "CONVERT", "Any", "None", flags=("none",), convert="rl_lease"),
    ],
    doc="A rate limit shared by every process using the same Redis, per key.\n"
        "gcra and token_bucket take rate (per second) and burst, or limit and window\n"
        "(rate = limit/window, burst = limit); fixed_window, sliding_window_counter and\n"
        "sliding_window_log take limit and window (seconds). Time is Redis's own.\n"
        "on_backend_error: 'raise' (BackendError), 'allow', 'deny' or 'local' (an\n"
        "in-process limiter with local_share of the limit).",
    methods=[
        M("allow", "key: %s, n: int = 1" % KEY, "bool", rate=True,
          doc="Consume n for key if Redis admits it now: True or False.\n"
              "key is str (UTF-8) or bytes, any content and length."),
        M("check", "key: %s, n: int = 1" % KEY, "Decision", rate=True,
          doc="Like allow(), returning the Decision (allowed, limit, remaining,\n"
              "retry_after, reset_after; headers()). One EVALSHA round trip, or none when a\n"
              "local lease can serve it."),
        M("peek", "key: %s, n: int = 1" % KEY, "Decision", rate=True,
          doc="The Decision check(key, n) would return now, consuming nothing."),
        M("acquire", config="prs_py_rate_args", expr="acquired(self, v[0], a.n, a.timeout_ns)",
          params=[P("key", "OBJECT", KEY), P("n", "N", "int", "1", field="n"),
                  P("timeout", "TIMEOUT", "Optional[float]", "None", field="timeout_ns")],
          doc="Block until n is admitted for key (the GIL is\n"
              "released while waiting; Ctrl-C interrupts). RateLimitExceeded at once when n\n"
              "cannot be admitted within timeout seconds; ValueError when n exceeds the limit."),
        M("reset", params=declared("key: %s" % KEY), expr="rl_call(self, PRS_REDIS_OP_RESET, v[0], 1, NULL, 0)",
          doc="Delete key's state in Redis (and its local lease)."),
        M("check_many", params=declared("requests: Iterable[Union[str, bytes, Tuple[Union[str, bytes], int]]]"),
          returns="List[Decision]", expr="rl_many(self, v[0], 0)",
          doc="Check a list of (key, n) pairs (or bare keys, n=1) in one\n"
              "pipelined round trip; returns a list of Decisions in the same order. Each\n"
              "check is atomic on its own (not all-or-nothing: see RedisLimiterGroup)."),
        M("_op", config="op_args", returns="Any",
          params=[P("kind", "ENUM", "str", field="kind", choices=("check", "peek", "reset")), P("key", "OBJECT", KEY),
                  P("n", "N", "int", "1", field="n"), P("now", "OBJECT", "Optional[float]", "None")],
          expr='rl_call(self, "cpr"[a.kind], v[1], a.n, is_none(v[3]) ? NULL : v[3], 1)',
          doc="Internal (asyncio transport): kind 'check', 'peek' or 'reset' without\n"
              "I/O: a Decision when a lease decided it, else the op."),
M("_async_waiter", config="prs_py_rate_args", returns="Tuple[_RateWait, List[Decision]]",
          params=[P("key", "OBJECT", KEY), P("n", "N", "int", "1", field="n"),
                  P("timeout", "TIMEOUT", "Optional[float]", "None", field="timeout_ns")],
          expr='fed_waiter(self, "Redis limiter", a.n, a.timeout_ns)',
          doc="Internal: the wait of acquire_async(): before each step(), append the\n"
              "Decision of a check to the list; step() then decides as acquire() does."),
        M("_op_many", params=declared("requests: Iterable[Union[str, bytes, Tuple[Union[str, bytes], int]]]"), returns="Any",
          expr="rl_many(self, v[0], 1)", doc="Internal (asyncio transport): check_many's op, or [] for no requests."),
        M("_op_release", returns="Any", expr="rl_release(self, 1)",
          doc="Internal (asyncio transport): close()'s give-back of the leases as an op,\n"
              "or None when no lease holds a permit."),
        M("close", expr="rl_release(self, 0)", doc="Give back every unspent lease permit (one pipelined round trip)."),
        M("_check_at", config="op_args", returns="Decision",
          params=[P("key", "OBJECT", KEY), P("n", "N", "int", field="n"), P("now", "OBJECT", "float")],
          expr="rl_call(self, PRS_REDIS_OP_CHECK, v[0], a.n, v[2], 0)",
          doc="Tests only: check at `now` seconds (microsecond\n"
              "resolution) instead of Redis's TIME. Never uses leases."),
        M("_redis_key", "key: %s, /" % KEY, "bytes",
          doc="The Redis key holding key's state (for tools and tests)."),
    ],
    props=[
        Prop("backend", "RedisBackend", "The RedisBackend.", member="backend"),
        Prop("algorithm", "str", "The algorithm's name.", member="algorithm"),
        Prop("key_prefix", "str", "Prefix of every Redis key this limiter writes.",
             member="key_prefix"),
        Prop("limit", "Optional[int]", "limit as given (None when not).", member="limit"),
        Prop("window", "Optional[float]", "window in seconds as given (None when not).",
             member="window"),
        Prop("rate", "Optional[float]", "rate as given (None when not).", member="rate"),
        Prop("burst", "Optional[int]", "burst as given (None when not).", member="burst"),
        Prop("on_backend_error", "str", "'raise', 'allow', 'deny' or 'local'.",
             expr="PyUnicode_FromString(prs_redis_policy_name(o->policy))"),
        Prop("local_share", "Optional[float]", "Share of the limit the 'local' fallback admits.",
             member="local_share"),
        Prop("lease", "Any", "The LeaseConfig, or None.", member="lease"),
        Prop("_fallbacks", "int",
             "Decisions the on_backend_error policy made because Redis failed, since creation.",
             expr="PyLong_FromUnsignedLongLong(prs_redis_limiter_fallbacks(o->l))"),
    ])

GROUP = Type(
    "RedisLimiterGroup", "redis", "group", obj="group_obj", flags=FLAGS, offsets=WEAK,
    refs=[], kept=["members"], free="PyMem_Free(o->m); /* its keys are borrowed from members */",
    build="rc = group_build(o, st, v[P_RedisLimiterGroup_members]);",
    params=[P("members", "OBJECT", "Iterable[%s]" % MEMBER)],
    doc="Several Redis limits checked as one, all or nothing, in one atomic script:\n"
        "members is a list of (limiter, key, n) tuples whose limiters share one\n"
        "RedisBackend. On Redis Cluster the keys must share a hash tag (see same_slot).\n"
        "When Redis fails, each member's on_backend_error applies and the strictest\n"
        "outcome wins: 'raise' over 'deny' over 'local' over 'allow'; the 'local'\n"
        "members' in-process limiters decide all or nothing among themselves.",
    methods=[
        M("check", returns="Decision", expr="group_call(self, NULL, GROUP_CHECK)",
          doc="Admit every member's (key, n) or none, in one atomic script. The\n"
              "Decision is the most restrictive member's; denied_by is the index of the first\n"
              "member that denied."),
        M("allow", returns="bool", expr="group_call(self, NULL, GROUP_ALLOW)", doc="check() as a bool."),
        M("acquire", config="prs_py_rate_args", expr="acquired(self, NULL, 1, a.timeout_ns)",
          params=[P("timeout", "TIMEOUT", "Optional[float]", "None", field="timeout_ns")],
          doc="Block until the whole group is admitted (GIL released\n"
              "while waiting); RateLimitExceeded when that cannot happen within timeout."),
        M("_check_at", "now: float, /", "Decision", expr="group_call(self, arg, GROUP_CHECK)",
          doc="Tests only: check at `now` seconds instead of Redis's TIME."),
        M("_async_waiter", config="prs_py_rate_args", returns="Tuple[_RateWait, List[Decision]]",
          params=[P("timeout", "TIMEOUT", "Optional[float]", "None", field="timeout_ns")],
          expr='fed_waiter(self, "Redis group", 1, a.timeout_ns)',
          doc="Internal: the wait of acquire_async(): before each step(), append the\n"
              "Decision of a check to the list; step() then decides as acquire() does."),
        M("_op", params=declared("now: Optional[float] = None"), returns="Any",
          expr="group_call(self, is_none(v[0]) ? NULL : v[0], GROUP_OP)",
          doc="Internal (asyncio transport): the group check's op."),
    ],
    props=[
        Prop("members", "List[%s]" % MEMBER, "The (limiter, key, n) members.",
             expr="PySequence_List(o->members)"),
        Prop("same_slot", "bool",
             "True when every member's key maps to one Redis Cluster slot (same hash tag).",
             expr="PyBool_FromLong(prs_redis_group_slot((size_t)o->count, o->m) >= 0)"),
    ])

READER = Type(
    "_RespReader", "redis", "reader", obj="reader_obj", flags=("HAVE_GC",), refs=["error"],
    free="prs_redis_reader_free(o->r);", keep={"error": "error"}, build="rc = prs_redis_reader_new(&o->r);",
    params=[P("error", "OBJECT", "Any")],
    doc="Internal (asyncio transport): one connection's replies, parsed by csrc/redis\n"
        "(hiredis's reader) as the pool's are. An error reply is error(text).",
    methods=[
        M("feed", "data: bytes, /", doc="The bytes the connection read."),
        M("put", params=declared("op: Any, send: int"), returns="int", expr="reader_put_reply(self, v[0], v[1])",
          doc="Hand the next whole reply to op as a reply of its send `send`: 0 when no\n"
              "reply is whole yet, 1 when handed, 2 when it was the last the op's step awaited."),
        M("pop", "default: Any, /", "Any",
          doc="The next whole reply as bytes, int, None, str (a status), list or error(text),\n"
              "or default when none is whole yet."),
    ])

TYPES = [BACKEND, LIMITER, GROUP, READER]
