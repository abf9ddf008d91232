"""Data that feeds models: the preprocessing record (``preprocess``), image folders (``folders``) and the
sources that hand batches of model-ready images to eval, parity, quantize and predict (``sources``)."""
