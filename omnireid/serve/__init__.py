"""Deployment: a gallery index on disk (faiss, durable changes) and an HTTP search service over it.

``omnireid.serve.app`` needs the ``serve`` extra (FastAPI, uvicorn, python-multipart); the index
needs faiss. Nothing here imports the training engine.
"""
from .index import INDEX_KINDS, GalleryIndex, GalleryIndexError, SearchHit, read_manifest

__all__ = ["INDEX_KINDS", "GalleryIndex", "GalleryIndexError", "SearchHit", "read_manifest"]
