"""TFLite's recurrent ops (UNIDIRECTIONAL_SEQUENCE_LSTM, SVDF): our MACs against the interpreter's view.

The files are written with the schema's object API (tests/support/tflite_nets.py); the reference
(tests/support/reference_macs.py) reads every operator's tensor shapes from the interpreter after
allocation and applies the textbook formula.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ai_edge_litert")
from support.reference_macs import tflite_reference  # noqa: E402
from support.tflite_nets import TFLiteBuilder  # noqa: E402

from agent.profile.static import static_profile  # noqa: E402


def _lstm(path: Path, batch: int, steps: int, features: int, hidden: int) -> Path:
    b = TFLiteBuilder()
    x = b.tensor("x", [batch, steps, features])
    inputs = [x]
    inputs += [b.tensor(f"wi{i}", [hidden, features], constant=True) for i in range(4)]
    inputs += [b.tensor(f"wr{i}", [hidden, hidden], constant=True) for i in range(4)]
    inputs += [-1, -1, -1]
    inputs += [b.tensor(f"bias{i}", [hidden], constant=True) for i in range(4)]
    inputs += [-1, -1]
    states = [b.tensor("h", [batch, hidden]), b.tensor("c", [batch, hidden])]
    for index in states:
        b.tensors[index].isVariable = True
    y = b.tensor("y", [batch, steps, hidden])
    b.op("UNIDIRECTIONAL_SEQUENCE_LSTM", inputs + states, [y],
         b.options("UnidirectionalSequenceLSTMOptions", fusedActivationFunction=4, timeMajor=False, cellClip=0.0,
                   projClip=0.0))
    path.write_bytes(b.build([x], [y]))
    return path


def _svdf(path: Path, batch: int, features: int, filters: int, memory: int) -> Path:
    b = TFLiteBuilder()
    x = b.tensor("x", [batch, features])
    state = b.tensor("state", [batch, memory * filters])
    b.tensors[state].isVariable = True
    y = b.tensor("y", [batch, filters])
    b.op("SVDF", [x, b.tensor("wf", [filters, features], constant=True),
                  b.tensor("wt", [filters, memory], constant=True), b.tensor("bias", [filters], constant=True),
                  state], [y], b.options("SVDFOptions", rank=1, fusedActivationFunction=1))
    path.write_bytes(b.build([x], [y]))
    return path


def test_a_sequence_lstm_counts_steps_times_batch_times_four_gates(tmp_path: Path) -> None:
    path = _lstm(tmp_path / "lstm.tflite", batch=2, steps=5, features=12, hidden=8)
    reference, ops = tflite_reference(path)
    assert ops == {"UNIDIRECTIONAL_SEQUENCE_LSTM": 1}
    assert static_profile(path).totals()["macs"] == reference == 5 * 2 * 4 * (12 + 8) * 8


def test_svdf_counts_its_feature_and_time_filters(tmp_path: Path) -> None:
    path = _svdf(tmp_path / "svdf.tflite", batch=3, features=40, filters=16, memory=10)
    reference, _ = tflite_reference(path)
    profile = static_profile(path)
    assert profile.not_counted() == []
    assert profile.totals()["macs"] == reference == 3 * 16 * (40 + 10)
