"""Results: the one loader of result JSON and the comparison of two results."""
