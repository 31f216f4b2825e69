"""What `edge-agent compress` makes: low-rank factorisations of a model's layers (factor, lowrank, ranks,
rewrite), a classifier cut to some classes (subset), and the ONNX edits
that write them (edit). The orchestration is agent/jobs/compress.py.
"""
