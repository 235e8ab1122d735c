"""toolkit: SimSiam pretraining, few-shot metric fine-tuning, ONNX/TensorRT export and similarity scoring."""

__version__ = "0.1.0"
