"""The examples run and their JAX numbers agree with torch's (they check themselves and exit 1)."""

from __future__ import annotations

import pytest
from _subprocess import run

from parity.metric import F64_GATE

pytest.importorskip("torch")

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def test_resume_from_torch_example_continues_torchs_loss_curve():
    args = ["examples/resume_from_torch.py", "--torch-epochs", "1", "--jax-epochs", "2"]
    result = run(args, devices=1, timeout=300)
    rows = [line.split() for line in result.stdout.splitlines()]
    resumed = [row for row in rows if row[:1] in (["2"], ["3"])]
    assert len(resumed) == 2
    for _, jax_loss, torch_loss in resumed:
        # float32 epoch-mean losses, printed to 6 decimals: measured ≤ 1e-6 apart
        assert abs(float(jax_loss) - float(torch_loss)) <= 2e-6


def test_data_parallel_example_trains_on_eight_simulated_devices():
    # the example exits 1 itself if the test accuracy ends below 0.9 (measured 0.939)
    args = ["examples/data_parallel.py", "--simulate-devices", "8", "--zero", "1"]
    result = run(args, devices=8, timeout=300)
    out = result.stdout
    assert "8 cpu devices on 1 process(es)" in out
    first, last = (float(v) for v in out.split("steps 132: loss ")[1].split(";")[0].split(" → "))
    assert last < first / 20  # measured 2.73 → 0.024
    # ZeRO-1: 1/8 of the AdamW moments per device, plus the step counters (measured 0.126)
    ratio = float(out.split("optimizer state per device / whole state: ")[1].split()[0])
    assert 0.125 <= ratio <= 0.13


def test_torch_nnx_round_trip_example_equals_an_unbroken_torch_run():
    # the example exits 1 itself if the gap exceeds the float64 gate (measured 2.2e-16)
    result = run(["examples/torch_nnx_round_trip.py"], devices=1, timeout=300)
    gap = float(result.stdout.split("largest weight difference ")[1])
    assert gap <= F64_GATE


def test_search_pruning_ratios_example_beats_uniform_ratios():
    # the example exits 1 itself if the searched ratios lose to uniform ones on the validation rows
    # (measured: validation error 0.284 against 0.649, 9.9 % of the weights kept)
    result = run(["examples/search_pruning_ratios.py", "--evals", "1000"], devices=1, timeout=300)
    # the table: ratios of the 3 layers, kept fraction, validation error, test error
    rows = {row[0]: row for row in map(str.split, result.stdout.splitlines()) if len(row) == 7}
    uniform, searched = float(rows["uniform"][5]), float(rows["GA"][5])
    assert searched < uniform and float(rows["GA"][4]) <= 0.1 + 1e-9


def test_parq_digits_example_beats_post_training_quantization_and_one_shot_pruning():
    # the example exits 1 itself unless 2-bit PARQ is within 2 points of float and ≥ 3 points
    # above 2-bit PTQ with ≤ 4 levels per row (seed 0, measured: float 96.67, PARQ 2-bit 95.56,
    # PTQ 2-bit 91.11)
    result = run(["examples/parq_digits.py"], devices=1, timeout=300)
    # the table: name (words), accuracy %, most levels in a row, zero hidden rows %
    table = {
        " ".join(row[:-3]): (float(row[-3]), int(row[-2]), float(row[-1]))
        for row in map(str.split, result.stdout.splitlines())
        if len(row) >= 4 and row[-2].isdigit() and "." in row[-1]
    }
    float_acc = table["float"][0]
    assert table["PARQ 2-bit"][1] <= 4 and table["PARQ 4-bit"][1] <= 16
    assert float_acc - table["PARQ 2-bit"][0] <= 2.0  # measured 1.11
    assert table["PARQ 2-bit"][0] >= table["PTQ 2-bit"][0] + 3.0  # measured 4.44
    assert table["PARQ 4-bit"][0] >= float_acc - 2.0  # measured 96.00
    # PAT: ~80 % of the hidden rows exactly zero (measured 79.7 %), and far better than pruning
    # 80 % of the float model's rows at once (measured 92.67 against 20.44)
    assert table["PAT 80% rows"][2] >= 75.0
    assert table["PAT 80% rows"][0] >= table["one-shot 80% rows"][0] + 50.0
    assert table["PAT 80% rows"][0] >= float_acc - 6.0  # measured 4.0 below


def test_quantize_digits_example_int8_equals_torch():
    # the example exits 1 itself if dynamic int8 loses > 0.5 points, is < 3.7× smaller, or its
    # logits differ from torch's on any row (measured 97.78 % → 97.78 %, 3.86×, 450/450)
    args = ["examples/quantize_digits.py", "--timing-repeats", "3"]
    rows = {}
    for line in run(args, devices=1, timeout=300).stdout.splitlines():
        words = line.split()
        if words[:1] in (["float32"], ["dynamic"], ["static"]):
            rows[words[0]] = words[-2:]
        if words[:2] == ["QAT", "int8"]:
            rows["QAT"] = words
    assert rows["dynamic"] == ["450/450", "450/450"]
    # static, calibrated on the same images (x86 default qconfig): measured 450/450 rows with
    # bit-equal logits; XLA's and torch's float GEMMs may differ in the last bit during
    # calibration, so only the predictions are required to agree
    assert rows["static"][1] == "450/450"
    # QAT: the example exits 1 itself if QAT int8 loses > 0.5 points or predicts differently from
    # torch's QAT int8 model on any row (measured 97.78 % → 97.78 %, torch 97.78 %, 450/450)
    acc, acc_torch = float(rows["QAT"][2]), float(rows["QAT"][3])
    assert acc == acc_torch  # measured 97.78 both
    # each framework fine-tunes on its own, so float32 drift could move a qparam; measured
    # 450/450 rows bit for bit, required: the same predictions
    assert rows["QAT"][-1] == "450/450"


def test_finetune_8bit_example_keeps_accuracy_in_a_quarter_of_the_memory():
    # the example exits 1 itself if the 8-bit run is > 2 points below float32 AdamW or its state
    # is > 0.3 of float32's (measured: 96.89 % both, state 0.256)
    result = run(["examples/finetune_8bit.py"], devices=1, timeout=300)
    rows = {r[0]: r for r in map(str.split, result.stdout.splitlines()) if len(r) in (4, 5)}
    f32, low = float(rows["adamw"][2]), float(rows["adamw8bit"][1])  # "adamw (float32) acc ..."
    assert f32 - low <= 1.0  # 1.0 point: 4 of the 450 test images; measured 0.0
    assert float(rows["adamw8bit"][3]) <= 0.3 and f32 >= 95.0  # measured 0.256 and 96.89
