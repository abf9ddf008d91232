"""Evaluation: accuracy on a dataset, predictions for images, feature maps."""
