"""Quantization: INT8 and FP16 variants of an FP32 ONNX model, each checked before it is written.

Modes: ``dynamic`` (int8 weights, activations quantized at run time: ConvInteger/MatMulInteger), ``static`` (int8
weights and activations, calibrated on real images, in QDQ or QOperator format) and ``fp16`` (float16 weights and
compute, float32 inputs and outputs kept). If a variant loses more than the accuracy budget against FP32, the nodes
with the largest quantization error are kept in float and it is built again, until the budget holds or nothing is
left to try.

One job per module, low to high: ``config`` (the config and the results), ``data`` (calibration and held-out
images), ``build`` (one variant through onnxruntime's quantizer), ``diagnose`` (which nodes hurt), ``speed``
(latency against FP32), ``loop`` (``quantize_model``, the accuracy-aware loop), ``auto`` (``--auto``).
"""
