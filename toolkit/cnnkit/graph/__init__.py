"""ONNX graph tools: model info, summary, graph index (read and rewrite graphs; run nothing)."""
