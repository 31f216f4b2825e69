"""Fold QuantizeLinear/DequantizeLinear pairs so that a quantized layer counts as int8 work.

A QDQ model writes `DQ -> Conv -> Q`, but every runtime that quantizes runs one int8 Conv that reads
int8 and writes int8. Folding rewrites the graph to what runs, in two rules:

1. a dequantize of a constant (a stored int8 or fp16 weight) disappears: its consumers read the
   stored tensor, at its stored dtype;
2. a layer whose run-time inputs all come from dequantize layers and whose every output feeds exactly
   one quantize layer reads the int8 tensors and writes the int8 tensor directly; the dequantize and
   quantize layers it absorbed disappear.

Quantize and dequantize layers left over (a float graph input quantized, an int8 result turned back to
float) are real work and stay.
"""

from __future__ import annotations

from typing import Dict, Set

from agent.graph.model import DATA, Graph


def fold_quantization(graph: Graph) -> None:
    """Rewrites `graph` in place by the two rules above; a graph without Q/DQ layers is unchanged."""
    if not any(layer.kind in ("quantize", "dequantize") for layer in graph.layers):
        return
    removed: Set[int] = set()
    _fold_constant_dequantize(graph, removed)
    _fold_units(graph, removed)
    graph.layers = [layer for index, layer in enumerate(graph.layers) if index not in removed]


def _fold_constant_dequantize(graph: Graph, removed: Set[int]) -> None:
    outputs = set(graph.outputs)
    stored: Dict[str, str] = {}
    for index, layer in enumerate(graph.layers):
        source = graph.tensor(layer.inputs[0]) if layer.inputs else None
        if layer.kind == "dequantize" and source is not None and source.is_constant \
                and layer.outputs[0] not in outputs:
            removed.add(index)
            stored[layer.outputs[0]] = layer.inputs[0]
    for layer in graph.layers:
        layer.inputs = [stored.get(name, name) for name in layer.inputs]


def _fold_units(graph: Graph, removed: Set[int]) -> None:
    producers = graph.producers()
    consumers = graph.consumers()
    layers = graph.layers
    outputs = set(graph.outputs)
    absorbed_quantize: Dict[int, str] = {}
    for index, layer in enumerate(layers):
        if index in removed or layer.kind in ("quantize", "dequantize"):
            continue
        data = [name for name, role in zip(layer.inputs, graph.roles(layer)) if role == DATA]
        dequantizers = [producers.get(name) for name in data]
        if not data or any(p is None or layers[p].kind != "dequantize" for p in dequantizers):
            continue
        quantizers = [consumers.get(name, []) for name in layer.outputs]
        if any(len(q) != 1 or layers[q[0]].kind != "quantize" or name in outputs
               for name, q in zip(layer.outputs, quantizers)):
            continue
        dequantized = {layers[p].outputs[0]: layers[p].inputs[0] for p in dequantizers if p is not None}
        layer.inputs = [dequantized.get(name, name) for name in layer.inputs]
        layer.outputs = [layers[q[0]].outputs[0] for q in quantizers]
        for q in quantizers:
            absorbed_quantize[q[0]] = layers[q[0]].outputs[0]
    still_read = {name for i, layer in enumerate(layers) if i not in removed for name in layer.inputs}
    for index, layer in enumerate(layers):
        if layer.kind == "dequantize" and layer.outputs[0] not in still_read | outputs:
            removed.add(index)
    removed.update(absorbed_quantize)
