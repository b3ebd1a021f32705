"""Compiled programs kept across processes, past XLA's cache.

JAX's persistent compilation cache (:mod:`dekc._jax`) keeps what XLA compiled, but a new process
still traces each program and lowers it to StableHLO before it can look the result up: for the
fixed point's four programs that is about 0.5 s of the first Gram matrix of every process. This
module keeps the lowered program itself (JAX's ``jax.export`` serialization) next to XLA's cache,
so a later process reads it, checks it and hands it to XLA, whose cache then holds the compiled
code.

A program is filed under the SHA-256 of everything that shapes it (:func:`_key`): dekc's source
and version, the exact text of the generated modules whose functions it calls, the values of the
module-level constants of the modules whose code it runs (also when changed at run time; only
those, as the modules a process has imported differ), JAX's version, the
platform, the static arguments described as data (:func:`describe`: functions by module and
name, never by address) and the arguments' shapes and dtypes. A static argument that cannot be
described so (an object, an array, a function closing over one) is never filed: the program is
traced as usual. A file is used only when its header names that key and the SHA-256 of its
content matches, and the program read back takes exactly the arguments' shapes and dtypes;
anything else is compiled again and the file replaced (a changed or corrupted file with a
warning).

The folder is ``dekc-programs/`` in XLA's cache folder (``$DEKC_XLA_CACHE_DIR``); with
``DEKC_XLA_CACHE=0`` nothing is kept. It is held below :data:`MAX_BYTES`, oldest files first.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._jax import jax, xla_cache_dir, xla_cache_switched_off
from ._version import __version__
from .errors import DekcWarning
from .io import atomic_output

__all__ = ["MAX_BYTES", "call", "clear", "counts", "describe", "folder"]

#: the size at which the oldest kept programs are deleted
MAX_BYTES = 256 << 20
_MAGIC = b"dekc-program 1\n"
_CONSTANT = re.compile(r"_?[A-Z][A-Z0-9_]*")
_SIMPLE = (type(None), bool, int, float, str, bytes)
#: the modules whose constants every program's key holds (their code runs inside the programs)
_CORE = ("dekc.kernel", "dekc.moments", "dekc.series", "dekc.solver")

_loaded: dict = {}  # in this process: (fn, statics, structure, argument types) -> the compiled callable
_by_key: dict = {}  # in this process: the key of a kept program -> the compiled callable
_counts = {"read": 0, "written": 0, "rejected": 0}
_disabled: list = []  # set once JAX cannot serialize programs (its optional flatbuffers is missing)


def folder() -> Path | None:
    """Where programs are kept (``None``: not kept, as when XLA's cache is off)."""
    xla = xla_cache_dir()
    if xla is None or xla_cache_switched_off():
        return None
    return xla / "dekc-programs"


def call(fn: Callable, statics: tuple, args: tuple):
    """``fn(*statics, *args)``, where ``fn`` is jitted with ``statics`` as its leading static
    arguments and ``args`` are concrete (host or device arrays, Python scalars): from a kept
    program when there is one, otherwise compiled and kept. Traced arguments, or statics that
    cannot be described (:func:`describe`), take the plain call.

    A call that finds its program loaded in this process does nothing else (the host's work
    between two calls slows both: measured 0.3 ms a call with the folder and the argument types
    checked each time, against 0.13 ms for the plain call)."""
    leaves, structure = jax.tree_util.tree_flatten(args)
    memo = (
        fn,
        statics,
        structure,
        tuple((type(x), getattr(x, "shape", ()), getattr(x, "dtype", None)) for x in leaves),
    )
    compiled = _loaded.get(memo)
    if compiled is None:
        if _disabled or folder() is None or any(isinstance(x, jax.core.Tracer) for x in leaves):
            return fn(*statics, *args)
        compiled = _load_or_export(fn, statics, args, structure, tuple(_aval(x) for x in leaves))
        if compiled is None:
            return fn(*statics, *args)
        _loaded[memo] = compiled
    return compiled(*args)


def _aval(x) -> tuple:
    """``(shape, dtype, weak)`` of an argument as JAX types it (a Python scalar is weakly typed)."""
    if isinstance(x, (bool, int, float, complex)):
        return ((), np.result_type(type(x)).name if not isinstance(x, float) else "float64", True)
    return (tuple(np.shape(x)), np.dtype(x.dtype).name, bool(getattr(x, "weak_type", False)))


def _load_or_export(fn, statics, args, structure, avals):
    modules: set = set()
    description = describe((fn, statics), modules)
    if description is None:
        return None
    key = _key(description, modules, str(structure), avals)
    if key in _by_key:
        return _by_key[key]
    where = folder()
    assert where is not None
    path = where / f"{key[:40]}.program"
    try:
        from jax import export
    except ImportError:  # pragma: no cover - a JAX without jax.export
        _disabled.append(True)
        return None
    exported = _read(path, key, export, avals)
    if exported is None:
        try:
            exported = export.export(jax.jit(functools.partial(fn, *statics)))(*args)
        except Exception:
            return None
        try:
            payload = exported.serialize()
        except ImportError:  # JAX serializes with the optional flatbuffers package
            _disabled.append(True)
            return jax.jit(exported.call)
        _write(where, path, key, bytes(payload))
    compiled = _by_key[key] = jax.jit(exported.call)
    return compiled


def _read(path: Path, key: str, export, avals):
    """The program kept at ``path`` when it is exactly what was written for ``key`` and takes
    ``avals``; ``None`` otherwise (with a warning when the file was changed or corrupted)."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        raw = path.read_bytes()
    except OSError:
        return None
    head, _, rest = raw.partition(b"\n")
    stored_key, _, rest = rest.partition(b"\n")
    digest, _, payload = rest.partition(b"\n")
    intact = (
        head + b"\n" == _MAGIC
        and stored_key.decode("ascii", "replace") == key
        and digest.decode("ascii", "replace") == hashlib.sha256(payload).hexdigest()
    )
    exported = None
    if intact:
        try:
            exported = export.deserialize(bytearray(payload))
        except ImportError:  # JAX reads them with the optional flatbuffers package
            _disabled.append(True)
            return None
        except Exception:
            exported = None
    if exported is not None and _takes(exported, avals) and jax.default_backend() in exported.platforms:
        _counts["read"] += 1
        return exported
    _counts["rejected"] += 1
    warnings.warn(
        f"the kept program {path} was changed or corrupted since dekc wrote it; it is compiled again",
        DekcWarning,
        stacklevel=4,
    )
    return None


def _takes(exported, avals) -> bool:
    """Whether ``exported`` takes arguments of ``avals`` (shape and dtype, in order)."""
    ins = exported.in_avals
    return len(ins) == len(avals) and all(
        tuple(a.shape) == shape and np.dtype(a.dtype).name == dtype for a, (shape, dtype, _) in zip(ins, avals)
    )


def _write(where: Path, path: Path, key: str, payload: bytes) -> None:
    """Keep ``payload`` at ``path`` (atomically), then trim the folder to :data:`MAX_BYTES`; a
    folder that cannot be written only costs the compilation next time."""
    try:
        where.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as handle:
            handle.write(_MAGIC + key.encode() + b"\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n")
            handle.write(payload)
        _counts["written"] += 1
        files = [(p.stat().st_mtime, p.stat().st_size, p) for p in where.glob("*.program")]
        total = sum(size for _, size, _ in files)
        for _, size, old in sorted(files):
            if total <= MAX_BYTES:
                break
            old.unlink(missing_ok=True)
            total -= size
    except OSError:
        pass


def _key(description: str, modules: set, structure: str, avals) -> str:
    import jaxlib

    parts = [
        _MAGIC.decode(),
        __version__,
        _source_digest(),
        jax.__version__,
        getattr(jaxlib, "__version__", ""),
        jax.default_backend(),
        repr(jax.config.jax_enable_x64),  # type: ignore[attr-defined]
        repr(jax.config.jax_default_matmul_precision),  # type: ignore[attr-defined]
        _constants(modules | set(_CORE)),
        description,
        structure,
        repr(avals),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    """SHA-256 of the exact text of dekc's own modules."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(here.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _constants(modules: set) -> str:
    """The module-level constants (upper-case names with plain values) of ``modules`` (names),
    as they are now."""
    found = []
    for name in sorted(modules):
        module = sys.modules.get(name)
        if module is None:
            continue
        for attribute, value in sorted(vars(module).items()):
            if _CONSTANT.fullmatch(attribute) and _plain(value):
                found.append(f"{name}.{attribute}={value!r}")
    return "\n".join(found)


def _plain(value) -> bool:
    if isinstance(value, (tuple, frozenset)):
        return all(_plain(v) for v in value)
    return isinstance(value, _SIMPLE)


def describe(obj, modules: set | None = None) -> str | None:
    """``obj`` (a static argument of a compiled program) as a string that names what it computes,
    the same in every process; ``None`` when it cannot be described so. Plain values, tuples,
    named tuples, dataclasses of such, dtypes, ``functools.partial`` and functions: dekc's own or
    JAX's (by module and name; dekc's source is part of the key), or a generated module's (with
    the SHA-256 of its text), with their defaults and closures described too. The names of the
    dekc modules met are added to ``modules``."""
    modules = set() if modules is None else modules
    try:
        return _describe(obj, modules)
    except RecursionError:  # a structure that contains itself (a recursive closure)
        return None


def _describe(obj, modules: set) -> str | None:
    if isinstance(obj, _SIMPLE):
        return repr(obj)
    if isinstance(obj, np.dtype):
        return f"dtype({obj.name})"
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return _joined("tuple", obj, modules)
    if isinstance(obj, tuple):  # a named tuple
        return _joined(f"{type(obj).__module__}.{type(obj).__qualname__}", obj, modules, _is_dekc(type(obj).__module__))
    if isinstance(obj, functools.partial):
        parts = (obj.func, obj.args, tuple(sorted(obj.keywords.items())))
        return _joined("partial", parts, modules)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = tuple((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
        return _joined(
            f"{type(obj).__module__}.{type(obj).__qualname__}", fields, modules, _is_dekc(type(obj).__module__)
        )
    wrapped = getattr(obj, "__wrapped__", None)
    if wrapped is not None and not isinstance(obj, types.FunctionType):  # jax.jit(f) and the like
        inner = _describe(wrapped, modules)
        return None if inner is None else f"wrapped({type(obj).__name__}, {inner})"
    if isinstance(obj, types.FunctionType):
        return _function(obj, modules)
    return None


def _joined(label: str, items, modules: set, allowed: bool = True) -> str | None:
    if not allowed:
        return None
    parts = [_describe(item, modules) for item in items]
    return None if any(p is None for p in parts) else f"{label}({', '.join(parts)})"  # type: ignore[arg-type]


def _is_dekc(module_name: str) -> bool:
    return module_name == "dekc" or module_name.startswith(("dekc.", "dekc_"))


def _function(fn: types.FunctionType, modules: set) -> str | None:
    module_name = fn.__module__ or ""
    module = sys.modules.get(module_name)
    if module_name.startswith("dekc_"):  # generated: the exact text it was loaded from
        origin = getattr(module, "TEXT_DIGEST", None)
        if not isinstance(origin, str):
            return None
        where = f"{module_name}[{origin}]"
    elif _is_dekc(module_name) or module_name == "jax" or module_name.startswith(("jax.", "jaxlib.")):
        where = module_name
    else:
        return None
    cells = tuple(cell.cell_contents for cell in fn.__closure__ or ())
    extras = (fn.__defaults__ or (), tuple(sorted((fn.__kwdefaults__ or {}).items())), cells)
    if _is_dekc(module_name):
        modules.add(module_name)
    described = _describe(extras, modules)
    return None if described is None else f"{where}.{fn.__qualname__}{described}"


def counts() -> dict:
    """How many programs this process read from the folder, wrote to it, and found changed or
    corrupted there."""
    return dict(_counts)


def clear() -> None:
    """Forget the programs loaded in this process (the kept files stay)."""
    _loaded.clear()
    _by_key.clear()
