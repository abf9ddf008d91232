"""Keras-side helpers (need the training stack): BatchNorm calibration for random-weight models."""
