"""Work spread over a Ray cluster: distributed eval (Ray Data) and the fleet benchmark (one Ray task per node).

Ray itself is imported only inside the functions that use it; :mod:`cnnkit.distributed.engine` runs ``cnnkit bench``
where its config says (this process, or the cluster).
"""
