"""bench.check.recipes: binomial intervals, the equivalence test against NumPy, the dnn course
comparison, and the combined report over several runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_report import run_dir  # noqa: F401 - the synthetic run fixture

from bench.check import recipes
from bench.report import recipes as recipes_report


def _acc(curves: dict[str, list[list[float]]], model: str = "dnn", n: int = 10000) -> pd.DataFrame:
    """Records for ``{impl: [per-seed curve, ...]}``."""
    rows = []
    for impl, seeds in curves.items():
        for seed, curve in enumerate(seeds):
            t = 0.0
            for ep, acc in enumerate(curve, start=1):
                t += 2.0
                rows.append(
                    {"impl": impl, "model": model, "dtype": "float32", "seed": seed, "epoch": ep, "test_acc": acc,
                     "test_samples": n, "steps": 1875, "epoch_s": 2.0, "extrapolated_epoch_s": 2.0,
                     "target_acc": 0.97, "time_to_target_s": t if acc >= 0.97 else None,
                     "optimizer": "adam", "init": "glorot_uniform"}
                )  # fmt: skip
    df = pd.DataFrame(rows)
    # time to target is the first epoch reaching it, then kept
    df["time_to_target_s"] = df.groupby(["impl", "seed"])["time_to_target_s"].transform("min")
    return df


def test_wilson_interval():
    lo, hi = recipes.wilson(0.9774, 10000)
    assert lo == pytest.approx(0.9743, abs=2e-4) and hi == pytest.approx(0.9802, abs=2e-4)
    assert recipes.wilson(1.0, 100)[1] == pytest.approx(1.0)


def test_final_table_interval_time_to_target_and_course_verdict():
    course = recipes.COURSE_CURVES["dnn"]
    acc = _acc({"numpy": [course, course], "torch": [[c - 0.02 for c in course]] * 2})
    fin = recipes.final_table(acc).set_index("impl")
    assert fin.loc["numpy", "final_acc"] == pytest.approx(0.9774)
    assert fin.loc["numpy", "ci95_low"] < 0.9774 < fin.loc["numpy", "ci95_high"]
    assert fin.loc["numpy", "time_to_target_s"] == 6.0 and fin.loc["numpy", "reached"] == "2/2"
    assert fin.loc["torch", "reached"] == "0/2" and pd.isna(fin.loc["torch", "time_to_target_s"])
    assert pd.isna(fin.loc["numpy", "full_recipe_s_extrapolated"])  # ran the whole recipe
    verdict = recipes.course_table(acc).iloc[-1]
    assert verdict["numpy"].startswith("yes") and verdict["torch"].startswith("no")


def test_retarget_recomputes_time_to_target_from_the_curve():
    acc = _acc({"numpy": [[0.90, 0.95, 0.96]], "torch": [[0.90, 0.91, 0.92]]})
    fin = recipes.final_table(recipes.retarget(acc, {"dnn": 0.95})).set_index("impl")
    assert fin.loc["numpy", "time_to_target_s"] == 4.0 and fin.loc["numpy", "target"] == 0.95
    assert fin.loc["torch", "reached"] == "0/1"


def test_equivalence_same_differs_undecidable_and_the_aa_row():
    rng = np.random.default_rng(0)

    def seeds(mean: float, k: int) -> list[list[float]]:
        return [[0.90, 0.95, float(a)] for a in mean + 0.0005 * rng.standard_normal(k)]

    # NumPy: 20 seeds; numba the same learning, keras 1 pp better, torch on one seed
    acc = _acc({"numpy": seeds(0.975, 20), "numba": seeds(0.975, 10), "keras": seeds(0.985, 10)})
    eq = recipes.equivalence_table(acc).set_index("impl")
    assert eq.loc["numba", "verdict"].startswith("same (within +-0.2 pp)"), eq.loc["numba"].to_dict()
    assert eq.loc["keras", "verdict"].startswith("DIFFERS (+1.0")
    assert eq.loc["numba", "seeds"] == "10/10"  # against NumPy's seeds 0-9, the ones numba ran
    aa = eq.loc["numpy (A/A: seeds 10-19 vs 0-9)"]
    assert aa["verdict"].startswith("same") and 0.0 <= aa["false_alarm_rate"] <= 0.15
    one = recipes.equivalence_table(_acc({"numpy": seeds(0.975, 3), "torch": seeds(0.975, 1)})).set_index("impl")
    assert one.loc["torch", "verdict"] == "not decidable (1 seed; at least 5 needed)"
    subset = pd.concat(
        [_acc({"numpy": seeds(0.975, 3), "numba": seeds(0.975, 3)}), _acc({"pure_python": [[0.8]]}, n=1000)]
    )
    assert list(recipes.equivalence_table(subset)["impl"]) == ["numba"]  # a 1,000-image evaluation is left out


def test_report_has_the_recipe_sections_and_the_combined_writer(run_dir, tmp_path):  # noqa: F811
    from bench.report import run_report as report

    report.write_report(run_dir)
    text = (run_dir / "summary.md").read_text()
    assert "## Recipes: final test accuracy, 95% interval, time to target" in text
    assert "## Do implementations learn like the NumPy reference?" in text
    assert "dashed: the course&#x27;s dnn" in (run_dir / "report.html").read_text()
    out = recipes_report.write(tmp_path / "combined", [str(run_dir), str(run_dir)])
    assert "Wilson 95%" in out.read_text() and (tmp_path / "combined" / "recipes.html").is_file()
