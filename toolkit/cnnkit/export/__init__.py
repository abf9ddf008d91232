"""Export: one module per format (ONNX, TFLite), and the fixed-to-dynamic batch rewrite of an ONNX model."""
