"""What the overhead benches' child scripts share: the seed loop graph (``build(steps)``, the
``increment`` / ``check`` loop of seed 000, built with whichever ``StateGraph`` and ``END``
the child imported) and ``best(run, reps)``, the fastest of ``reps`` timed calls after one
warm-up. Pasted into each child's source, which runs in a fresh interpreter (``python -c``)
against the package under test, so the child imports nothing from ``bench/``."""

SEED_LOOP = r'''
class S(TypedDict):
    step: int
    done: bool

def build(steps):
    b = StateGraph(S)
    b.add_node("increment", lambda s: {"step": s["step"] + 1})
    b.add_node("check", lambda s: {"done": s["step"] >= steps})
    b.set_entry_point("increment")
    b.add_edge("increment", "check")
    b.add_conditional_edges("check", lambda s: END if s["done"] else "increment",
                            {"increment": "increment", END: END})
    return b

def best(run, reps):
    run()
    times = []
    for _ in range(reps):
        t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
    return min(times)
'''
