"""Reference networks built on the device as ONNX graphs with seeded random weights (no download): the
builder (`builder`), the architectures (`nets`) and the published figures they are judged against
(`published`). docs/compress.md, "The classic tables".
"""
