"""cnnkit: ONNX-based inference and edge-benchmarking toolkit for image CNNs.

Heavy libraries (TensorFlow, ONNX Runtime) are imported inside the functions that need them,
so importing cnnkit and running ``cnnkit --help`` stay fast.
"""

__version__ = "0.1.0"
