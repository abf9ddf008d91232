"""Golden bundles and on-device verification: ``cnnkit bundle`` packs a model with its golden inputs and outputs,
``cnnkit verify`` checks on the target that a runtime computes what was validated."""
