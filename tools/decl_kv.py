"""Declared binding of the key/value area of a shared-memory region
(csrc/python/kv.c; core: csrc/core/shm_kv.c): what SharedIdempotencyStore is
made of. Loaded by binding_decl.py beside the other areas."""
from binding_decl import M, P, Prop, Type


def B(name, posonly=False):
    """A bytes argument of a method (its buffer and length in kv_call.<name>)."""
    return P(name, "BYTES", "bytes", field=name, posonly=posonly)


def I(name, posonly=False):
    """An int argument of a method (kv_call.<name>; the core checks its range)."""
    return P(name, "INT", "int", field=name, posonly=posonly)


KEY, TOKEN = B("key"), B("token")

SHARED_KV = Type(
    "SharedKV", "kv", "kv", config="kv_args", obj="kv_obj",
    flags=("HAVE_GC", "IMMUTABLETYPE"), slots={"len": None},
    refs=[], kept=["name"], keep={"name": "name"}, free="prs_shm_kv_free(o->kv);",
    build="rc = kv_build(st, o, &cfg, v[P_SharedKV_region]);",
    params=[
        P("region", "OBJECT", "SharedMemory", doc="The SharedMemory holding the area."),
        P("name", "STR", "str", doc="The area's entry name in the region."),
        P("max_keys", "COUNT", "int", "1024", field="max_keys", lo=1, hi=1 << 24, kw=True),
        P("max_key_bytes", "COUNT", "int", "256", field="max_key_bytes", lo=1, hi=1024, kw=True),
        P("max_value_bytes", "COUNT", "int", "4096", field="max_value_bytes", lo=1, hi=1 << 26,
          kw=True),
    ],
    doc="A bounded key/value area of idempotency records in a SharedMemory region\n"
        "(the core of pyresilience.SharedIdempotencyStore): max_keys records, each with\n"
        "room for a key of max_key_bytes and a value of max_value_bytes. Times are\n"
        "integer ns of CLOCK_MONOTONIC (shared by every process). Crash safe: a process\n"
        "killed in the middle of a step leaves it rolled back (an undo journal).",
    methods=[
        M("begin", params=[KEY, B("fp"), TOKEN, I("lease_ns"), I("now_ns", posonly=True)],
          config="kv_call", returns="tuple[int, bool, Optional[bytes]]", expr="record_call(o, &a, 0)",
          doc="(state, fingerprint_matches, value): ACQUIRED (0) a new lease for token,\n"
              "DONE (1) with the stored value, or BUSY (2). OSError(ENOSPC) when every\n"
              "record is a live lease."),
        M("complete", params=[KEY, TOKEN, B("value"), I("ttl_ns"), I("now_ns", posonly=True)],
          config="kv_call", returns="bool", expr="complete_call(o, &a)",
          doc="Store value while token owns the lease: True, or False (not the owner).\n"
              "ValueError when value is larger than max_value_bytes."),
        M("renew", params=[KEY, TOKEN, I("lease_ns"), I("now_ns", posonly=True)], config="kv_call",
          returns="bool", expr="kv_status(o, prs_shm_kv_renew(o->kv, KV_KEY(a), KV_TOKEN(a), "
                               "a.lease_ns, a.now_ns))",
          doc="Extend token's lease: True, or False (not the owner)."),
        M("release", params=[KEY, B("token", posonly=True)], config="kv_call", returns="bool",
          expr="kv_status(o, prs_shm_kv_release(o->kv, KV_KEY(a), KV_TOKEN(a)))",
          doc="Delete token's in-progress record: True, or False (not the owner)."),
        M("delete", params=[B("key", posonly=True)], config="kv_call", returns="bool",
          expr="kv_status(o, prs_shm_kv_delete(o->kv, KV_KEY(a)))",
          doc="Delete key's record, whoever owns it."),
        M("peek", params=[KEY, B("fp", posonly=True)], config="kv_call",
          returns="Optional[tuple[int, bool, Optional[bytes], int]]", expr="record_call(o, &a, 1)",
          doc="(state, fingerprint_matches, value, expires_ns) of key's record, expired\n"
              "or not, or None; changes nothing."),
        M("seq", returns="int", expr="PyLong_FromUnsignedLong(prs_shm_kv_seq(o->kv))",
          doc="The change counter to pass to wait()."),
        M("wait", params=[I("seq"), I("timeout_ns", posonly=True)], config="kv_call",
          expr="wait_slice(o, &a)",
          doc="Block (GIL released) until a record completes or goes after seq was read,\n"
              "or timeout_ns passes (at most 50 ms); may return early."),
        M("clear", c="kv_clear_all", call="prs_shm_kv_clear(o->kv)", doc="Delete every record."),
        M("check", returns="bool", expr="PyBool_FromLong(prs_shm_kv_check(o->kv) == PRS_OK)",
          doc="True when the area's invariants hold (records, index, free list)."),
        M("__len__", returns="int", slot=True, expr="prs_shm_kv_count(o->kv)"),
    ],
    props=[
        Prop("name", "str", "The area's entry name.", member="name"),
        Prop("max_keys", "int", "Records in the area.", expr="PyLong_FromUnsignedLong(config_of(o, 0))"),
        Prop("max_key_bytes", "int", "The longest key.", expr="PyLong_FromUnsignedLong(config_of(o, 1))"),
        Prop("max_value_bytes", "int", "The largest value.", expr="PyLong_FromUnsignedLong(config_of(o, 2))"),
    ])

TYPES = [SHARED_KV]

# kv.c registers through the generated prs_py_register_kv (its types only).
SETUP = {"kv": None}
