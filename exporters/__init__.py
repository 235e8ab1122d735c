"""Export and serving: ONNX / TensorRT backends and similarity scoring (`toolkit score`).

Never run a file in this folder as a script: `exporters/onnx.py` first on `sys.path` would
shadow the real `onnx` package.
"""
