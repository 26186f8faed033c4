"""Load benchmark: do the verdicts hold on a busy machine, and which bounds come close?

Runs a chosen part of the matrix twice, first on an idle machine and then while every
CPU is kept busy (`stress-ng --cpu N` where it is installed, else N spinning processes;
N = nproc), each into its own results directory, and prints:
  verdicts  every test whose verdict differs between the two runs (the goal: none);
  waits     the harness's waits that used more than half their bound in either run
            (harness/wait.py writes them to results/waits.jsonl), by name: how often,
            the largest share of the bound used, and whether one ran out;
  wall      each run's wall time.

    .venv/bin/python benchmarks/load.py [--results DIR] [--load auto|stress-ng|spin] \
        -- -k "psci or s2idle" --kernel debian:6.12 --arch arm64 -n 1
    .venv/bin/python benchmarks/load.py --report DIR      # read two runs that happened

The arguments after `--` go to `pytest tests/e2e` (run it under the e2e lock: it boots).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from vdiff import verdicts  # the one junit id -> outcome reader

from harness.results.runs import latest

RUNS = ("idle", "loaded")


# ------------------------------------------------------------------ reading (pure)

def changed(idle: dict[str, str], loaded: dict[str, str]) -> list[tuple[str, str, str]]:
    """(id, idle, loaded) for each test whose verdict differs ('-': not run)."""
    return [(t, idle.get(t, "-"), loaded.get(t, "-")) for t in sorted(set(idle) | set(loaded))
            if idle.get(t, "-") != loaded.get(t, "-")]


def read_waits(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def close_calls(runs: dict[str, list[dict]]) -> list[dict]:
    """Per wait name: in each run how many times it passed half its bound, the largest
    share used, whether it ran out (met False: a timeout, or the watchdog ended it), its
    bound and a test it happened in; the worst first."""
    rows: dict[str, dict] = {}
    for run, recs in runs.items():
        for r in recs:
            row = rows.setdefault(r["what"], {"what": r["what"], "where": r.get("where"),
                                              "bound_s": r["bound_s"], "test": r.get("test"),
                                              **{run_: {"n": 0, "share": 0.0, "ran_out": 0}
                                                 for run_ in runs}})
            cell = row[run]
            cell["n"] += 1
            cell["share"] = max(cell["share"], r["share"])
            cell["ran_out"] += not r["met"]
            row["bound_s"] = max(row["bound_s"], r["bound_s"])
    return sorted(rows.values(), key=lambda row: -max(row[r]["share"] for r in runs))


def _cell(c: dict) -> str:
    if not c["n"]:
        return "-"
    return f"{c['n']}x, max {c['share']:.0%}" + (f", {c['ran_out']} ran out" if c["ran_out"]
                                                  else "")


def render(idle: dict[str, str], loaded: dict[str, str], waits: dict[str, list[dict]],
           walls: dict[str, float | None], command: str | None = None) -> str:
    """The markdown report (docs/figures.md takes it as it is)."""
    out = []
    if command:
        out += [f"`{command}`", ""]
    out += ["| run | tests | PASS | FAIL | ERROR | SKIP | XFAIL | wall |",
            "|---|---|---|---|---|---|---|---|"]
    for name, v in (("idle", idle), ("loaded", loaded)):
        counts = [sum(1 for x in v.values() if x == k)
                  for k in ("PASS", "FAIL", "ERROR", "SKIP", "XFAIL")]
        wall = walls.get(name)
        out.append(f"| {name} | {len(v)} | " + " | ".join(map(str, counts)) +
                   f" | {f'{wall / 60:.1f} min' if wall else '-'} |")
    diff = changed(idle, loaded)
    out += ["", f"Verdict changes idle -> loaded: {len(diff)}"]
    out += [f"- `{t}`: {a} -> {b}" for t, a, b in diff]
    rows = close_calls(waits)
    out += ["", f"Waits that used more than half their bound: {len(rows)}"]
    if rows:
        out += ["", "| wait | bound | idle | loaded | where (a test) |", "|---|---|---|---|---|"]
        for r in rows:
            test = (r["test"] or "").split("::")[-1]
            out.append(f"| {r['what']} | {r['bound_s']:g} s | {_cell(r.get('idle', {'n': 0}))}"
                       f" | {_cell(r.get('loaded', {'n': 0}))} | {r['where']} ({test}) |")
    return "\n".join(out) + "\n"


def report(results: Path, command: str | None = None) -> str:
    walls = {}
    meta = results / "load.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        walls, command = info.get("walls", {}), command or info.get("command")
    run = {r: latest(results / r) or results / r for r in RUNS}    # each its latest run
    v = {r: verdicts(run[r] / "junit.xml") if (run[r] / "junit.xml").exists()
         else {} for r in RUNS}
    waits = {r: read_waits(run[r] / "waits.jsonl") for r in RUNS}
    return render(v["idle"], v["loaded"], waits, walls, command)


# ------------------------------------------------------------------ running

def start_load(how: str) -> list[subprocess.Popen]:
    """Keep every CPU busy: our own processes, each in its own group, killed by pid."""
    n = os.cpu_count() or 1
    if how == "auto":
        how = "stress-ng" if shutil.which("stress-ng") else "spin"
    if how == "stress-ng":
        cmds = [["stress-ng", "--cpu", str(n), "--quiet"]]
    else:
        cmds = [[sys.executable, "-c", "while True: pass"]] * n
    return [subprocess.Popen(c, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for c in cmds]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)      # its own group: stress-ng's workers too
        p.wait()


def run(results: Path, pytest_args: list[str], load: str) -> dict[str, float]:
    walls = {}
    for name in RUNS:
        procs = start_load(load) if name == "loaded" else []
        try:
            t = time.monotonic()
            subprocess.run([sys.executable, "-m", "pytest", "tests/e2e", "-p",
                            "no:cacheprovider", "--results", str(results / name),
                            *pytest_args], cwd=ROOT)
            walls[name] = time.monotonic() - t
        finally:
            stop_load(procs)
    return walls


def main(argv: list[str]) -> int:
    cut = argv.index("--") if "--" in argv else len(argv)
    args, pytest_args = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=ROOT / "results-load")
    ap.add_argument("--load", choices=("auto", "stress-ng", "spin"), default="auto")
    ap.add_argument("--report", type=Path, metavar="DIR",
                    help="only read DIR/idle and DIR/loaded, runs that happened")
    opts = ap.parse_args(args)
    if opts.report:
        print(report(opts.report), end="")
        return 0
    if not pytest_args:
        ap.error("say which part of the matrix to run after `--` (e.g. -k s2idle --kernel "
                 "debian:6.12 --arch x86_64)")
    opts.results.mkdir(parents=True, exist_ok=True)
    command = "benchmarks/load.py -- " + shlex.join(pytest_args)
    walls = run(opts.results, pytest_args, opts.load)
    (opts.results / "load.json").write_text(json.dumps({"command": command, "walls": walls,
                                                        "load": opts.load}))
    text = report(opts.results)
    (opts.results / "load.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
