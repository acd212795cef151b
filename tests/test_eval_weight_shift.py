"""bench/eval_weight_shift.py: its --smoke run end to end (tiny random generator, CLIP, LPIPS and identity
stand-ins; Global Directions and the shift made on the spot), the table it writes, and the matched-strength
search that pairs each k of the shift with a Global Direction alpha."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("open_clip")

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "bench") not in sys.path:
    sys.path.insert(0, str(REPO / "bench"))

import eval_weight_shift as E  # noqa: E402

KS = [-1.0, 0.0, 1.0]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("ws_eval")
    result = E.main(["--smoke", "--seeds", "2", "--ks=-1,0,1", "--train-steps", "3", "--out", str(out)])
    return result, out


@pytest.mark.slow
def test_smoke_writes_the_table(smoke):
    result, out = smoke
    with open(out / "weight_shift_eval.csv") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == E.COLUMNS
        rows = list(reader)
    assert [(r["method"], float(r["k"])) for r in rows] == [(m, k) for m in E.METHODS for k in KS]
    data = json.loads((out / "weight_shift_eval.json").read_text())
    assert data["columns"] == E.COLUMNS and len(data["rows"]) == len(rows)
    assert data["n_seeds"] == 2 and data["ks"] == KS and data["smoke"] is True
    for r in result["rows"]:
        assert r["n"] == 2
        for key in ("clip_dir_cos", "clip_dir_proj", "lpips", "id_cos"):
            assert math.isfinite(r[key]), (r["method"], r["k"], key)
        if r["k"] == 0:   # the base itself: no change, same identity
            assert r["clip_dir_cos"] == 0 and r["clip_dir_proj"] == 0 and r["lpips"] == 0
            assert r["id_cos"] == pytest.approx(1, abs=1e-5)
        else:             # the edits change the image
            assert r["lpips"] > 0 and r["clip_dir_proj"] != 0
        assert r["fid"] is None   # no Inception weights given
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "weight_shift_eval.png").stat().st_size > 0


@pytest.mark.slow
def test_smoke_matches_global_direction_strength(smoke):
    result, _ = smoke
    shift = {r["k"]: r for r in result["rows"] if r["method"] == "weight_shift"}
    for r in (r for r in result["rows"] if r["method"] == "global_direction"):
        target = shift[r["k"]]["clip_dir_proj"]
        assert r["match_on"] == "proj" and r["match_target"] == target
        assert r["match_converged"] is True, r
        # the search's value is what the row measured (same seeds, same alpha) and within the tolerance
        assert r["clip_dir_proj"] == pytest.approx(r["match_value"], rel=1e-4, abs=1e-9)
        assert abs(r["clip_dir_proj"] - target) <= 0.02 * abs(target) + 1e-12
        assert (r["alpha"] == 0) == (r["k"] == 0)


def test_match_alpha_bisection():
    found = E.match_alpha(lambda a: 0.3 * a, 1.5, start=1.0, alpha_max=100, tol=1e-3, max_evals=60)
    assert found["converged"] and found["alpha"] == pytest.approx(5.0, rel=1e-3)
    found = E.match_alpha(lambda a: math.tanh(a), -0.5, start=1.0, alpha_max=100, tol=1e-3, max_evals=60)
    assert found["converged"] and found["alpha"] == pytest.approx(math.atanh(-0.5), rel=1e-2)
    assert E.match_alpha(lambda a: 1 / 0, 0.0, start=1.0, alpha_max=10, tol=0.01, max_evals=5)["alpha"] == 0


def test_match_alpha_says_when_the_target_is_out_of_reach():
    found = E.match_alpha(lambda a: math.tanh(a), 2.0, start=1.0, alpha_max=16, tol=1e-3, max_evals=60)
    assert found["converged"] is False and "not reached" in found["note"]
    assert found["alpha"] == 16          # the closest alpha seen
    found = E.match_alpha(lambda a: a, 1e6, start=1.0, alpha_max=1e9, tol=1e-3, max_evals=4)
    assert found["converged"] is False and found["evals"] <= 5


def test_fid_arguments_are_checked(tmp_path):
    with pytest.raises(SystemExit, match="--fid-real"):
        E.main(["--smoke", "--seeds", "1", "--ks=0", "--train-steps", "1", "--inception-weights", str(tmp_path / "x")])
    if importlib.util.find_spec("torchmetrics") is None:
        with pytest.raises(SystemExit, match=r"pip install torchmetrics\[image\]"):
            E.make_fid(str(tmp_path / "inception.pth"), "cpu")
