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


def _fully_connected(b: TFLiteBuilder, x: int, units: int, name: str) -> int:
    y = b.tensor(name, [1, units])
    b.op("FULLY_CONNECTED", [x, b.tensor(f"{name}.w", [units, 8], constant=True), -1], [y],
         b.options("FullyConnectedOptions"))
    return y


def _while(path: Path, limit: int, step: int) -> Path:
    """for (i = 0; i < limit; i += step) x = FC(x)"""
    main = TFLiteBuilder()
    cond, body = TFLiteBuilder(main), TFLiteBuilder(main)
    ci, cx = cond.tensor("i", [], "int32"), cond.tensor("x", [1, 8])
    flag = cond.tensor("go", [], "bool")
    cond.op("LESS", [ci, cond.tensor("limit", [], "int32", value=limit)], [flag])
    bi, bx = body.tensor("i", [], "int32"), body.tensor("x", [1, 8])
    bi_next = body.tensor("i_next", [], "int32")
    body.op("ADD", [bi, body.tensor("step", [], "int32", value=step)], [bi_next], body.options("AddOptions"))
    bx_next = _fully_connected(body, bx, 8, "x_next")
    cond_index = main.attach(cond, [ci, cx], [flag], "cond")
    body_index = main.attach(body, [bi, bx], [bi_next, bx_next], "body")
    x, start = main.tensor("x", [1, 8]), main.tensor("start", [], "int32", value=0)
    out_i, out_x = main.tensor("i_out", [], "int32"), main.tensor("x_out", [1, 8])
    main.op("WHILE", [start, x], [out_i, out_x],
            main.options("WhileOptions", condSubgraphIndex=cond_index, bodySubgraphIndex=body_index))
    path.write_bytes(main.build([x], [out_x]))
    return path


def test_a_while_counter_loop_counts_its_body_once_per_trip(tmp_path: Path) -> None:
    profile = static_profile(_while(tmp_path / "loop.tflite", limit=5, step=1))
    (entry,) = profile.control_flow()
    assert (entry["layer"], entry["mode"], entry["trips"]) == ("while_0", "repeated", 5)
    assert profile.totals()["macs"] == 5 * 8 * 8 and profile.graph.warnings == []
    assert "while_0/body/fully_connected_1" in [layer.name for layer in profile.graph.layers]
    assert static_profile(_while(tmp_path / "odd.tflite", limit=7, step=3)).totals()["macs"] == 3 * 8 * 8


def test_an_if_on_a_run_time_flag_counts_its_larger_branch(tmp_path: Path) -> None:
    main = TFLiteBuilder()
    then, other = TFLiteBuilder(main), TFLiteBuilder(main)
    tx = then.tensor("x", [1, 8])
    then_out = _fully_connected(then, _fully_connected(then, tx, 8, "h"), 8, "y")
    ex = other.tensor("x", [1, 8])
    else_out = _fully_connected(other, ex, 8, "y")
    then_index = main.attach(then, [tx], [then_out], "then")
    else_index = main.attach(other, [ex], [else_out], "else")
    flag, x, y = main.tensor("flag", [], "bool"), main.tensor("x", [1, 8]), main.tensor("y", [1, 8])
    main.op("IF", [flag, x], [y], main.options("IfOptions", thenSubgraphIndex=then_index,
                                               elseSubgraphIndex=else_index))
    path = tmp_path / "if.tflite"
    path.write_bytes(main.build([flag, x], [y]))
    profile = static_profile(path)
    (entry,) = profile.control_flow()
    assert entry["mode"] == "both" and entry["inputs"] == ["flag"] and entry["branch"] == "then_branch"
    assert entry["branch_macs"] == {"then_branch": 128, "else_branch": 64} and profile.totals()["macs"] == 128
