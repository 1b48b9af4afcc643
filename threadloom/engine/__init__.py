"""The execution engine: the pure superstep algorithm (``_algo``), the loop that drives it
(``_loop``) and the runner that executes a step's tasks (``_runner``)."""

__all__: list[str] = []
