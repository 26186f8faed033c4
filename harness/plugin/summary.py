"""The end-of-run matrix: one row per kernel x arch, one cell per test family, made
from the run's verdict record (harness.results.verdicts).

A cell shows the family's worst verdict with its counts ("FAIL 2/23", "SKIP 9/9",
"PASS 23") and, in the Markdown file, links to its first failure's artifacts.
Printed at the end of a run and written to results/RUN/summary.md (a CI job's summary).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.results import verdicts
from harness.results.verdicts import Verdict

FAMILIES = ("boot", "psci", "s3", "s2idle", "hibernate", "acpi", "vfio")
SEVERITY, SELF_TEST, STAND_IN = verdicts.SEVERITY, verdicts.SELF_TEST, verdicts.STAND_IN


def short_spec(spec: str, width: int = 32) -> str:
    """A kernel spec fit for a table column: path:/long/dir/Image.gz,modules=... ->
    path:…/Image.gz (debian: specs are short already)."""
    if len(spec) <= width:
        return spec
    scheme, _, rest = spec.partition(":")
    name = rest.split(",")[0].rstrip("/").rsplit("/", 1)[-1]
    return f"{scheme}:…/{name}"[:width]


def family_of(module: str) -> str:
    """tests/e2e/test_acpi_events.py -> acpi; test_s2idle -> s2idle; tests/unit/* -> unit."""
    if "unit/" in module:
        return "unit"
    stem = module.rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
    return stem.split("_")[0]


@dataclass
class Cell:
    counts: dict[str, int] = field(default_factory=dict)
    first_bad: Verdict | None = None

    def add(self, v: Verdict) -> None:
        self.counts[v.outcome] = self.counts.get(v.outcome, 0) + 1
        if v.outcome in verdicts.NOT_OK and self.first_bad is None:
            self.first_bad = v

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def worst(self) -> str:
        return next(o for o in SEVERITY if self.counts.get(o))

    def text(self) -> str:
        w = self.worst
        n = self.counts[w]
        return f"PASS {n}" if w == "PASS" else f"{w} {n}/{self.total}"


@dataclass
class Matrix:
    rows: dict[str, dict[str, Cell]] = field(default_factory=dict)
    releases: dict[str, str] = field(default_factory=dict)
    accels: dict[str, str] = field(default_factory=dict)     # row -> tcg | kvm
    info: list[str] = field(default_factory=list)    # "target: text", not verdicts
    splats: list[dict] = field(default_factory=list)  # the run's splats.jsonl records

    @classmethod
    def of(cls, record: list[Verdict]) -> Matrix:
        """The matrix of a run's verdicts (harness.results.verdicts)."""
        m = cls()
        order = lambda v: (v.row == SELF_TEST, v.row.startswith(STAND_IN), v.row, v.nodeid)
        for v in sorted(record, key=order):
            m.rows.setdefault(v.row, {}).setdefault(v.family or "unit", Cell()).add(v)
            if v.row != SELF_TEST and v.release:
                m.releases[v.row] = v.release
            if v.row != SELF_TEST and v.accel:
                m.accels[v.row] = v.accel
        m.info = sorted({f"{v.row}: {i}" for v in record for i in v.info})
        return m

    def families(self) -> list[str]:
        seen = {f for cells in self.rows.values() for f in cells}
        return [f for f in FAMILIES if f in seen] + sorted(seen - set(FAMILIES))

    def totals(self, row: str) -> dict[str, int]:
        out = {o: 0 for o in ("PASS", "FAIL", "SKIP", "XFAIL")}
        for cell in self.rows[row].values():
            for o, n in cell.counts.items():
                key = {"ERROR": "FAIL", "XPASS": "FAIL"}.get(o, o)
                out[key] += n
        return out

    def _table(self, cell_text) -> list[list[str]]:
        fams = self.families()
        head = ["kernel", "arch", "release", "accel", "PASS", "FAIL", "SKIP", "XFAIL", "SPLATS", *fams]
        body = []
        counted = self.splat_counts()
        for row, cells in self.rows.items():
            kernel, _, arch = row.rpartition("/") if "/" in row else (row, "", "")
            prefix = f"{STAND_IN} " if kernel.startswith(f"{STAND_IN} ") else ""
            kernel = prefix + short_spec(kernel.removeprefix(prefix))
            t = self.totals(row)
            n, allowed = counted.get(row, (0, 0)) if row != SELF_TEST else (0, 0)
            splats = "-" if row == SELF_TEST or row.startswith(f"{STAND_IN} ") else \
                str(n) + (f" (+{allowed} allowed)" if allowed else "")
            body.append([kernel, arch, self.releases.get(row, ""), self.accels.get(row, ""),
                         str(t["PASS"]), str(t["FAIL"]), str(t["SKIP"]), str(t["XFAIL"]), splats,
                         *(cell_text(cells[f]) if f in cells else "-" for f in fams)])
        return [head, *body]

    def splat_counts(self) -> dict[str, tuple[int, int]]:
        """Per target: (splats not allowed, allowed ones), whatever --splats said."""
        out: dict[str, list[int]] = {}
        for r in self.splats:
            c = out.setdefault(r.get("target") or "?", [0, 0])
            c[1 if r.get("allowed") else 0] += 1
        return {k: (v[0], v[1]) for k, v in out.items()}

    def splat_lines(self) -> list[str]:
        """One line per splat: where (during which test, between tests, at boot), what,
        and the log line; allowed ones as warnings with their reason."""
        out = []
        for r in self.splats:
            where = {"test": f"during {r.get('test')}",
                     "between": f"between tests (after {r.get('test') or 'boot'}, machine "
                                f"{r.get('machine')})",
                     "boot": f"during boot (machine {r.get('machine')})"}.get(r.get("when") or "", "")
            head = "warning: allowed splat" if r.get("allowed") else "kernel splat"
            line = (f"{head} in {r.get('target')} {where}: ({r.get('kind')}) {r.get('title')} "
                    f"[{r.get('log')}:{r.get('line')}]")
            if r.get("allowed"):
                line += f" -- {r['allowed']}"
            out.append(line)
        return out

    def first_failures(self) -> list[Verdict]:
        return [c.first_bad for cells in self.rows.values() for c in cells.values()
                if c.first_bad]

    def text(self) -> str:
        """Aligned columns for the terminal, then the first failure of each bad cell."""
        table = self._table(Cell.text)
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
        for v in self.first_failures():
            lines.append(f"first {v.outcome} in {v.row} {v.family or 'unit'}: {v.nodeid}"
                         + (f"  (artifacts: {v.artifacts})" if v.artifacts else ""))
        lines += self.splat_lines()
        lines += [f"information: {i}" for i in self.info]
        return "\n".join(lines)

    def markdown(self) -> str:
        def cell(c: Cell) -> str:
            t = c.text()
            if c.first_bad is not None and c.first_bad.artifacts:
                return f"[{t}]({c.first_bad.artifacts})"
            return t
        table = self._table(cell)
        out = ["# guestpm summary", "",
               "| " + " | ".join(table[0]) + " |",
               "|" + "---|" * len(table[0])]
        out += ["| " + " | ".join(r) + " |" for r in table[1:]]
        bad = self.first_failures()
        if bad:
            out += ["", "First failure of each cell:", ""]
            out += [f"- {v.row} {v.family or 'unit'}: `{v.nodeid}`" +
                    (f" ([artifacts]({v.artifacts}))" if v.artifacts else "") for v in bad]
        if self.splats:
            out += ["", "Kernel splats:", ""] + [f"- {i}" for i in self.splat_lines()]
        if self.info:
            out += ["", "Information (not verdicts):", ""] + [f"- {i}" for i in self.info]
        return "\n".join(out) + "\n"
