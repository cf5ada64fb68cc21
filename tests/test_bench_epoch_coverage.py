"""The epoch-coverage benchmark (benchmarks/bench_epoch_coverage.py): its simulation and its command."""

from __future__ import annotations

from benchmarks.bench_epoch_coverage import DEMO, RESULT_NAME, main, simulate


def test_coverage_simulation_shows_the_previous_rule_missing_videos_and_the_exact_one_none(tmp_path):
    previous, exact = simulate(DEMO, "previous"), simulate(DEMO, "exact")
    assert exact["distinct"] == exact["yielded"] == DEMO.videos and exact["repeats"] == 0
    assert previous["yielded"] == DEMO.videos and previous["repeats"] > 0 and previous["left_out"] > 0
    assert main(["--out", str(tmp_path), "--quick"]) == 0 and (tmp_path / RESULT_NAME).exists()
