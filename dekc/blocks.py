"""Gram matrices larger than memory: block by block into a zarr array on disk, or on a Dask cluster.

A Gram matrix is ``n`` scalar problems on its diagonal and then independent entries. A
:class:`dekc.kernel.GramPlan` (:meth:`dekc.Kernel.gram_plan`) solves the diagonal and fits the
start once, in O((n + m)·d) memory; each block of ``block × block`` entries is then solved on
its own from the plan (:meth:`dekc.Kernel.gram_block`). The blocks agree with the in-memory
:meth:`~dekc.Kernel.gram` within 1e-15 relative to ``√(K_ii K_jj)``, the diagonal to the last bit.
For kernels in closed form, T-step kernels and inputs of at most 63 columns the arithmetic per
entry is ``gram``'s and all but a rare entry are equal to the last bit (measured: all but 1 of
10.75 million; the entries left moving by the fast passes are finished by a program compiled for
the block's input arrays, which XLA may round differently). Wider inputs take their products
entry by entry rather than from one matrix product (measured difference at most 1.7e-16);
kernels with a Mehler series may choose another number of terms for a block than for the whole
matrix (measured 4.4e-16); both are far below the kernels' own tolerances.

:func:`gram_to_zarr` writes the matrix to a zarr array, one zarr chunk per block (memory: a few
blocks plus O(n)). It **resumes**: a block counts as done only once its values are on disk and
a record of their SHA-256 has been written after them; a rerun after an interruption (``kill
-9`` included) reads each recorded block back, checks its digest and computes again every block
without a record or whose bytes do not match. With ``client`` (a ``dask.distributed`` client or
a scheduler's address) the blocks are tasks on that cluster: each worker computes its blocks
and writes them itself (the path must then be one the workers can reach), the kernel travels in
the task as its sealed module text (:meth:`dekc.Kernel.__reduce__`), and the blocks of a worker
that is lost are computed again by the others. :func:`gram_dask` gives the same blocks as a lazy
``dask.array`` for any Dask scheduler.

Needs the ``large`` extra: ``pip install 'dekc[large]'`` (zarr, dask, distributed).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import validate
from ._version import __version__
from .errors import InputError
from .kernel import GramPlan, Kernel

__all__ = [
    "DEFAULT_BLOCK",
    "Block",
    "blocks_of",
    "cluster_client",
    "cluster_tasks",
    "gram_dask",
    "gram_to_zarr",
    "verify_store",
]

#: rows and columns of a block (and of the zarr array's chunks): 128 MiB of float64 values; a
#: block's computation holds about three times that
DEFAULT_BLOCK = 4096
#: the folder, inside the zarr store, of the blocks' records
RECORDS = "dekc-blocks"
#: version of the store's layout (its ``dekc`` attribute and records)
FORMAT = 1


def _extra(name: str):
    try:
        if name == "zarr":
            import zarr

            return zarr
        if name == "dask.array":
            import dask.array

            return dask.array
        import distributed

        return distributed
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError(f"dekc.blocks needs {name}, an optional dependency: pip install 'dekc[large]'") from None


@dataclasses.dataclass(frozen=True)
class Block:
    """Block ``(bi, bj)``: rows ``rows`` and columns ``cols`` of the matrix; ``mirror``: the
    block is also written transposed at ``(cols, rows)`` (a square matrix stores both
    triangles and solves only the upper one)."""

    bi: int
    bj: int
    rows: slice
    cols: slice
    mirror: bool
    #: a diagonal block of a square matrix (solved as a symmetric matrix)
    square: bool = False


def blocks_of(plan: GramPlan, block: int) -> list[Block]:
    """The blocks that cover the plan's matrix: every ``block × block`` block, or for a square
    matrix those on and above the diagonal (the others are their transposes)."""
    return _grid(plan.shape[-2:], block, plan.symmetric)


def _grid(shape, block: int, square: bool) -> list[Block]:
    n, m = shape
    out = []
    for bi in range(-(-n // block)):
        for bj in range(bi if square else 0, -(-m // block)):
            rows = slice(bi * block, min(n, (bi + 1) * block))
            cols = slice(bj * block, min(m, (bj + 1) * block))
            out.append(Block(bi, bj, rows, cols, square and bi != bj, square and bi == bj))
    return out


def verify_store(out: str | os.PathLike) -> dict:
    """Check a store written by :func:`gram_to_zarr`: every block's record against its bytes on
    disk (and its transpose). Returns ``{"blocks": total, "verified": count, "missing": [(bi, bj),
    ...]}``; ``missing`` lists the blocks a rerun would compute."""
    zarr = _extra("zarr")
    path = Path(os.fspath(out))
    try:
        array = zarr.open_array(store=str(path), mode="r")
        identity = dict(array.attrs)["dekc"]
    except Exception as exc:  # zarr raises several types for a missing or damaged store
        raise InputError(f"{path} is not a Gram matrix written by dekc ({type(exc).__name__}: {exc})") from None
    grid = _grid(identity["shape"][-2:], identity["block"], identity["square"])
    stack = len(identity["shape"]) == 3
    missing = [(blk.bi, blk.bj) for blk, done in zip(grid, _blocks_done(array, path, grid, stack)) if not done]
    return {"blocks": len(grid), "verified": len(grid) - len(missing), "missing": missing}


def _check_block(block) -> int:
    return validate.count(block, "block", minimum=64, maximum=1 << 16)


def _plan(kernel: Kernel, X, Y, params: dict) -> GramPlan:
    if not isinstance(kernel, Kernel):
        raise InputError(f"the first argument must be a dekc.Kernel (compile_kernel), got {type(kernel).__name__}")
    return kernel.gram_plan(X, Y, **params)


# -- one block --------------------------------------------------------------------------------------


def _block_values(kernel: Kernel, plan: GramPlan, rows: slice, cols: slice, block: int) -> np.ndarray:
    """A block's values; a short last block is padded to ``block`` inputs (the same programs)."""
    return np.asarray(kernel.gram_block(plan, rows, cols, pad=block))


def _region(rows: slice, cols: slice, stack: bool) -> tuple:
    return (slice(None), rows, cols) if stack else (rows, cols)


def _digest(values: np.ndarray) -> str:
    """SHA-256 of the values' float64 bytes in C order."""
    data = np.ascontiguousarray(values, dtype=np.float64)
    return hashlib.sha256(data.data.cast("B")).hexdigest()  # (the buffer itself, not a copy)


def _record_path(root: Path, blk: Block) -> Path:
    return root / RECORDS / f"{blk.bi}-{blk.bj}"


def _write_block(array, root: Path, blk: Block, values: np.ndarray) -> None:
    """The block's values (and their transpose), then, once they are written, its record: the
    SHA-256 of the block as stored (and of its transpose as stored)."""
    stack = values.ndim == 3
    array[_region(blk.rows, blk.cols, stack)] = values
    digests = [_digest(values)]
    if blk.mirror:
        mirrored = np.ascontiguousarray(np.swapaxes(values, -1, -2))
        array[_region(blk.cols, blk.rows, stack)] = mirrored
        digests.append(_digest(mirrored))
    record = _record_path(root, blk)
    temporary = record.with_name(record.name + f".{os.getpid()}.tmp")
    temporary.write_text("\n".join(digests) + "\n")
    os.replace(temporary, record)  # the record appears whole or not at all


def _block_done(array, root: Path, blk: Block, stack: bool) -> bool:
    """Whether the block's record exists and the values on disk (and their transpose) match it."""
    try:
        recorded = _record_path(root, blk).read_text().split()
    except (OSError, UnicodeDecodeError):
        return False
    if len(recorded) != (2 if blk.mirror else 1):
        return False
    regions = [(blk.rows, blk.cols)] + ([(blk.cols, blk.rows)] if blk.mirror else [])
    return all(_digest(np.asarray(array[_region(r, c, stack)])) == digest for (r, c), digest in zip(regions, recorded))


def _blocks_done(array, root: Path, grid: list[Block], stack: bool) -> list[bool]:
    """:func:`_block_done` of every block, read and hashed by a few threads (both release the GIL)."""
    with concurrent.futures.ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda blk: _block_done(array, root, blk, stack), grid))


def compute_and_write(kernel: Kernel, plan: GramPlan, path: str, blk: Block, block: int) -> str:
    """A cluster task: solve one block and write it into the zarr array at ``path``; returns the
    block's digest."""
    zarr = _extra("zarr")
    array = zarr.open_array(store=path, mode="r+")
    values = _block_values(kernel, plan, blk.rows, blk.cols, block)
    _write_block(array, Path(path), blk, values)
    return _digest(values)


# -- the store --------------------------------------------------------------------------------------


def _identity(kernel: Kernel, plan: GramPlan, block: int) -> dict:
    """What the store holds: it is resumed only when all of this is the same."""
    inputs = hashlib.sha256(np.ascontiguousarray(plan.X).tobytes())
    inputs.update(repr(plan.X.shape).encode())
    if plan.Y is not None:
        inputs.update(np.ascontiguousarray(plan.Y).tobytes())
        inputs.update(repr(plan.Y.shape).encode())
    params = {k: (list(v) if isinstance(v, tuple) else v if v is None else str(v)) for k, v in plan.params.items()}
    return {
        "format": FORMAT,
        "dekc_version": __version__,
        "kernel_input_hash": kernel.module.INPUT_HASH,
        "kernel_text_sha256": kernel.module.TEXT_DIGEST,
        "inputs_sha256": inputs.hexdigest(),
        "square": plan.symmetric,
        "shape": list(plan.shape),
        "block": block,
        "params": params,
    }


def _open_store(zarr, path: Path, identity: dict, shape: tuple, chunks: tuple, overwrite: bool):
    """The zarr array at ``path``: created, or resumed when it holds this same matrix."""
    if path.is_symlink():
        raise InputError(f"{path} is a symbolic link; give the folder it points to, or another output path")
    if path.exists():
        if not (path / "zarr.json").is_file():
            raise InputError(
                f"{path} exists and is not a zarr store; choose another output path (a folder ending in .zarr)"
            )
        try:
            array = zarr.open_array(store=str(path), mode="r+")
            found = dict(array.attrs).get("dekc")
        except Exception as exc:  # a damaged store: zarr raises several types
            found, array = None, None
            reason = f" ({type(exc).__name__}: {exc})"
        else:
            reason = ""
        if found == identity:
            return array
        if found is None and overwrite:  # someone else's zarr data: never removed
            raise InputError(
                f"{path} is a zarr store that dekc did not write{reason}; it is not replaced even with "
                "overwrite=True: remove it yourself or choose another path"
            )
        if not overwrite:
            what = (
                "is not a dekc Gram matrix" + reason
                if found is None
                else "holds another Gram matrix ("
                + ", ".join(k for k in identity if found.get(k) != identity[k])
                + " differ)"
            )
            raise InputError(f"{path} {what}; pass overwrite=True (--overwrite) to replace it, or choose another path")
        shutil.rmtree(path)
    array = zarr.create_array(
        store=str(path),
        shape=shape,
        chunks=chunks,
        dtype="float64",
        fill_value=np.nan,  # never written reads as NaN, not as a plausible 0
        compressors=None,  # kernel values barely compress; blocks are written and read at disk speed
        attributes={"dekc": identity, "dekc_complete": False, "dekc_runs": []},
    )
    (path / RECORDS).mkdir(exist_ok=True)
    return array


def _progress(progress, total: int):
    """``(update(entries_done), close())`` for ``progress`` (True: a bar; a callable; None/False)."""
    if progress is None or progress is False:
        return (lambda done: None), (lambda: None)
    if callable(progress) and progress is not True:
        return (lambda done: progress(done, total)), (lambda: None)
    if progress is not True:
        raise InputError(f"progress must be True, False, None or a callable(done, total), got {progress!r}")
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="entry", unit_scale=True, desc="Gram blocks")

    def update(done):
        bar.update(done - bar.n)

    return update, bar.close


def gram_to_zarr(
    kernel: Kernel,
    X: ArrayLike,
    Y: ArrayLike | None = None,
    *,
    out: str | os.PathLike,
    block: int = DEFAULT_BLOCK,
    client: Any = None,
    progress: bool | Callable[[int, int], Any] | None = None,
    overwrite: bool = False,
    **params: Any,
) -> Any:
    """Write ``kernel.gram(X, Y, **params)`` into the zarr array ``out`` (a folder), block by block,
    and return the array (``zarr.Array``, float64, chunks of ``block × block``).

    Memory: a few blocks (``block² × 8`` bytes each) plus O((n + m)·d), whatever ``n``. A rerun
    with the same kernel, inputs, parameters and ``block`` resumes: blocks whose record and bytes
    check are kept, the others are computed (see the module's notes). A store that holds another
    matrix raises :class:`dekc.InputError` unless ``overwrite=True``. ``client``: a
    ``distributed.Client`` or a scheduler address (``"tcp://host:8786"``): the blocks are
    computed by that cluster's workers, which write them to ``out`` themselves. ``progress``: True
    shows a bar over the entries, a callable is called as ``progress(done, total)`` after each block.
    ``params``: those of :meth:`dekc.Kernel.gram` (``psi0`` ``"input"`` or ``"constant"``).

    The array's attribute ``dekc`` names what it holds; ``dekc_complete`` is true once every block
    is written, and ``dekc_runs`` lists each run's computed and reused blocks and seconds. One run
    at a time may write a store.
    """
    zarr = _extra("zarr")
    block = _check_block(block)
    if not isinstance(overwrite, bool):
        raise InputError(f"overwrite must be True or False, got {overwrite!r}")
    path = Path(os.fspath(out))
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: the folder {path.parent} does not exist")
    started = time.perf_counter()
    plan = _plan(kernel, X, Y, params)
    stack = len(plan.shape) == 3
    chunks = ((plan.shape[0],) if stack else ()) + (block, block)
    identity = _identity(kernel, plan, block)
    array = _open_store(zarr, path, identity, plan.shape, chunks, overwrite)
    for stale in (path / RECORDS).glob("*.tmp"):  # records an interrupted run was writing
        stale.unlink(missing_ok=True)
    grid = blocks_of(plan, block)
    todo = [blk for blk, done in zip(grid, _blocks_done(array, path, grid, stack)) if not done]
    # entries solved (a square matrix: its upper triangle), for the progress report
    total = sum(_entries(blk) for blk in grid)
    done = total - sum(_entries(blk) for blk in todo)
    update, close = _progress(progress, total)
    update(done)
    try:
        if client is None:
            _run_local(kernel, plan, array, path, todo, done, update, block)
        else:
            _run_cluster(kernel, plan, path, todo, done, update, client, block)
    finally:
        close()
    runs = list(array.attrs.get("dekc_runs", []))
    runs.append(
        {
            "computed_blocks": len(todo),
            "reused_blocks": len(grid) - len(todo),
            "seconds": round(time.perf_counter() - started, 3),
            "where": "local" if client is None else "cluster",
        }
    )
    array.attrs.update({"dekc_runs": runs, "dekc_complete": True})
    return array


def _entries(blk: Block) -> int:
    r, c = blk.rows.stop - blk.rows.start, blk.cols.stop - blk.cols.start
    return r * (r + 1) // 2 if blk.square else r * c


def _run_local(kernel, plan, array, path, todo, done, update, block) -> None:
    """Blocks one after another; each one's write overlaps the next one's solve."""
    with concurrent.futures.ThreadPoolExecutor(1) as writer:
        pending = None
        for blk in todo:
            values = _block_values(kernel, plan, blk.rows, blk.cols, block)
            if pending is not None:
                done += pending[1]
                pending[0].result()
                update(done)
            pending = (writer.submit(_write_block, array, path, blk, values), _entries(blk))
        if pending is not None:
            pending[0].result()
            update(done + pending[1])


def cluster_client(client: Any) -> tuple[Any, bool]:
    """``(client, owned)``: a ``distributed.Client`` as given, or one connected to the scheduler
    address given (``owned``: the caller closes it)."""
    distributed = _extra("distributed")
    if isinstance(client, distributed.Client):
        return client, False
    if isinstance(client, str):
        try:
            return distributed.Client(client, timeout="30s"), True
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {client!r}: {exc}") from None
    raise InputError(f"client must be a distributed.Client or a scheduler address, got {type(client).__name__}")


def cluster_tasks(client: Any, fn: Callable, shared: list, calls: list[tuple]) -> Iterator[tuple[int, Any]]:
    """Run ``fn(*shared, *call)`` for each of ``calls`` on a Dask cluster and yield ``(index of the
    call, result)`` as they finish. ``shared`` (the kernel, the plan) is sent to every worker once;
    a lost worker's tasks are computed again by the others; the first task that fails cancels
    the rest and its error is raised here. ``client``: as :func:`cluster_client`."""
    distributed = _extra("distributed")
    client, owned = cluster_client(client)
    try:
        on_workers = client.scatter(shared, broadcast=True, hash=False)
        futures = [client.submit(fn, *on_workers, *call, pure=False, retries=2) for call in calls]
        index = {f.key: k for k, f in enumerate(futures)}
        try:
            for future in distributed.as_completed(futures):
                result = future.result()  # a task's error is raised here
                future.release()
                yield index[future.key], result
        except BaseException:
            client.cancel(futures)  # the other tasks stop too (blocks already written keep their records)
            raise
    finally:
        if owned:
            client.close()


def _run_cluster(kernel, plan, path, todo, done, update, client, block) -> None:
    calls = [(str(path), blk, block) for blk in todo]
    for k, _ in cluster_tasks(client, compute_and_write, [kernel, plan], calls):
        done += _entries(todo[k])
        update(done)


# -- a lazy dask array --------------------------------------------------------------------------------


def gram_dask(
    kernel: Kernel, X: ArrayLike, Y: ArrayLike | None = None, *, block: int = DEFAULT_BLOCK, **params: Any
) -> Any:
    """``kernel.gram(X, Y, **params)`` as a lazy ``dask.array`` of ``block × block`` chunks (for a
    square matrix the blocks below the diagonal are the transposes of those above). The diagonal
    is solved and the start fitted here, once; each task solves one block from them. Compute it
    with any scheduler (``.compute()``, a ``distributed.Client``), or store it
    (``dask.array.to_zarr``; :func:`gram_to_zarr` also resumes)."""
    da = _extra("dask.array")
    import dask

    block = _check_block(block)
    plan = _plan(kernel, X, Y, params)
    token = hashlib.sha256(json.dumps(_identity(kernel, plan, block), sort_keys=True).encode()).hexdigest()[:16]
    kernel_d = dask.delayed(kernel, name=f"dekc-kernel-{token}", traverse=False)
    plan_d = dask.delayed(plan, name=f"dekc-plan-{token}", traverse=False)
    compute = dask.delayed(_block_values, pure=True)
    n, m = plan.shape[-2:]
    lead = plan.shape[:-2]
    upper: dict[tuple[int, int], Any] = {}
    for blk in blocks_of(plan, block):
        shape = lead + (blk.rows.stop - blk.rows.start, blk.cols.stop - blk.cols.start)
        values = compute(
            kernel_d, plan_d, blk.rows, blk.cols, block, dask_key_name=f"dekc-block-{token}-{blk.bi}-{blk.bj}"
        )
        upper[blk.bi, blk.bj] = da.from_delayed(values, shape=shape, dtype=np.float64)
    grid = []
    for bi in range(-(-n // block)):
        row = []
        for bj in range(-(-m // block)):
            row.append(upper[bi, bj] if (bi, bj) in upper else da.swapaxes(upper[bj, bi], -1, -2))
        grid.append(row)
    return da.block(grid)
