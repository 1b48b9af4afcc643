"""The codec's checkpoint metadata: spliced from the step's encoded updates when it can be,
and then byte for byte what encoding it whole gives."""

from __future__ import annotations

from typing import Any

import pytest

from threadloom.checkpoint.crypto import EncryptedSerializer, location
from threadloom.checkpoint.serde import JsonPlusSerializer
from threadloom.engine._algo import PlannedTask, TaskResult
from threadloom.engine._persist import Codec, StepIds

NODE: Any = None  # the codec reads only a task's name
IDS = StepIds("t", 0)  # execution ids of the step


def result(name: str, *writes: tuple[str, Any], push: int = -1) -> TaskResult:
    return TaskResult(PlannedTask(name, NODE, push), list(writes), [])


SPLICED = [
    [result("a", ("x", 1))],
    [result("a")],
    [result("a", ("x", 1)), result("b", ("y", "é"), ("z", [1, {"k": None}]))],
    [result("a", ("x", 1), ("x", 2))],  # the last write of a channel wins
    [result("a", ("x", 1)), result("b")],
    [result('q"uote', ("x", 1))],
]
ENCODED_WHOLE = [
    [result("w", ("x", 1), push=0), result("w", ("x", 2), push=1)],  # Send: a list per node
    [result("a", ("x", (1, 2)))],  # not JSON: pickled
    [result("a", ("x", float("nan")))],
]


@pytest.mark.parametrize("results", SPLICED + ENCODED_WHOLE)
def test_metadata_from_updates_is_what_encoding_gives(results: list[TaskResult]) -> None:
    codec = Codec(NODE, JsonPlusSerializer())
    updates = [codec.encode_update(r, "t", "r", IDS) for r in results]
    assert codec.encode_metadata(results, updates, thread_id="t", seq=1) == \
        codec.encode_metadata(results, thread_id="t", seq=1)
    spliced = codec._splice(results, updates)
    assert (spliced is not None) == (results in SPLICED)


def test_metadata_splices_from_the_updates_it_is_given() -> None:
    codec = Codec(NODE, JsonPlusSerializer())
    results = [result("a", ("x", 1)), result("b")]
    assert (
        codec.encode_metadata(results, [b'j{"x":7}', None], thread_id="t", seq=1)
        == b'j{"writes":{"a":{"x":7},"b":null}}'
    )


def test_another_serializer_encodes_metadata_whole() -> None:
    serde = EncryptedSerializer(b"k" * 32)
    codec = Codec(NODE, serde)
    results = [result("a", ("x", 1))]
    metadata = codec.encode_metadata(results, [codec.encode_update(results[0], "t", "r", IDS)],
                                     thread_id="t", seq=1)
    where = location("checkpoint", "default", "t", "", 1, "metadata")
    assert serde.loads_at(metadata, where) == {"writes": {"a": {"x": 1}}}
