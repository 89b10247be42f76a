"""Stability flags and the headline: each damage case paired with its positive control."""

import numpy as np
import pandas as pd
import pytest

from bench.measure import stability
from bench.measure.results import make_record
from bench.report import headline


def speed_rows(impl="numpy", medians=(0.010, 0.010, 0.010), spread=0.02, load=1.0, rounds=40, model="mlp"):
    rng = np.random.default_rng(0)
    rows = []
    for i, m in enumerate(medians):
        samples = list(m * (1 + spread * rng.standard_normal(rounds)))
        rows.append(
            make_record(
                "speed",
                impl=impl,
                model=model,
                dtype="float32",
                phase="train_step",
                batch_size=50,
                process=i,
                median_s=m,
                samples_s=samples,
                rounds=rounds,
                loadavg=load,
                frac_peak=0.4,
                frac_peak_model=0.9,
            )  # fmt: skip
        )
    return rows


def flags(**kw):
    t = stability.case_table(pd.DataFrame(speed_rows(**kw)), cores=2, processes=3)
    return t.iloc[0]


def test_quiet_case_is_stable():
    row = flags()
    assert row["stable"] and row["flags"] == "" and row["processes"] == 3
    assert row["median_s"] == pytest.approx(0.010)


@pytest.mark.parametrize(
    "kw, reason",
    [
        (dict(medians=(0.010, 0.016, 0.010)), "process medians spread 1.60x"),
        (dict(spread=0.2), "rounds vary"),
        (dict(load=4.0), "machine busy: load 4.0 on 2 cores"),
        (dict(rounds=3), "only 3 rounds"),
        (dict(medians=(0.010,)), "1 of 3 processes measured"),
    ],
)
def test_each_damage_is_flagged_with_its_reason(kw, reason):
    row = flags(**kw)
    assert not row["stable"] and reason in row["flags"], row["flags"]


def test_one_slow_process_of_five_is_not_a_shaky_figure():
    """Positive control: the median of five process medians does not move when one disturbed
    process is left out; two of five do move it (negative control), as does one of three."""
    one = stability.case_table(pd.DataFrame(speed_rows(medians=(0.010, 0.010, 0.0101, 0.0102, 0.015))), 2, 5)
    assert one.iloc[0]["stable"] and one.iloc[0]["process_spread"] == pytest.approx(1.5), one.iloc[0]["flags"]
    two = stability.case_table(pd.DataFrame(speed_rows(medians=(0.010, 0.010, 0.0101, 0.015, 0.015))), 2, 5)
    assert not two.iloc[0]["stable"] and "leaving one out moves the median 1.25x" in two.iloc[0]["flags"]
    three = flags(medians=(0.010, 0.010, 0.015))
    assert not three["stable"] and three["median_moves"] == pytest.approx(1.25)


def test_median_of_process_medians_ignores_one_slow_process():
    row = flags(medians=(0.010, 0.017, 0.011))
    assert row["median_s"] == pytest.approx(0.011)


def test_run_verdict_and_peak_drift():
    quiet = stability.case_table(pd.DataFrame(speed_rows()), cores=2, processes=3)
    peak = pd.DataFrame([{"dtype": "float32", "gflops": 300.0}, {"dtype": "float32", "gflops": 310.0}])
    assert stability.run_verdict(quiet, peak) == (True, [])
    moved = peak.assign(gflops=[300.0, 200.0])
    ok, reasons = stability.run_verdict(quiet, moved)
    assert not ok and "peak moved 1.50x" in reasons[0]
    busy = stability.case_table(pd.DataFrame(speed_rows(load=5.0)), cores=2, processes=3)
    ok, reasons = stability.run_verdict(busy, peak)
    assert not ok and "numpy mlp float32 train_step" in reasons[0]


def test_headline_table_per_model():
    rows = speed_rows() + speed_rows(impl="torch", medians=(0.005, 0.005, 0.005))
    agr = [
        make_record(
            "agreement", impl=i, model="mlp", dtype="float32", tensor="out", phase="forward", max_rel=e, ok=ok
        )  # fmt: skip
        for i, e, ok in (("numpy", 1e-7, True), ("torch", 3e-3, False))
    ]
    frames = {"speed": pd.DataFrame(rows), "agreement": pd.DataFrame(agr)}
    t = headline.headline_tables(frames, cores=2)["mlp float32"].set_index("impl")
    assert list(t.columns) == headline.COLUMNS[1:]
    assert t.loc["torch", "x vs numpy"] == "2.00x" and t.loc["numpy", "train_step samples/s"] == "5,000"
    assert t.loc["numpy", "agreement"].startswith("pass") and t.loc["torch", "agreement"].startswith("FAIL")
    assert t.loc["numpy", "% GEMM peak"] == "40.0%" and t.loc["numpy", "stability"] == "stable"
    assert t.loc["numpy", "% peak, model FLOPs"] == "90.0%"
    lines = headline.stability_lines(frames, cores=2)
    assert lines[0].startswith("**Stable run**")


def test_missing_processes_flagged_without_being_told_p():
    """A report does not know the profile's P: it is the most processes any case got, so a case
    that lost a process is flagged; pure Python (one process by design) is not."""
    rows = speed_rows() + speed_rows(impl="torch", medians=(0.005,)) + speed_rows(impl="pure_python", medians=(1.0,))
    t = stability.case_table(pd.DataFrame(rows), cores=2).set_index("impl")
    assert "1 of 3 processes measured" in t.loc["torch", "flags"]
    assert t.loc["numpy", "stable"] and t.loc["pure_python", "stable"]
