"""ONNX graph tools: model info, summary, graph index, simplification (read and rewrite graphs; run nothing)."""
