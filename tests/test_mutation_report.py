"""scripts/mutation.py's bookkeeping (mutant keys, the equivalents file, the score, the report) and the committed
equivalents file itself: every block parses, names a mutated module, and quotes lines that are still in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from script_helpers import load_script

REPO_ROOT = Path(__file__).resolve().parents[1]


mutation = load_script("mutation")

# What `mutmut show` prints for a mutant of a method.
SHOWN_DIFF = """# engine.schedule.x\u01c1LearningRateShape\u01c1__call____mutmut_9: survived
--- engine/schedule.py
+++ engine/schedule.py
@@ -3,7 +3,7 @@
     if self.schedule == "step":
-        epoch = step // self.steps_per_epoch
+        epoch = step / self.steps_per_epoch
         return 0.1 ** sum(epoch >= boundary for boundary in self.lr_steps)
"""


def test_mutant_names_give_module_and_function() -> None:
    name = "engine.schedule.x\u01c1LearningRateShape\u01c1__call____mutmut_9"
    assert mutation.mutant_function(name) == ("engine.schedule", "LearningRateShape.__call__")
    assert mutation.mutant_function("data_pipeline.sampling.x__spread__mutmut_12") == (
        "data_pipeline.sampling", "_spread")
    assert mutation.mutant_function("model.losses.x_distillation_loss__mutmut_3") == (
        "model.losses", "distillation_loss")
    with pytest.raises(ValueError, match="unexpected mutmut mutant name"):
        mutation.mutant_function("engine.schedule.cosine_decay")


def test_key_from_a_diff_matches_its_block_in_the_equivalents_file() -> None:
    key = mutation.key_from_diff("engine/schedule.py", "LearningRateShape.__call__", SHOWN_DIFF)
    assert key.removed == ("epoch = step // self.steps_per_epoch",)
    assert key.added == ("epoch = step / self.steps_per_epoch",)
    text = key.text() + "\nwhy: whole epochs"
    assert mutation.parse_equivalents(text) == {key: "whole epochs"}
    spaced = "# a comment\n\n" + text + "\n\n\n" + text.replace("whole epochs", "again") + "\n"
    assert mutation.parse_equivalents(spaced) == {key: "again"}  # the same key twice: the last reason
    assert mutation.parse_equivalents("") == {}


@pytest.mark.parametrize("block", [
    "engine/schedule.py\n- a\n+ b\nwhy: no function",
    "engine/schedule.py cosine_decay\nwhy: no change",
    "engine/schedule.py cosine_decay\n- a\n+ b",
    "engine/schedule.py cosine_decay\n- a\n+ b\nwhy:",
])
def test_incomplete_blocks_are_refused_with_their_line(block: str) -> None:
    with pytest.raises(ValueError, match=r"equivalents.txt:3: a block needs"):
        mutation.parse_equivalents("# header\n\n" + block, "equivalents.txt")


def test_score_leaves_equivalent_mutants_out() -> None:
    assert mutation.mutation_score(killed=9, mutants=12, equivalent=2) == pytest.approx(90.0)
    assert mutation.mutation_score(killed=10, mutants=10, equivalent=0) == 100.0
    assert mutation.mutation_score(killed=0, mutants=3, equivalent=3) is None
    assert mutation.mutation_score(killed=0, mutants=0, equivalent=0) is None
    result = mutation.ModuleResult("engine/schedule.py", ("tests/test_schedule.py",),
                                   {"killed": 7, "timeout": 1, "survived": 2, "no tests": 1})
    result.equivalent.append({"name": "m"})
    assert (result.mutants, result.killed) == (11, 8) and result.score() == pytest.approx(80.0)


def test_report_lists_every_unexplained_survivor_and_stale_block() -> None:
    result = mutation.ModuleResult("engine/schedule.py", ("tests/test_schedule.py",), {"killed": 3, "survived": 1})
    key = mutation.key_from_diff("engine/schedule.py", "LearningRateShape.__call__", SHOWN_DIFF)
    result.unexplained.append({"name": "engine.schedule.m_1", "status": "survived", "key": key.text(),
                               "diff": SHOWN_DIFF})
    summary = {**mutation.totals([result]), "seconds": 12.0, "mutmut": "3.8.1"}
    assert summary["score"] == pytest.approx(75.0) and summary["unexplained"] == 1
    text = mutation.markdown_report([result], ["engine/schedule.py gone\n- x\n+ y"], summary)
    assert "| engine/schedule.py | tests/test_schedule.py | 4 | 3 | 0 | 1 | 75.0% |" in text
    assert "## Unexplained survivors (1)" in text and key.text() in text
    assert "## Equivalents that matched no survivor (1)" in text
    report = mutation.json_report([result], [], summary)
    assert report["modules"]["engine/schedule.py"]["score"] == pytest.approx(75.0)


def test_unknown_modules_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        mutation.parse_args(["--modules", "train.py"])
    assert "no fast tests are listed for ['train.py']" in capsys.readouterr().err


def test_committed_equivalents_quote_lines_still_in_their_modules() -> None:
    equivalents = mutation.parse_equivalents((REPO_ROOT / mutation.EQUIVALENTS_FILE).read_text(encoding="utf-8"))
    assert equivalents, "the equivalents file parses to at least one block"
    for key, reason in equivalents.items():
        assert key.path in mutation.MODULE_TESTS, f"{key.path} is not a mutated module"
        source = {line.strip() for line in (REPO_ROOT / key.path).read_text(encoding="utf-8").splitlines()}
        missing = [line for line in key.removed if line not in source]
        assert not missing, f"{key.path} {key.function}: no longer has {missing}; delete or update the block"
        assert len(reason) > 10
