"""Routes of the runs resource (LangGraph Platform shape)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["runs"])
