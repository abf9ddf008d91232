"""Parity: run two runners on the same inputs and compare their outputs."""
