"""Mutation testing of the modules that decide results (mutmut): the score and every surviving mutant.

`make mutation` (slow, not part of `make test`) copies the working tree into ``<out>/work``, lets mutmut mutate the
chosen modules there (the working tree itself is never changed) and runs, for each mutant, only those of the
module's fast tests (MODULE_TESTS) that call the mutated function. It then writes ``<out>/report.md`` and
``<out>/report.json``: per module the mutants, how many the tests killed, the survivors explained as equivalent in
tests/mutation_equivalents.txt, the survivors left to explain, and the score. docs/testing.md says how to read them.

Usage::

    python scripts/mutation.py                                                # every module of MODULE_TESTS
    python scripts/mutation.py --modules engine/schedule.py model/losses.py  # a chosen set

Run it under ``nice`` on a shared machine; mutmut runs one mutant at a time with one torch thread.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as `python scripts/mutation.py`: the repository's packages import from here

from common.atomic import atomic_file, write_json_atomic  # noqa: E402

EQUIVALENTS_FILE = Path("tests") / "mutation_equivalents.txt"
REPORT_MARKDOWN = "report.md"
REPORT_JSON = "report.json"
MUTMUT_LOG = "mutmut.log"
# The modules whose code decides training and evaluation results, each with the fast tests that cover it (seconds
# per mutant: mutmut runs only the tests among these that call the mutated function).
MODULE_TESTS: dict[str, tuple[str, ...]] = {
    "data_pipeline/sampling.py": ("tests/test_data_sampling.py",),
    "data_pipeline/augment.py": ("tests/test_data_sampling.py",),
    "engine/schedule.py": ("tests/test_schedule.py", "tests/test_schedule_shapes.py", "tests/test_recipes.py"),
    "engine/evaluation.py": ("tests/test_evaluation.py",),
    "model/losses.py": ("tests/test_model_api.py",),
    "model/optim.py": ("tests/test_model_api.py", "tests/test_optim_policies.py", "tests/test_recipes.py"),
    "model/temporal_shift.py": ("tests/test_model_shift.py",),
    "model/ffn_parts.py": ("tests/test_model_api.py", "tests/test_model_registry.py"),
    "model/interface.py": ("tests/test_model_api.py", "tests/test_model_registry.py"),
    "model/tsm_resnet.py": ("tests/test_model_api.py", "tests/test_model_shift.py"),
}
# Where mutmut records each mutant's outcome: exit code -> status (its own table, mutmut.stats).
KILLED_STATUSES = ("killed", "timeout", "caught by type check")
MUTMUT_STATUS_BY_EXIT_CODE = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
                              35: "suspicious", 36: "timeout", 37: "caught by type check", 24: "timeout",
                              -24: "timeout", 152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault",
                              2: "interrupted", None: "not checked"}
MUTANT_NAME = re.compile(r"^(?P<module>[\w.]+)\.x(?:\u01c1(?P<cls>\w+)\u01c1|_)(?P<function>\w+?)__mutmut_(?P<n>\d+)$")


@dataclass(frozen=True)
class MutantKey:
    """What identifies a mutant across edits: its file, its function and the changed lines (not line numbers)."""

    path: str
    function: str
    removed: tuple[str, ...]
    added: tuple[str, ...]

    def text(self) -> str:
        """The key as written in the equivalents file (a block of lines)."""
        changes = [f"- {line}" for line in self.removed] + [f"+ {line}" for line in self.added]
        return "\n".join([f"{self.path} {self.function}", *changes])


@dataclass
class ModuleResult:
    """The outcome of one module's mutants."""

    path: str
    tests: tuple[str, ...]
    statuses: dict[str, int] = field(default_factory=dict)
    equivalent: list[dict[str, Any]] = field(default_factory=list)
    unexplained: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mutants(self) -> int:
        return sum(self.statuses.values())

    @property
    def killed(self) -> int:
        return sum(self.statuses.get(status, 0) for status in KILLED_STATUSES)

    def score(self) -> float | None:
        """Killed / (mutants - equivalent), in percent (None without a mutant to kill)."""
        return mutation_score(self.killed, self.mutants, len(self.equivalent))


def mutation_score(killed: int, mutants: int, equivalent: int) -> float | None:
    """Return killed / (mutants - equivalent) in percent: equivalent mutants cannot be killed by any test."""
    effective = mutants - equivalent
    return None if effective <= 0 else 100.0 * killed / effective


# Equivalents file


def parse_equivalents(text: str, source: str = str(EQUIVALENTS_FILE)) -> dict[MutantKey, str]:
    """Parse the equivalents file: blocks of "<path> <function>", "- old", "+ new" lines and "why: reason".

    Blocks are separated by blank lines; lines starting with "#" are comments.

    Raises
    ------
    ValueError
        On a block without a location line, without a change, or without a reason (naming the line).
    """
    entries: dict[MutantKey, str] = {}
    for number, block in split_blocks(text):
        head, *rest = block
        location = head.split()
        removed = tuple(line[2:].strip() for line in rest if line.startswith("- "))
        added = tuple(line[2:].strip() for line in rest if line.startswith("+ "))
        reasons = [line[len("why:"):].strip() for line in rest if line.startswith("why:")]
        if len(location) != 2 or not (removed or added) or not reasons or not reasons[0]:
            raise ValueError(f"{source}:{number}: a block needs '<path> <function>', '- old' / '+ new' lines and "
                             "'why: <reason>'; fix or delete the block")
        entries[MutantKey(location[0], location[1], removed, added)] = reasons[0]
    return entries


def split_blocks(text: str) -> Iterable[tuple[int, list[str]]]:
    """Yield (first line number, lines) of each blank-line separated block, comments left out."""
    block: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            continue
        if line.strip():
            start = start or number
            block.append(line.rstrip())
        elif block:
            yield start, block
            block, start = [], 0
    if block:
        yield start, block


# Mutant names and diffs


def mutant_function(name: str) -> tuple[str, str]:
    """Return (dotted module, function or Class.method) of a mutmut mutant name."""
    match = MUTANT_NAME.match(name)
    if match is None:
        raise ValueError(f"unexpected mutmut mutant name {name!r}")
    function = match["function"] if match["cls"] is None else f"{match['cls']}.{match['function']}"
    return match["module"], function


def key_from_diff(path: str, function: str, diff: str) -> MutantKey:
    """Build the stable key of a mutant from its unified diff (the changed lines, stripped)."""
    lines = [line for line in diff.splitlines() if not line.startswith(("---", "+++", "@@", "#"))]
    removed = tuple(line[1:].strip() for line in lines if line.startswith("-"))
    added = tuple(line[1:].strip() for line in lines if line.startswith("+"))
    return MutantKey(path, function, removed, added)


# Running mutmut


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=list(MODULE_TESTS),
                        help=f"modules to mutate (default: all of {', '.join(MODULE_TESTS)})")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "mutation",
                        help="folder of the report (and of the working copy, <out>/work)")
    parser.add_argument("--equivalents", type=Path, default=REPO_ROOT / EQUIVALENTS_FILE,
                        help="the explained survivors")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the last run's results in <out>/work (no new run)")
    parser.add_argument("--retest", action="store_true",
                        help="after adding tests (the modules unchanged): copy tests/ into <out>/work and run again "
                             "only the last run's unexplained survivors")
    parser.add_argument("--fail-under", type=float, default=0.0,
                        help="exit 1 when a module's score is below this percentage or a survivor is unexplained "
                             "(default 0: only report)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.modules) - set(MODULE_TESTS))
    if unknown:
        parser.error(f"no fast tests are listed for {unknown}; choose among {sorted(MODULE_TESTS)} "
                     "or add the module to MODULE_TESTS in scripts/mutation.py")
    return args


def tracked_files(repo: Path) -> list[str]:
    """The files of the working tree that git tracks or would track (ignored paths such as runs/ left out)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, capture_output=True,
                            check=True).stdout.decode()
    return [name for name in listed.split("\0") if name and (repo / name).is_file() and not (repo / name).is_symlink()]


def copy_working_tree(repo: Path, work: Path) -> None:
    """Copy the working tree's files (tracked and untracked, not ignored) into a fresh `work` folder."""
    if work.exists():
        shutil.rmtree(work)
    for name in tracked_files(repo):
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target)


def mutmut_settings(work: Path, modules: Sequence[str]) -> str:
    """The [tool.mutmut] table for `modules`: mutate only them, select among their fast tests, no git lookups."""
    packages = sorted({module.split("/")[0] for module in modules})
    others = sorted(entry.name for entry in work.iterdir() if entry.name not in {*packages, "tests", "mutants"})
    tests = sorted({test for module in modules for test in MODULE_TESTS[module]})
    settings = {
        "source_paths": packages,
        "only_mutate": list(modules),
        "also_copy": others,
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "-p", "no:randomly"],
        "use_git_change_detection": False,
        "process_isolation": "fork",
    }
    lines = ["", "[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def run_mutmut(work: Path, log: Path, names: Sequence[str] = ()) -> int:
    """Run `mutmut run` in `work` (all mutants, or only `names`), one at a time with one torch thread.

    Returns its exit status.
    """
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    with open(log, "w", encoding="utf-8") as output:
        completed = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", "1", *names],
                                   cwd=work, env=environment, stdout=output, stderr=subprocess.STDOUT)
    return completed.returncode


def refresh_tests(repo: Path, work: Path) -> None:
    """Replace the working copy's tests/ by the working tree's (mutmut copies them on into its mutants/)."""
    shutil.rmtree(work / "tests")
    for name in tracked_files(repo):
        if name.startswith("tests/"):
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, work / name)


def mutant_sources(mutated_file: Path) -> dict[str, str]:
    """{function name: source} of every original and mutated function copy in a file mutmut wrote.

    mutmut keeps each function as ``<name>__mutmut_orig`` plus one ``<name>__mutmut_<n>`` per mutant.
    """
    text = mutated_file.read_text(encoding="utf-8")
    lines = text.splitlines()
    return {
        node.name: "\n".join(lines[node.lineno - 1 : node.end_lineno])
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "__mutmut_" in node.name
    }


def mutant_diff(sources: dict[str, str], name: str) -> str:
    """The unified diff between a mutant's function and the original (what `mutmut show` prints)."""
    local = name.rpartition(".")[2]
    original_name = local.rpartition("__mutmut_")[0] + "__mutmut_orig"
    original, mutated = sources[original_name], sources[local].replace(local, original_name, 1)
    return "\n".join(difflib.unified_diff(original.splitlines(), mutated.splitlines(), lineterm="", n=1))


def read_statuses(work: Path, module: str) -> dict[str, str]:
    """{mutant name: status} of a module from mutmut's results file (empty when it has none)."""
    meta = work / "mutants" / f"{module}.meta"
    if not meta.is_file():
        return {}
    exit_codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    return {name: MUTMUT_STATUS_BY_EXIT_CODE.get(code, "suspicious") for name, code in exit_codes.items()}


# Report


def collect(work: Path, modules: Sequence[str], equivalents: dict[MutantKey, str]) -> tuple[list[ModuleResult],
                                                                                             list[str]]:
    """Return each module's result and the equivalents-file entries of these modules that matched no survivor."""
    results, used = [], set()
    for module in modules:
        result = ModuleResult(module, MODULE_TESTS[module])
        mutated_file = work / "mutants" / module
        sources = mutant_sources(mutated_file) if mutated_file.is_file() else {}
        for name, status in sorted(read_statuses(work, module).items(), key=lambda item: natural_key(item[0])):
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status in KILLED_STATUSES:
                continue
            _, function = mutant_function(name)
            diff = mutant_diff(sources, name)
            key = key_from_diff(module, function, diff)
            record = {"name": name, "status": status, "key": key.text(), "diff": diff.strip()}
            if key in equivalents and status == "survived":
                used.add(key)
                result.equivalent.append({**record, "why": equivalents[key]})
            else:
                result.unexplained.append(record)
        results.append(result)
    stale = [key.text() for key in equivalents if key.path in modules and key not in used]
    return results, stale


def natural_key(name: str) -> tuple[str, int]:
    """Sort mutants by function, then by number."""
    head, _, number = name.rpartition("__mutmut_")
    return head, int(number) if number.isdigit() else 0


def totals(results: Sequence[ModuleResult]) -> dict[str, Any]:
    """The sums over every module."""
    mutants = sum(result.mutants for result in results)
    killed = sum(result.killed for result in results)
    equivalent = sum(len(result.equivalent) for result in results)
    return {"mutants": mutants, "killed": killed, "equivalent": equivalent,
            "unexplained": sum(len(result.unexplained) for result in results),
            "score": mutation_score(killed, mutants, equivalent)}


def format_score(score: float | None) -> str:
    """A score as a percentage with one decimal ("-" when there is nothing to kill)."""
    return "-" if score is None else f"{score:.1f}%"


def markdown_report(results: Sequence[ModuleResult], stale: Sequence[str], summary: dict[str, Any]) -> str:
    """The report as Markdown: the table of scores, then every survivor to explain, then stale equivalents."""
    lines = [
        "# Mutation testing report", "",
        f"Run: `make mutation MUTATION_MODULES=\"{' '.join(result.path for result in results)}\"` "
        f"({summary['seconds']:.0f} s, mutmut {summary['mutmut']}).", "",
        "Score = killed / (mutants - equivalent). Equivalent: survivors explained in "
        f"`{EQUIVALENTS_FILE}`. Unexplained: survivors that need a test or an explanation.", "",
        "| module | tests | mutants | killed | equivalent | unexplained | score |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        lines.append(f"| {result.path} | {', '.join(result.tests)} | {result.mutants} | {result.killed} | "
                     f"{len(result.equivalent)} | {len(result.unexplained)} | {format_score(result.score())} |")
    lines.append(f"| all | | {summary['mutants']} | {summary['killed']} | {summary['equivalent']} | "
                 f"{summary['unexplained']} | {format_score(summary['score'])} |")
    unexplained = [record for result in results for record in result.unexplained]
    lines += ["", f"## Unexplained survivors ({len(unexplained)})", ""]
    for record in unexplained:
        lines += [f"### {record['name']} ({record['status']})", "", "Key for the equivalents file:", "", "```",
                  record["key"], "```", "", "```diff", record["diff"], "```", ""]
    if stale:
        lines += [f"## Equivalents that matched no survivor ({len(stale)})", "",
                  "The code or the tests changed: delete these blocks from the equivalents file.", ""]
        for text in stale:
            lines += ["```", text, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def json_report(results: Sequence[ModuleResult], stale: Sequence[str], summary: dict[str, Any]) -> dict[str, Any]:
    """The report as a JSON-ready dict."""
    modules = {
        result.path: {"tests": list(result.tests), "mutants": result.mutants, "killed": result.killed,
                      "statuses": result.statuses, "score": result.score(), "equivalent": result.equivalent,
                      "unexplained": result.unexplained}
        for result in results
    }
    return {"summary": summary, "modules": modules, "stale_equivalents": list(stale)}


def write_reports(out: Path, results: Sequence[ModuleResult], stale: Sequence[str], summary: dict[str, Any]) -> None:
    """Write report.md and report.json atomically."""
    with atomic_file(out / REPORT_MARKDOWN, "w") as handle:
        handle.write(markdown_report(results, stale, summary))
    write_json_atomic(out / REPORT_JSON, json_report(results, stale, summary))


def mutmut_version() -> str:
    """The installed mutmut version."""
    from importlib.metadata import version

    return version("mutmut")


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or re-read) the mutation test of the chosen modules and write the report; return the exit status."""
    args = parse_args(argv)
    work = args.out / "work"
    equivalents = parse_equivalents(args.equivalents.read_text(encoding="utf-8"), str(args.equivalents))
    start = time.perf_counter()
    if (args.retest or args.report_only) and not (work / "mutants").is_dir():
        print(f"mutation: {work} holds no mutmut results; run without --retest / --report-only first",
              file=sys.stderr)
        return 2
    status = 0
    if args.retest:
        refresh_tests(REPO_ROOT, work)
        previous, _ = collect(work, args.modules, equivalents)
        names = [record["name"] for result in previous for record in result.unexplained]
        print(f"mutation: running {len(names)} mutants again against the current tests", flush=True)
        status = run_mutmut(work, args.out / MUTMUT_LOG, names) if names else 0
    elif not args.report_only:
        copy_working_tree(REPO_ROOT, work)
        with open(work / "pyproject.toml", "a", encoding="utf-8") as pyproject:
            pyproject.write(mutmut_settings(work, args.modules))
        print(f"mutation: mutmut on {', '.join(args.modules)} (log: {args.out / MUTMUT_LOG})", flush=True)
        status = run_mutmut(work, args.out / MUTMUT_LOG)
    if status != 0:
        print(f"mutation: mutmut stopped with status {status}; see {args.out / MUTMUT_LOG}", file=sys.stderr)
        return status
    results, stale = collect(work, args.modules, equivalents)
    summary = {**totals(results), "seconds": time.perf_counter() - start, "mutmut": mutmut_version()}
    write_reports(args.out, results, stale, summary)
    for result in results:
        print(f"  {result.path:28s} {result.mutants:4d} mutants {result.killed:4d} killed "
              f"{len(result.equivalent):3d} equivalent {len(result.unexplained):3d} unexplained "
              f"score {format_score(result.score())}")
    print(f"mutation: score {format_score(summary['score'])}, {summary['unexplained']} unexplained survivors "
          f"({summary['seconds']:.0f} s); report: {args.out / REPORT_MARKDOWN}")
    below = [result.path for result in results if (result.score() or 100.0) < args.fail_under]
    return 1 if args.fail_under > 0 and (below or summary["unexplained"]) else 0


if __name__ == "__main__":
    sys.exit(main())
