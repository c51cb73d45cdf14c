"""`dreamarcade bench --reference-code DIR`: the reference's own code measured beside ours in the same run.

The run against their code needs a checkout of github.com/eloialonso/diamond; give its folder in the environment
variable DIAMOND_SRC (for example `git clone https://github.com/eloialonso/diamond /tmp/diamond-src` and
`DIAMOND_SRC=/tmp/diamond-src python -m pytest tests/test_bench_reference.py`). Without it (CI: no checkout, no
network) that test is skipped; the bad-input tests always run.
"""
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from app.bench_reference import FILES, LOGGING_IMPORTS, load_reference
from app.cli import main
from weights.errors import UserError

DIAMOND_SRC = os.environ.get("DIAMOND_SRC")
THEIR_TOP_LEVEL = ("models", "data", "utils", "envs", "coroutines", "agent", "omegaconf", "wandb", "torcheval")


def test_a_folder_without_their_code_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    assert main(["bench", "--only", "denoiser", "--reference-code", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--reference-code {tmp_path}: not a checkout of the reference's code" in err
    assert "src/models/diffusion/denoiser.py" in err and "Traceback" not in err
    assert main(["bench", "--only", "denoiser", "--reference-code", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_a_checkout_without_a_needed_symbol_names_it(tmp_path):
    for f in FILES:  # the files are there, empty: another version of their code
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("")
    path, modules = list(sys.path), set(sys.modules)
    with pytest.raises(UserError, match=r"their module models\.diffusion has no Denoiser"):
        load_reference(tmp_path)
    assert sys.path == path and set(sys.modules) == modules  # their `models`, `utils`, ... are gone again


def test_confusion_matrix_stand_in_counts_targets_by_predicted_class():
    """Stands in for torcheval's (their reward/end loss logs it) where torcheval is not installed."""
    matrix = LOGGING_IMPORTS["torcheval"]["torcheval.metrics.functional"]["multiclass_confusion_matrix"]
    logits = torch.tensor([[2.0, 0, 0], [0, 0, 1], [0, 0, 3], [0, 1, 0]])
    target = torch.tensor([0, 2, 1, 1])
    assert matrix(logits, target, num_classes=3).tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


@pytest.mark.skipif(not (DIAMOND_SRC and Path(DIAMOND_SRC).is_dir()),
                    reason="no checkout of the reference's code: set DIAMOND_SRC to one (see this file's docstring)")
def test_their_code_is_measured_beside_ours_at_the_same_sizes(tmp_path, capsys):
    out = tmp_path / "bench.json"
    path = list(sys.path)
    assert main(["bench", "--quick", "--threads", "1", "--model", "tiny", "--batch-size", "2",
                 "--only", "denoiser", "rew_end", "imagination", "--reference-code", DIAMOND_SRC,
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    same_run = report["reference_code"]
    assert same_run["path"] == DIAMOND_SRC
    for key in ("denoiser_train_samples_per_s", "rew_end_train_sequences_per_s", "imagination_transitions_per_s"):
        m = same_run[key]
        assert m["ours"] == report[key]
        assert m["ratio"] == pytest.approx(m["ours"] / m["reference"], abs=0.006)
        assert m["parameters"]["reference"] == m["parameters"]["ours"]  # their networks at our sizes
        assert m["precision"] == {"reference": "float32", "ours": report["train_precision" if "imagination" not in key
                                                                         else "imagination_precision"]}
    table = capsys.readouterr().out
    assert "their code here, float32" in table and "not comparable" not in table  # same sizes and batch: comparable
    assert sys.path == path and not [m for m in sys.modules if m.split(".")[0] in THEIR_TOP_LEVEL]
