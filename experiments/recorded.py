"""Where the experiments write, and the guard that keeps a run from overwriting recorded results.

A folder holds *recorded results* when it contains the marker file ``RECORDED.txt``, which every
run without ``--quick`` writes when it finishes (it names the command), or, for folders from
before the marker, a CSV file whose first line is a ``# command:`` header without ``--quick``.

The rules (see ``experiments/README.md``):

* ``--quick`` writes by default to ``quick-results/<experiment>/`` under the current directory,
  never into the recorded folder ``experiments/results/<experiment>/``;
* a run without ``--quick`` writes by default to the recorded folder;
* any run whose output folder holds recorded results stops before computing anything, naming
  the folder, unless ``--overwrite`` is given; with ``--overwrite`` a full run replaces the record
  (and its marker), a quick run removes the marker first, since the folder no longer holds a
  full run.
"""

from __future__ import annotations

import time
from pathlib import Path

MARKER = "RECORDED.txt"
RESULTS = Path(__file__).resolve().parent / "results"
QUICK_RESULTS = Path("quick-results")


def default_out(experiment: str, quick: bool) -> Path:
    """``quick-results/<experiment>`` (relative to the current directory) for a quick run,
    ``experiments/results/<experiment>`` for a full one."""
    return QUICK_RESULTS / experiment if quick else RESULTS / experiment


def recorded_run(folder: Path) -> str | None:
    """The command of the full run whose results ``folder`` holds, or ``None`` when it holds none
    (``"unknown command"`` for a marker without a ``command:`` line)."""
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file():
        for line in marker.read_text(encoding="utf-8").splitlines():
            if line.startswith("command:"):
                return line.partition(":")[2].strip()
        return "unknown command"
    for csv_file in sorted(folder.glob("*.csv")) if folder.is_dir() else ():
        with open(csv_file, encoding="utf-8") as handle:
            first = handle.readline()
        if first.startswith("# command:") and "--quick" not in first.split():
            return first.partition(":")[2].strip()
    return None


def refusal(folder: Path, quick: bool, experiment: str) -> str | None:
    """The error message for writing a run into ``folder`` without ``--overwrite``, or ``None``
    when ``folder`` holds no recorded results."""
    command = recorded_run(folder)
    if command is None:
        return None
    held = f"{folder} holds the recorded results of a full run ({command}; see {folder / MARKER})"
    if quick:
        return (
            f"{held}, and a quick run would overwrite them. Write the quick run elsewhere with --out DIR "
            f"(without --out it goes to {default_out(experiment, True)}/ under the current directory), "
            "or pass --overwrite to replace the recorded results with it."
        )
    return f"{held}. Pass --overwrite to replace them with this run, or --out DIR to write it elsewhere."


def prepare(folder: Path, quick: bool, overwrite: bool, experiment: str, error) -> None:
    """Check ``folder`` before a run (``error(message)`` is called, e.g. ``parser.error``, when it
    holds recorded results and ``overwrite`` is false) and create it. With ``overwrite``, a quick
    run removes the marker: the folder will no longer hold a full run's results."""
    message = refusal(folder, quick, experiment)
    if message is not None and not overwrite:
        error(message)
        raise SystemExit(2)  # in case ``error`` returns
    folder.mkdir(parents=True, exist_ok=True)
    if quick and (folder / MARKER).exists():
        (folder / MARKER).unlink()


def mark_recorded(folder: Path, command: str) -> None:
    """Write the marker of a finished full run (``command``) into ``folder``."""
    (folder / MARKER).write_text(
        "Recorded results of a full run.\n"
        f"command: {command}\n"
        f"finished: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
        "A quick run (--quick) refuses to write into this folder, and so does another full run, "
        "unless it is given --overwrite.\n",
        encoding="utf-8",
    )
