"""Declared binding of the shared-memory region (csrc/python/shm.c): loaded by
binding_decl.py beside the other areas."""
from binding_decl import M, P, Prop, Type

EXIT = "exc_type: Any, exc: Any, tb: Any, /"

SHARED_MEMORY = Type(
    "SharedMemory", "shm", "shm", config="shm_args", obj="shm_obj",
    init="shm_args_init",  # the declared bounds are the whole check
    flags=("BASETYPE", "HAVE_GC", "IMMUTABLETYPE"),
    offsets={"weaklist": "weakreflist"}, refs=[], kept=["name", "directory", "path"],
    free="prs_shm_close(o->r);", keep={"name": "name", "directory": "directory"},
    build=["prs__spin_init(&o->lock);", "rc = shm_open_region(o, &cfg);"],
    params=[
        P("name", "STR", "str", field="name", doc="The region's name: 1..63 bytes, no '/', '..' or NUL."),
        P("size", "COUNT", "Optional[int]", "None", field="size", lo=16384, hi=1 << 40,
          flags=("none",), kw=True,
          doc="Bytes, when this call creates it (default 1 MiB, about 250 limiters)."),
        P("directory", "STR", "Optional[str]", "None", field="directory", flags=("none",), kw=True,
          doc="A directory for the region's file (default: /dev/shm)."),
        P("mode", "INT", "int", "0o600", field="mode", lo=0, hi=0o777, kw=True,
          doc="Permission bits of a created region."),
    ],
    doc="A named shared-memory region that every process opens by the same name:\n"
        "the first opener creates it (size bytes, default 1 MiB; mode 0o600), the\n"
        "others map the existing one (its own size). Limiters placed in it with\n"
        "shared=region, name=... share one state across processes (fork, spawn or\n"
        "unrelated ones). The file is /dev/shm/pyresilience.<name> (or under\n"
        "`directory`). A region that is truncated, corrupt, of another version or\n"
        "another user's is refused (ValueError, PermissionError), never read. A full\n"
        "region raises OSError(ENOSPC). close() drops this handle (limiters placed\n"
        "through it keep the mapping); unlink() removes the name.",
    methods=[
        M("close", doc="Drop this handle (idempotent). Limiters already placed keep working."),
        M("unlink", doc="Remove the region's name; processes that have it open keep it.\n"
                        "FileNotFoundError when there is none."),
        M("__enter__", returns="Self", c="shm_enter", doc="The region itself."),
        M("__exit__", EXIT, "None", c="shm_exit", expr="shm_close(self, NULL)", doc="close()."),
    ],
    props=[Prop("name", "str", "The region's name.", member="name"),
           Prop("path", "str", "The region's file.", member="path"),
           Prop("size", "int", "The region's size in bytes.",
                expr="PyLong_FromSize_t(shm_read(o, prs_shm_size))"),
           Prop("created", "bool", "True when this handle created the region.",
                expr="PyBool_FromLong(shm_read(o, created_of) != 0)"),
           Prop("closed", "bool", "True after close().", expr="PyBool_FromLong(shm_read(o, NULL) != 0)"),
           Prop("entries", "int", "Objects placed in the region so far.",
                expr="PyLong_FromSize_t(shm_read(o, prs_shm_entries))"),
           Prop("free_bytes", "int", "Bytes left for new objects.",
                expr="PyLong_FromSize_t(shm_read(o, prs_shm_free_bytes))")])

SETUP = {"shm": None}
TYPES = [SHARED_MEMORY]
