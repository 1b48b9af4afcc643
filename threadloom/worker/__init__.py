"""Workers and the graph registry: the processes that run queued runs.

:mod:`threadloom.worker.registry` reads ``threadloom.toml`` and binds its graphs to a store
(the API and the workers share it).
"""
