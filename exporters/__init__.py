"""Export and load: checkpoint -> ``encoder.onnx`` (parity-gated), int8, TensorRT engine, Triton
repository, the model's metadata, and the inference backends (torch / ONNX Runtime / TensorRT /
OpenVINO behind one ``Backend`` interface). Similarity scoring over a model is in ``scoring``.

Never run a file in this folder as a script: its folder first on ``sys.path`` could shadow a
real package (no module here is named like one, e.g. ``onnx_export.py``, not ``onnx.py``).
"""
