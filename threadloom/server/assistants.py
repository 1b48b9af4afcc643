"""Routes of the assistants resource (LangGraph Platform shape)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["assistants"])
