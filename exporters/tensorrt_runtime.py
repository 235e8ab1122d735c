"""Inference on a serialized TensorRT engine (``encoder.engine``), with torch CUDA buffers.

``tensorrt`` is imported inside functions only: this module must import on machines without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from exporters.tensorrt_engine import tensorrt_unavailable_reason
from toolkit.errors import ToolkitError


class TensorRTEncoder:
    """Runs a serialized TensorRT engine: ``embed(images [N,C,H,W] float32) -> [N,D] float32``.

    Device buffers are torch CUDA tensors (no pycuda); inference is ``execute_async_v3`` on a
    torch CUDA stream. Batches larger than the profile's max batch are run in chunks.

    Attributes:
        input_name, output_name: the engine's I/O tensor names.
        chw: the input's C, H, W.
        max_batch: the profile's largest batch.
    """

    def __init__(self, engine_path: str | Path, device: int = 0) -> None:
        engine_path = Path(engine_path)
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise ToolkitError(f"cannot run the TensorRT engine {engine_path}: {reason}")
        if not engine_path.is_file():
            raise ToolkitError(f"{engine_path}: no such engine file")
        import tensorrt as trt

        self.device = torch.device("cuda", device)
        torch.cuda.set_device(self.device)  # TensorRT uses the current device's primary context
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ToolkitError(
                f"{engine_path}: TensorRT {trt.__version__} cannot load this engine "
                "(built by another TensorRT version or for another GPU?); rebuild it"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ToolkitError(f"{engine_path}: expected one input and one output, got {inputs} and {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
        in_dtype = self.engine.get_tensor_dtype(self.input_name)
        out_dtype = self.engine.get_tensor_dtype(self.output_name)
        if in_dtype not in dtypes or out_dtype not in dtypes:
            raise ToolkitError(
                f"{engine_path}: unsupported I/O types {in_dtype} and {out_dtype}; expected float32 or float16"
            )
        _, _, max_shape = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.max_batch = int(max_shape[0])
        self.chw = tuple(int(d) for d in max_shape[1:])
        self.stream = torch.cuda.Stream(self.device)
        # Buffers sized for the largest batch, allocated once; smaller batches use a prefix.
        self.context.set_input_shape(self.input_name, tuple(max_shape))
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        self._input = torch.empty(tuple(max_shape), dtype=dtypes[in_dtype], device=self.device)
        self._output = torch.empty(out_shape, dtype=dtypes[out_dtype], device=self.device)
        self.dim = int(out_shape[1])

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embeddings of a batch: [N, C, H, W] float32 -> [N, D] float32 (l2-normalised by the model)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.chw:
            raise ValueError(f"expected images [N, {', '.join(map(str, self.chw))}], got {list(images.shape)}")
        out = np.empty((images.shape[0], self.dim), dtype=np.float32)
        with torch.cuda.stream(self.stream):
            for start in range(0, images.shape[0], self.max_batch):
                chunk = torch.from_numpy(images[start : start + self.max_batch])
                n = chunk.shape[0]
                self._input[:n].copy_(chunk)  # stream-ordered before the engine reads it
                self.context.set_input_shape(self.input_name, (n, *self.chw))
                self.context.set_tensor_address(self.input_name, self._input.data_ptr())
                self.context.set_tensor_address(self.output_name, self._output.data_ptr())
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
                out[start : start + n] = self._output[:n].float().cpu().numpy()  # synchronises
        return out
