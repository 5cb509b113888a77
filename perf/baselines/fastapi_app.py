"""The FastAPI baseline: what a team would write in a day around sentence-transformers.

    AISLE_REPO=build/model_repository .venv/bin/python -m uvicorn perf.baselines.fastapi_app:app \
        --host 127.0.0.1 --port 8600

``POST /recommend {"query": "...", "k": 10}`` → ``{"item_ids": [...], "scores": [...]}``: encode the
query with sentence-transformers (PyTorch CPU) on the same tower, numpy top-k over the same item
embeddings (:class:`perf.baselines.search.SearchModel`). A plain ``def`` endpoint, so Starlette
runs each request in its thread pool — one request per model call, no batching. One uvicorn worker:
a second would hold a second copy of the model on a 2-core machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from perf.baselines.search import SearchModel

app = FastAPI(title="aisle FastAPI baseline")
_model: SearchModel | None = None


class Request(BaseModel):
    query: str = Field(min_length=1)
    k: int = Field(default=10, ge=1, le=1000)


class Response(BaseModel):
    item_ids: list[str]
    scores: list[float]


@app.on_event("startup")
def load() -> None:
    global _model
    _model = SearchModel(Path(os.environ.get("AISLE_REPO", "build/model_repository")))
    _model.search("warm up", 1)


@app.get("/health")
def health() -> dict:
    return {"ready": _model is not None}


@app.post("/recommend", response_model=Response)
def recommend(request: Request) -> Response:
    if _model is None:
        raise HTTPException(status_code=503, detail="model not loaded")
    ids, scores = _model.search(request.query, request.k)
    return Response(item_ids=ids, scores=scores)
