"""The seed examples as importable graphs: what ``threadloom dev`` serves without a config.

Each module builds one small graph from a seed of the project (the runnable scripts in the
repository's ``examples/`` folder are the seeds themselves; these are their runtime versions,
with no ``print`` and no network):

- :mod:`~threadloom.examples.loop` (``seed_loop``, seed 000): ``increment`` / ``check`` until
  ``step >= 3``. Input ``{"step": 0}``.
- :mod:`~threadloom.examples.chat` (``chat``, seed 002): a chatbot whose ``messages`` grow
  across the runs of a thread. Input ``{"messages": ["Hello"]}``.
- :mod:`~threadloom.examples.fetch` (``fetch``, seed 003): a node fetching URLs through
  ``@task`` calls (a fake fetch). Input ``{"urls": ["https://example.com/a"]}``.
- :mod:`~threadloom.examples.cloud` (``cloud``, seed 004): planner -> worker -> controller, the
  worker failing now and then and retried by its ``RetryPolicy``. Input ``{"step": 0}``.
- :mod:`~threadloom.examples.review` (``review``): drafts a reply and waits for a human
  (``interrupt()``); resume it with ``Command(resume=True)`` or ``{"approved": False}``.
  Input ``{"topic": "refund"}``.

In a ``threadloom.toml``, name them as any other graph: ``seed_loop =
"threadloom.examples.loop:graph"``.
"""
