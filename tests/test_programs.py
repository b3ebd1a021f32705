"""Compiled programs kept across processes (dekc.programs): read back, checked, never trusted
when changed, and giving exactly the values of a process that compiles everything itself."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dekc import programs

_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    import dekc
    from dekc import programs
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    X = np.random.default_rng(5).normal(size=(300, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        K = ker.gram(X, lam=2.0)
        K5 = ker.gram(X, lam=1.5, steps=5)
    np.save(sys.argv[1], np.stack([K, K5]))
    print(json.dumps({**programs.counts(), "warnings": [str(w.message) for w in caught]}))
""")


def _run(tmp_path, out_name, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(DEKC_XLA_CACHE_DIR=str(tmp_path / "xla"), **env_extra)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / out_name)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), np.load(tmp_path / out_name)


def test_kept_programs_are_read_back_checked_and_give_the_same_values(tmp_path):
    """A second process reads every program the first one kept; a changed file is rejected with a
    warning and compiled again; every process gives the values of one that keeps nothing."""
    first, values = _run(tmp_path, "first.npy")
    kept = sorted((tmp_path / "xla" / "dekc-programs").glob("*.program"))
    assert first["written"] == len(kept) >= 3 and first["read"] == 0  # diagonal, passes, moving, T steps
    reference = _run(tmp_path, "plain.npy", DEKC_XLA_CACHE="0")[1]  # nothing kept: everything traced
    np.testing.assert_array_equal(values, reference)

    second, again = _run(tmp_path, "second.npy")
    assert second["read"] == len(kept) and second["written"] == 0 and not second["warnings"]
    np.testing.assert_array_equal(again, reference)

    damaged = kept[0]
    raw = bytearray(damaged.read_bytes())
    raw[-100] ^= 0xFF  # one byte of the program itself
    damaged.write_bytes(bytes(raw))
    third, once_more = _run(tmp_path, "third.npy")
    assert third["rejected"] == 1 and third["written"] == 1 and third["read"] == len(kept) - 1
    assert any("changed or corrupted" in message for message in third["warnings"])
    np.testing.assert_array_equal(once_more, reference)
    assert damaged.read_bytes() != bytes(raw)  # replaced by a sound copy


def _outer(scale):
    return lambda x: x * scale


def test_descriptions_name_what_a_static_argument_computes():
    """Functions are described by module and name with what they close over; anything that
    cannot be described the same way in another process is not described at all."""
    from dekc import solver

    assert programs.describe(solver.pow2_at_least) == programs.describe(solver.pow2_at_least)
    assert programs.describe((1, 2.5, "a", None)) == "tuple(1, 2.5, 'a', None)"
    partial = functools.partial(solver.pow2_at_least, 3)
    assert "partial(" in programs.describe(partial) and "3" in programs.describe(partial)
    assert programs.describe(functools.partial(solver.pow2_at_least, 4)) != programs.describe(partial)
    assert programs.describe(object()) is None
    assert programs.describe(np.zeros(3)) is None  # data, not a description
    assert programs.describe(_outer(2.0)) is None  # a function of this test module, not dekc's
    assert programs.describe((solver.pow2_at_least, object())) is None  # one part is enough


def test_a_function_outside_dekc_takes_the_plain_call(tmp_path, monkeypatch):
    """``call`` with a static argument it cannot describe runs the plain jitted call and keeps
    nothing."""
    import jax

    monkeypatch.setenv("DEKC_XLA_CACHE", "1")
    if programs.folder() is None:
        pytest.skip("no XLA cache folder configured")
    before = programs.counts()

    @functools.partial(jax.jit, static_argnums=0)
    def apply(fn, x):
        return fn(x)

    out = programs.call(apply, (_outer(3.0),), (np.arange(4.0),))
    np.testing.assert_array_equal(np.asarray(out), 3.0 * np.arange(4.0))
    assert programs.counts() == before
