"""Pick the sample of mutants scripts/mutation runs, and summarise the last run per module.

  python scripts/mutation_report.py sample N [module ...]    names of N mutants per module
  python scripts/mutation_report.py table [--survivors] [module ...]

A module is a top-level module of hydra_sandbox (`authority`, `policy`, ...) or the `masking`
package as a whole. The sample is deterministic: the N mutants of each module whose names hash
lowest (SHA-256), so two runs on the same code draw the same mutants. The table counts a mutant
listed in scripts/mutation_equivalents.yaml (name -> why no test can tell it from the original) as
equivalent, timeouts as killed, and exits 1 when a module has less than 90% of the rest killed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml
from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants" / "hydra_sandbox"
EQUIVALENTS = ROOT / "scripts" / "mutation_equivalents.yaml"
TARGET = 90.0
KILLED = {"killed", "timeout", "caught by type check"}


def module_of(name: str) -> str:
    """`hydra_sandbox.masking.engine.x_f__mutmut_3` -> `masking`; `hydra_sandbox.policy.xǁP...` -> `policy`."""
    return name.split(".")[1]


def load_mutants() -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        found.update(json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"])
    if not found:
        sys.exit("no mutants under mutants/: run scripts/mutation first")
    return found


def wanted(name: str, modules: list[str]) -> bool:
    return not modules or module_of(name) in modules


def sample(count: int, modules: list[str]) -> list[str]:
    by_module: dict[str, list[str]] = {}
    for name in load_mutants():
        by_module.setdefault(module_of(name), []).append(name)
    unknown = sorted(set(modules) - set(by_module))
    if unknown:
        sys.exit(f"no mutants for module(s) {unknown}; modules with mutants: {sorted(by_module)}")
    by_module = {m: names for m, names in by_module.items() if not modules or m in modules}
    key = lambda n: hashlib.sha256(n.encode()).hexdigest()  # noqa: E731
    return [n for names in by_module.values() for n in sorted(names, key=key)[:count]]


def load_equivalents() -> dict[str, str]:
    data = yaml.safe_load(EQUIVALENTS.read_text(encoding="utf-8")) if EQUIVALENTS.exists() else {}
    if not isinstance(data, dict) or not all(isinstance(v, str) and v.strip() for v in data.values()):
        sys.exit(f"scripts/{EQUIVALENTS.name}: expected a mapping of mutant name -> reason (non-empty text)")
    return {str(k): v for k, v in data.items()}


def table(modules: list[str], show_survivors: bool) -> int:
    equivalents = load_equivalents()
    run = {n: c for n, c in load_mutants().items() if c is not None and wanted(n, modules)}
    counts: dict[str, Counter[str]] = {}
    survivors = []
    for name, code in sorted(run.items()):
        status = status_by_exit_code[code]
        if status not in KILLED and name in equivalents:
            status = "equivalent"
        counts.setdefault(module_of(name), Counter())[status] += 1
        if status not in KILLED and status != "equivalent":
            survivors.append(name)
    print("| module | mutants run | killed | timeout | survived | no tests | equivalent | killed % |")
    print("|---|---|---|---|---|---|---|---|")
    failing = False
    for module, c in sorted(counts.items()):
        total = sum(c.values())
        killed = c["killed"] + c["caught by type check"] + c["timeout"]
        judged = total - c["equivalent"]
        share = 100.0 * killed / judged if judged else 100.0
        failing |= share < TARGET
        other = judged - killed - c["survived"] - c["no tests"]
        print(f"| {module} | {total} | {killed - c['timeout']} | {c['timeout']} | {c['survived']}"
              f"{f' (+{other} other)' if other else ''} | {c['no tests']} | {c['equivalent']} | {share:.1f}% |")
    for name in sorted(set(equivalents) - set(load_mutants())):
        print(f"warning: scripts/{EQUIVALENTS.name} lists {name}, which no longer exists", file=sys.stderr)
    for name in survivors if show_survivors else []:
        mutmut = Path(sys.executable).parent / "mutmut"
        shown = subprocess.run([str(mutmut), "show", name], cwd=ROOT, capture_output=True, text=True)
        print(f"\n{shown.stdout.strip()}")
    return 1 if failing else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    pick = sub.add_parser("sample", help="print the names of N mutants per module")
    pick.add_argument("count", type=int)
    pick.add_argument("modules", nargs="*")
    show = sub.add_parser("table", help="summarise the last run")
    show.add_argument("--survivors", action="store_true", help="print each surviving mutant's diff")
    show.add_argument("modules", nargs="*")
    args = parser.parse_args()
    if args.command == "sample":
        print("\n".join(sample(args.count, args.modules)))
        return 0
    return table(args.modules, args.survivors)


if __name__ == "__main__":
    raise SystemExit(main())
