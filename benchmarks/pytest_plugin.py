"""
What the ``pytest11`` plugin costs a pytest session that never uses its fixtures.

A bare session (one trivial test in an empty directory, no conftest, no config) runs in a fresh
process, alternating between three setups, ``--rounds`` times each:

* ``not loaded`` (the baseline): ``-p no:dashscope_emulator``, as if the provider were not installed;
* ``plugin``: the entry point as installed (the shipped, lazy plugin);
* ``eager``: the plugin plus ``-p airflow_provider_dashscope_batch.emulator.server``, which imports the
  emulator the way the plugin did before it became lazy.

Reported: the median wall time of the whole session against the baseline; the median time a fresh
process that has imported pytest spends importing what the setup adds (the plugin's own cost, without
the noise of a whole session); how many of the provider's modules and whether the emulator's web
stack (uvicorn, starlette) the session imported.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line

SETUPS = {
    "not loaded": ["-p", "no:dashscope_emulator"],
    "plugin": [],
    "eager": ["-p", "airflow_provider_dashscope_batch.emulator.server"],
}


#: The bare session's one test reports what the session imported (pytest's assertion rewriting loads
#: plugins past ``-X importtime``, so the imports are read from ``sys.modules`` instead).
BARE_TEST = """
import sys


def test_nothing():
    provider = [m for m in sys.modules if m.startswith("airflow_provider_dashscope_batch")]
    web = [m for m in ("uvicorn", "starlette") if m in sys.modules]
    print(f"\\nIMPORTED {len(provider)} {','.join(web) or '-'}")
"""


def _session(directory: Path, options: list[str]) -> tuple[float, int, str]:
    """One bare pytest session: (wall seconds, provider modules imported, web stack imported)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *options],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"pytest failed ({options}):\n{done.stdout[-2000:]}")
    _, count, web = next(line for line in done.stdout.splitlines() if line.startswith("IMPORTED ")).split()
    return wall, int(count), web


#: What each setup imports on top of pytest (timed in a fresh process that has imported pytest).
IMPORTS = {
    "not loaded": [],
    "plugin": ["airflow_provider_dashscope_batch.emulator.pytest_plugin"],
    "eager": [
        "airflow_provider_dashscope_batch.emulator.pytest_plugin",
        "airflow_provider_dashscope_batch.emulator.server",
    ],
}


def _import_ms(modules: list[str]) -> float:
    """Milliseconds a fresh process that has imported pytest spends importing ``modules``."""
    code = (
        "import importlib, time, pytest\n"
        "t = time.perf_counter()\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print((time.perf_counter() - t) * 1000)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pytest-") as tmp:
        directory = Path(tmp)
        (directory / "test_bare.py").write_text(BARE_TEST)
        results: dict[str, list[tuple[float, int, str]]] = {name: [] for name in SETUPS}
        imports: dict[str, list[float]] = {name: [] for name in SETUPS}
        order = list(SETUPS)
        shuffle = random.Random(25).shuffle
        for _ in range(
            args.rounds
        ):  # interleaved, in a shuffled order, so load changes hit every setup alike
            shuffle(order)
            for name in order:
                options = SETUPS[name]
                results[name].append(_session(directory, options))
                imports[name].append(_import_ms(IMPORTS[name]))
    print(machine_line())
    print(f"bare pytest session, median of {args.rounds} rounds; baseline: not loaded")
    print(
        f"{'setup':>11} | {'session s':>9} | {'vs baseline':>11} | {'import ms':>9} | "
        f"{'provider modules':>16} | web stack"
    )
    print("-" * 84)
    base = statistics.median(w for w, _, _ in results["not loaded"])
    for name, runs in results.items():
        wall = statistics.median(w for w, _, _ in runs)
        _, modules, web = runs[-1]
        imported = statistics.median(imports[name])
        print(f"{name:>11} | {wall:>9.3f} | {wall / base:>10.2f}x | {imported:>9.1f} | {modules:>16} | {web}")


if __name__ == "__main__":
    main()
