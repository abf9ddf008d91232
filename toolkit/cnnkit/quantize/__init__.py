"""Quantization: INT8 and FP16 variants with their accuracy gates."""
