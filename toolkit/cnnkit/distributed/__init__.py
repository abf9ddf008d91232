"""Work spread over a Ray cluster: distributed eval (Ray Data) and the fleet benchmark (one Ray task per node).

Nothing here is imported unless ``--engine ray`` is asked for; Ray itself is imported inside the functions.
"""
