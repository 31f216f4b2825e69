"""`edge-agent compress lowrank` on the real digits model: the written bundle runs on ONNX Runtime, `profile` and
`eval` take it, its counts follow from the ranks, and what cannot be factorised is refused or listed."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.cli import run_cli

from agent.profile.static import static_profile


def weights(path: Path) -> Dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def ranks_kept(values: np.ndarray, energy: float) -> int:
    """The smallest r whose squared singular values reach `energy` of their sum (written here again, on purpose)."""
    squares = values.astype(np.float64) ** 2
    return next(r for r in range(1, len(values) + 1) if squares[:r].sum() >= energy * squares.sum() - 1e-12)


def logits(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def evaluation(bundle: Path) -> np.ndarray:
    with np.load(str(bundle / "evaluation.npz")) as data:
        return (data["x"][:64].astype(np.float32) * 0.0625).astype(np.float32)


def test_energy_0_9_writes_a_smaller_model_every_tool_takes(digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "digits-lowrank"
    result = run_cli("compress", "lowrank", str(digits), "--energy", "0.9", "-o", str(out), "--json")
    assert result.code == 0, result.stderr
    document = result.json()
    assert document["schema"] == "edge-agent/compress/1" and document["energy"] == 0.9
    originals = weights(digits / "model.fp32.onnx")
    convs = [w for w in originals.values() if w.ndim == 4]
    rows = {row["weight_shape"][0] if row["op"] == "Conv" else "fc": row for row in document["layers"]}
    expected_params, expected_macs = 0, 0
    for kernel, positions in zip(convs, (64, 64, 16)):  # conv outputs: 8x8, 8x8, 4x4 (after the pool)
        out_channels, in_channels = kernel.shape[:2]
        r_out = ranks_kept(np.linalg.svd(kernel.reshape(out_channels, -1), compute_uv=False), 0.9)
        r_in = ranks_kept(np.linalg.svd(kernel.transpose(1, 0, 2, 3).reshape(in_channels, -1), compute_uv=False), 0.9)
        row = rows[out_channels]
        assert row["form"] == "tucker2" and row["ranks"] == [r_out, r_in] and row["status"] == "factorised"
        first = in_channels * r_in if r_in < in_channels else 0
        params = first + r_out * r_in * 9 + r_out * out_channels + out_channels
        macs = positions * (first + r_out * r_in * 9 + r_out * out_channels)
        assert (row["params_after"], row["macs_after"]) == (params, macs)
        assert row["params_before"] == kernel.size + out_channels and row["macs_before"] == positions * kernel.size
        assert 0.5 < row["kept_energy"] < 1 and row["relative_error"] == pytest.approx(
            (1 - row["kept_energy"]) ** 0.5, abs=1e-4)  # the HOSVD is an orthogonal projection
        expected_params, expected_macs = expected_params + params, expected_macs + macs
    fc = rows["fc"]
    matrix = next(w for w in originals.values() if w.shape == (128, 10))
    rank = ranks_kept(np.linalg.svd(matrix, compute_uv=False), 0.9)
    assert fc["ranks"] == [rank] and (fc["params_after"], fc["macs_after"]) == (rank * 138, rank * 138)
    totals = static_profile(out / "model.fp32.onnx").totals()
    assert totals["params"] == expected_params + fc["params_after"] + 10  # the logits' bias stays beside the MatMul
    assert totals["macs"] == expected_macs + rank * 138 == document["totals"]["after"]["macs"]
    before = static_profile(digits / "model.fp32.onnx").totals()
    assert totals["params"] < before["params"] / 2 and totals["macs"] < before["macs"] / 2
    onnx.checker.check_model(onnx.load(str(out / "model.fp32.onnx")))

    x = evaluation(digits)
    assert logits(out / "model.fp32.onnx", x).shape == (64, 10)
    profiled = run_cli("profile", str(out), "--static", "--json")
    assert profiled.code == 0, profiled.stderr
    assert profiled.json()[0]["profile"]["totals"]["macs"] == totals["macs"]
    base = run_cli("eval", str(digits), "--backend", "onnxruntime", "--json").json()[0]["accuracy"]["top1"]
    small = run_cli("eval", str(out), "--json").json()[0]["accuracy"]["top1"]
    assert base - 0.10 < small < base  # the drop, bounded: 98.9% -> 92.7% here


def reconstructed(factors: List[np.ndarray], form: str) -> np.ndarray:
    """The kernel the written factors multiply back to (Tucker-2: 1x1, core, 1x1; spatial: kx1, 1xk; a 1x1
    conv's SVD: two 1x1)."""
    if form == "svd":
        first, second = factors
        return (second[:, :, 0, 0] @ first[:, :, 0, 0])[:, :, None, None]
    if form == "spatial":
        vertical, horizontal = factors
        return np.einsum("kiy,okx->oiyx", vertical[:, :, :, 0], horizontal[:, :, 0, :])
    first, core, last = factors
    return np.einsum("si,rsyx,or->oiyx", first[:, :, 0, 0], core, last[:, :, 0, 0])


OUT = {1: [2, 16, 6, 6], 3: [2, 16, 5, 4]}  # the output of strided_conv by kernel size


def strided_conv(path: Path, size: int) -> Path:
    """One conv with stride 2, uneven pads and a dilation, 8 -> 16 channels, random weights."""
    rng = np.random.default_rng(0)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", kernel_shape=[size, size],
                            strides=[2, 2], pads=[0, 1, 1, 0], dilations=[1, 2])
    graph = helper.make_graph([node], "strided",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 11, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, OUT[size])],
                              [numpy_helper.from_array(rng.normal(size=(16, 8, size, size)).astype(np.float32), "w"),
                               numpy_helper.from_array(rng.normal(size=16).astype(np.float32), "b")])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


@pytest.mark.parametrize("form", ["tucker2", "spatial", "svd"])
def test_the_factors_compute_what_their_product_kernel_computes(tmp_path: Path, form: str) -> None:
    """Strides, uneven pads, dilation and the order of the factors: the factorised model's output equals the
    original conv run with the kernel the factors multiply back to (`svd`: a 1x1 conv)."""
    size = 1 if form == "svd" else 3
    source = strided_conv(tmp_path / "conv.onnx", size)
    out = tmp_path / f"{form}.onnx"
    result = run_cli("compress", "lowrank", str(source), "--rank", "4", "--conv", "tucker2" if form == "svd" else form,
                     "-o", str(out), "--json")
    assert result.code == 0, result.stderr
    (row,) = result.json()["layers"]
    assert row["status"] == "factorised" and row["form"] == form
    assert row["ranks"] == ([4, 4] if form == "tucker2" else [4])
    factors = [w for name, w in weights(out).items() if "/lowrank" in name]
    reference = onnx.load(str(source))
    kernel = reconstructed(factors, form).astype(np.float32)
    reference.graph.initializer[0].CopyFrom(numpy_helper.from_array(kernel, "w"))
    (tmp_path / "reference.onnx").write_bytes(reference.SerializeToString())
    x = np.random.default_rng(1).normal(size=(2, 8, 11, 11)).astype(np.float32)
    expected, got = logits(tmp_path / "reference.onnx", x), logits(out, x)
    assert list(got.shape) == list(expected.shape) == OUT[size]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    original = weights(source)["w"].astype(np.float64)
    error = np.linalg.norm(original - kernel) / np.linalg.norm(original)
    assert row["relative_error"] == pytest.approx(error, abs=1e-4)
    assert row["macs_after"] == static_profile(out).totals()["macs"] < row["macs_before"]
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_a_global_mac_budget_is_met_with_one_energy(digits: Path, tmp_path: Path) -> None:
    result = run_cli("compress", "lowrank", str(digits), "--target-macs", "0.5", "-o", str(tmp_path / "m"), "--json")
    assert result.code == 0, result.stderr
    document = result.json()
    totals = document["totals"]
    assert totals["after"]["macs"] <= 0.5 * totals["before"]["macs"] and 0 < document["energy"] < 1
    tighter = run_cli("compress", "lowrank", str(digits), "--energy", str(document["energy"] + 0.01), "-o",
                      str(tmp_path / "e"), "--json").json()["totals"]["after"]["macs"]
    assert tighter > 0.5 * totals["before"]["macs"]  # the energy found is the largest that fits (to 0.01)


def test_a_rank_above_full_rank_is_one_line(digits: Path, tmp_path: Path) -> None:
    result = run_cli("compress", "lowrank", str(digits), "--rank", "11", "-o", str(tmp_path / "x"))
    assert result.code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--rank 11 is above the full rank 10 of layer logits" in result.stderr
    assert not (tmp_path / "x").exists()


def test_layers_that_cost_more_factorised_are_kept(digits: Path, tmp_path: Path) -> None:
    result = run_cli("compress", "lowrank", str(digits), "--rank", "10", "-o", str(tmp_path / "x"), "--json")
    assert result.code == 0, result.stderr
    rows: List[dict] = result.json()["layers"]
    fc = next(r for r in rows if r["op"] == "MatMul")
    assert fc["status"] == "kept" and "1,380 MACs, not fewer than its 1,280" in fc["reason"]
    assert fc["macs_after"] == fc["macs_before"] == 1280


def test_a_model_with_nothing_to_factorise_says_so(tmp_path: Path) -> None:
    """A depthwise convolution (skipped, listed) and a parameter-free tail: exit 10, one line naming why."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="depthwise", group=4, kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["y"], ["z"], name="pool")]
    graph = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 1, 1])],
                              [numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")])
    path = tmp_path / "dw.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    result = run_cli("compress", "lowrank", str(path), "--energy", "0.5")
    assert result.code == 10 and result.stderr.count("\n") == 1, result.stderr
    assert "no layer can be factorised" in result.stderr and "depthwise: grouped convolution (group 4, depthwise)" \
        in result.stderr
    assert not (tmp_path / "dw-lowrank.onnx").exists()


def test_compare_prints_the_compression_table(digits: Path, tmp_path: Path) -> None:
    """Top-1/Top-5, params and bytes at the stored precision to two significant figures with the ratio, FLOPs,
    MULTs, the measured p50 and the speed-up, for the factorised model against its original."""
    out = tmp_path / "small"
    assert run_cli("compress", "lowrank", str(digits), "--energy", "0.9", "-o", str(out)).code == 0
    quick = ["--backend", "onnxruntime", "--warmup", "2", "--iterations", "20", "--min-seconds", "0"]
    table = run_cli("compare", str(digits), str(out), *quick)
    assert table.code == 0, table.stderr
    lines = table.stdout.splitlines()
    header = lines[3].split()
    assert header == ["configuration", "model", "params", "param", "bytes", "MACs", "FLOPs", "MULTs", "p50", "ms",
                      "top-1", "top-5"]
    base, small, change = (line.split() for line in lines[4:7])
    assert base[2:4] == ["94K", "380KB"] and base[4] == "fp32" and small[:3] == ["candidate", "37K", "150KB"]
    assert change[:3] == ["change", "2.57x", "2.57x"] and change[6].endswith("x") and change[-1].endswith("pt")
    assert all(cell.endswith("%") for cell in base[-2:] + small[-2:])


def test_force_replaces_only_what_compress_writes(digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "small"
    assert run_cli("compress", "lowrank", str(digits), "--energy", "0.9", "-o", str(out)).code == 0
    again = run_cli("compress", "lowrank", str(digits), "--energy", "0.7", "-o", str(out))
    assert again.code == 2 and "exists: --force to replace it" in again.stderr
    forced = run_cli("compress", "lowrank", str(digits), "--energy", "0.7", "-o", str(out), "--force", "--json")
    assert forced.code == 0 and forced.json()["energy"] == 0.7
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    refused = run_cli("compress", "lowrank", str(digits), "--energy", "0.7", "-o", str(other), "--force")
    assert refused.code == 2 and "--force replaces only those" in refused.stderr
    assert (other / "keep.txt").read_text() == "mine"


def test_tucker2_of_a_wide_kernel_is_an_orthogonal_projection() -> None:
    """A ResNet-sized 3x3 kernel (256 -> 256) at ranks 128x96: kept energy and error add up, the factors have
    the shapes of the three convs, and it takes well under a second (contracted pairwise, not as one loop)."""
    from agent.compress.factor import tucker2_factors

    kernel = np.random.default_rng(0).normal(size=(256, 256, 3, 3)).astype(np.float32)
    factors = tucker2_factors(kernel, 128, 96)
    assert [a.shape for a in factors.arrays] == [(96, 256, 1, 1), (128, 96, 3, 3), (256, 128, 1, 1)]
    assert factors.kept_energy + factors.relative_error ** 2 == pytest.approx(1.0, abs=1e-6)
    assert 0.1 < factors.kept_energy < 0.5  # a random kernel's flat spectrum
