"""Runtimes: one runner per runtime behind one contract, the session builder, the runtime choice."""
