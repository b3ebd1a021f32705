"""Gram matrices in blocks (dekc.blocks): the blocks of a plan give gram's values, a zarr store
resumes after kill -9 and never trusts a damaged block, and a Dask cluster (several worker
processes, one of them killed mid-run) gives the same matrix."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dekc
from dekc import InputError, blocks
from dekc.cli import main as cli_main

zarr = pytest.importorskip("zarr")
distributed = pytest.importorskip("distributed")

RELU = dict(reparam="relu")


@pytest.fixture(scope="module")
def relu():
    return dekc.compile_kernel("gaussian", **RELU)


def _inputs(n, d=4, seed=3):
    return np.random.default_rng(seed).normal(size=(n, d))


def _relative(A, K):
    """max |A − K| / √(K_ii K_jj) (square) or / max |K| (rectangular)."""
    if K.shape[-1] == K.shape[-2]:
        d = np.sqrt(np.abs(np.diagonal(K, axis1=-2, axis2=-1)))
        scale = d[..., :, None] * d[..., None, :]
    else:
        scale = np.max(np.abs(K))
    return float(np.max(np.abs(A - K) / scale))


def _assembled(kernel, plan, block):
    out = np.full(plan.shape, np.nan)
    for blk in blocks.blocks_of(plan, block):
        values = kernel.gram_block(plan, blk.rows, blk.cols, pad=block)
        out[..., blk.rows, blk.cols] = values
        if blk.mirror:
            out[..., blk.cols, blk.rows] = np.swapaxes(values, -1, -2)
    return out


# -- the blocks of a plan ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, m, d, block, kwargs",
    [
        (800, None, 4, 256, {}),  # fitted start (> 2^18 entries), partial last blocks
        (500, 300, 4, 128, {}),  # rectangular
        # wide inputs: products entry by entry in the blocks
        pytest.param(300, None, 80, 128, {}, marks=pytest.mark.slow),
        (400, None, 4, 192, dict(steps=(1, 4), lam=1.5)),  # a stack of T-step kernels
        pytest.param(300, None, 4, 128, dict(psi0="constant", diagonal="limit"), marks=pytest.mark.slow),
    ],
)
def test_blocks_give_grams_values(relu, n, m, d, block, kwargs):
    X = _inputs(n, d)
    Y = None if m is None else _inputs(m, d, seed=4)
    K = relu.gram(X, Y, **kwargs)
    plan = relu.gram_plan(X, Y, **kwargs)
    out = _assembled(relu, plan, block)
    assert out.shape == K.shape
    assert _relative(out, K) <= 1e-15
    # the diagonal is solved once for the whole matrix: exactly gram's
    if m is None:
        assert np.array_equal(np.diagonal(out, axis1=-2, axis2=-1), np.diagonal(K, axis1=-2, axis2=-1))
    if d <= 63:  # the same arithmetic as gram, entry by entry (a few entries may round differently)
        assert np.mean(out == K) >= 0.999


def test_identical_inputs_in_different_blocks(relu):
    X = _inputs(400)
    X[[150, 390]] = X[10]  # the same input in three blocks
    K = relu.gram(X)
    out = _assembled(relu, relu.gram_plan(X), 128)
    assert _relative(out, K) <= 1e-15
    for i, j in ((10, 150), (10, 390), (150, 390)):  # identical inputs take the diagonal value
        assert out[i, j] == out[j, i] == out[10, 10]


def test_plan_is_small_and_fitted(relu):
    X = _inputs(800)
    plan = relu.gram_plan(X)
    assert plan.fit is not None  # a matrix of 320k entries starts from the fit, as gram does
    assert plan.ax.shape == (1, 800) and plan.shape == (800, 800)
    assert plan.ax.nbytes + plan.X.nbytes < 100_000  # O(n·d), not O(n²)


def test_plan_and_block_errors(relu):
    X = _inputs(50)
    with pytest.raises(InputError, match="psi0"):
        relu.gram_plan(X, psi0=np.eye(50))
    plan = relu.gram_plan(X)
    with pytest.raises(InputError, match="rows"):
        relu.gram_block(plan, slice(0, 10, 2), slice(0, 10))
    with pytest.raises(InputError, match="selects no input"):
        relu.gram_block(plan, slice(60, 70), slice(0, 10))
    with pytest.raises(InputError, match="GramPlan"):
        relu.gram_block("plan", slice(0, 10), slice(0, 10))
    with pytest.raises(InputError, match="Kernel"):
        blocks.gram_to_zarr("relu", X, out="K.zarr")
    with pytest.raises(InputError, match="block"):
        blocks.gram_dask(relu, X, block=10)


def test_kernel_pickles_as_its_sealed_text(relu):
    import pickle

    from dekc import CacheError
    from dekc.compiler import kernel_from_text

    data = pickle.dumps(relu)
    assert len(data) < 50_000
    again = pickle.loads(data)
    X = _inputs(40)
    assert np.array_equal(again.gram(X), relu.gram(X))
    assert again.sigma == relu.sigma  # the link is derived again on demand
    tampered = relu.source.replace("import jax", "import os, jax", 1)
    with pytest.raises(CacheError, match="does not verify"):
        kernel_from_text(tampered, relu.module.INPUT_HASH, relu.family)


# -- the zarr store ----------------------------------------------------------------------------------


def test_zarr_store_matches_and_is_reused(relu, tmp_path):
    X = _inputs(600)
    K = relu.gram(X)
    path = tmp_path / "K.zarr"
    seen = []
    array = blocks.gram_to_zarr(relu, X, out=path, block=256, progress=lambda done, total: seen.append((done, total)))
    assert array.chunks == (256, 256)
    assert _relative(array[:], K) <= 1e-15
    assert seen[-1][0] == seen[-1][1] == 600 * 601 // 2  # every entry of the upper triangle
    assert array.attrs["dekc_complete"] is True
    again = blocks.gram_to_zarr(relu, X, out=path, block=256)
    assert again.attrs["dekc_runs"][-1]["computed_blocks"] == 0
    assert again.attrs["dekc_runs"][-1]["reused_blocks"] == 6
    # another matrix in the same place: refused, unless asked to overwrite
    with pytest.raises(InputError, match="another Gram matrix"):
        blocks.gram_to_zarr(relu, X, out=path, block=256, lam=3.0)
    replaced = blocks.gram_to_zarr(relu, X, out=path, block=256, lam=3.0, overwrite=True)
    assert _relative(replaced[:], relu.gram(X, lam=3.0)) <= 1e-15
    assert len(replaced.attrs["dekc_runs"]) == 1
    other = tmp_path / "notes.zarr"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="not a zarr store"):
        blocks.gram_to_zarr(relu, X, out=other, block=256, overwrite=True)
    assert (other / "mine.txt").read_text() == "keep"
    # someone else's zarr array is not replaced either, and a link is not followed
    foreign = tmp_path / "foreign.zarr"
    zarr.create_array(store=str(foreign), shape=(3,), dtype="float64")
    with pytest.raises(InputError, match="did not write"):
        blocks.gram_to_zarr(relu, X, out=foreign, block=256, overwrite=True)
    assert (foreign / "zarr.json").is_file()
    (tmp_path / "link.zarr").symlink_to(path)
    with pytest.raises(InputError, match="symbolic link"):
        blocks.gram_to_zarr(relu, X, out=tmp_path / "link.zarr", block=256, lam=3.0)


def test_rectangular_and_steps_stores(relu, tmp_path):
    X, Y = _inputs(300), _inputs(200, seed=8)
    array = blocks.gram_to_zarr(relu, X, Y, out=tmp_path / "XY.zarr", block=128)
    assert _relative(array[:], relu.gram(X, Y)) <= 1e-15
    stack = blocks.gram_to_zarr(relu, X, out=tmp_path / "T.zarr", block=128, steps=(2, 5), lam=1.5)
    assert stack.shape == (2, 300, 300) and stack.chunks == (2, 128, 128)
    assert _relative(stack[:], relu.gram(X, steps=(2, 5), lam=1.5)) <= 1e-15


_KILLED = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import dekc
    from dekc import blocks
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    X = np.random.default_rng(3).normal(size=(700, 4))
    calls = []
    def progress(done, total):
        calls.append(done)
        if len(calls) == 4:  # the first report, then three blocks written
            os.kill(os.getpid(), signal.SIGKILL)
    blocks.gram_to_zarr(ker, X, out=sys.argv[1], block=128, progress=progress)
""")


def test_resume_after_kill_and_damage(relu, tmp_path):
    path = tmp_path / "K.zarr"
    done = subprocess.run([sys.executable, "-c", _KILLED, str(path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr
    X = _inputs(700)
    grid = blocks.blocks_of(relu.gram_plan(X), 128)
    records = sorted(p.name for p in (path / blocks.RECORDS).iterdir() if not p.name.endswith(".tmp"))
    assert 3 <= len(records) < len(grid)
    array = zarr.open_array(store=str(path), mode="r")
    assert array.attrs["dekc_complete"] is False
    # damage a recorded block's bytes and remove another's record: both are computed again
    first, second = records[0], records[1]
    bi, bj = (int(v) for v in first.split("-"))
    chunk = path / "c" / str(bi) / str(bj)  # zarr's default chunk keys
    raw = bytearray(chunk.read_bytes())
    raw[100] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    (path / blocks.RECORDS / second).unlink()
    resumed = blocks.gram_to_zarr(relu, X, out=path, block=128)
    run = resumed.attrs["dekc_runs"][-1]
    assert run["reused_blocks"] == len(records) - 2
    assert run["computed_blocks"] == len(grid) - len(records) + 2
    assert _relative(resumed[:], relu.gram(X)) <= 1e-15
    assert not np.isnan(resumed[:]).any()


def test_cli_writes_zarr(relu, tmp_path, capsys):
    data = tmp_path / "X.npy"
    np.save(data, _inputs(300))
    out = tmp_path / "K.zarr"
    args = ["gram", str(data), "gaussian", "--reparam", "relu", "-o", str(out), "--block", "128", "-q"]
    assert cli_main(args) == 0
    assert "6 computed here, 0 kept" in capsys.readouterr().out
    assert cli_main(args) == 0
    assert "0 computed here, 6 kept" in capsys.readouterr().out
    assert _relative(zarr.open_array(store=str(out))[:], relu.gram(_inputs(300))) <= 1e-15
    assert cli_main([*args[:-3], "--block", "64", "-q"]) == 2
    assert "another Gram matrix" in capsys.readouterr().err
    assert (
        cli_main(["gram", str(data), "gaussian", "--reparam", "relu", "-o", str(tmp_path / "K.npy"), "--block", "64"])
        == 2
    )


# -- a Dask cluster of worker processes -------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client


def test_cluster_gives_the_same_matrix(relu, cluster, tmp_path, capsys):
    X = _inputs(600)
    K = relu.gram(X)
    local = _assembled(relu, relu.gram_plan(X), 128)
    array = blocks.gram_to_zarr(relu, X, out=tmp_path / "K.zarr", block=128, client=cluster)
    # every block is computed by a worker process from the shipped plan: the local blocks' bits
    assert np.array_equal(array[:], local)
    assert _relative(array[:], K) <= 1e-15
    lazy = blocks.gram_dask(relu, X, block=128)
    assert lazy.chunks[0] == (128, 128, 128, 128, 88)
    assert np.array_equal(lazy.compute(scheduler=cluster.get), local)
    # the command line, on the cluster's scheduler
    data = tmp_path / "X.npy"
    np.save(data, X)
    address = cluster.scheduler.address
    out = tmp_path / "cli.zarr"
    args = ["gram", str(data), "gaussian", "--reparam", "relu", "-o", str(out), "--block", "128", "-q"]
    assert cli_main([*args, "--scheduler", address]) == 0
    assert f"15 computed on {address}" in capsys.readouterr().out
    assert np.array_equal(zarr.open_array(store=str(out))[:], local)


def test_a_killed_worker_loses_nothing(relu, cluster, tmp_path):
    X = _inputs(700, seed=11)
    local = _assembled(relu, relu.gram_plan(X), 64)
    victim = next(iter(cluster.run(os.getpid).values()))
    reports = []

    def progress(done, total):
        reports.append(done)
        if len(reports) == 4:  # three blocks done: one worker dies mid-run
            os.kill(victim, signal.SIGKILL)

    array = blocks.gram_to_zarr(relu, X, out=tmp_path / "K.zarr", block=64, client=cluster, progress=progress)
    assert len(reports) > 4
    assert victim not in cluster.run(os.getpid).values()
    assert np.array_equal(array[:], local)
    assert array.attrs["dekc_complete"] is True
    assert len(list((tmp_path / "K.zarr" / blocks.RECORDS).iterdir())) == len(blocks.blocks_of(relu.gram_plan(X), 64))


def test_nystrom_on_the_cluster(relu, cluster):
    from dekc.nystrom import NystromMap, choose_landmarks

    X = _inputs(900)
    y = np.sin(X[:, 0])
    fmap = NystromMap(relu, choose_landmarks(X, 60), dict(lam=2.0)).fit()
    here = fmap.normal_equations(X, y, block=200)
    there = fmap.normal_equations(X, y, block=200, client=cluster)
    for a, b in zip(here, there):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * np.abs(a).max())
