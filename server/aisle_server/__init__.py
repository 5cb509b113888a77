"""Aisle's server side: what runs inside Triton (Python-backend logic) and the launcher for it.

Everything here is plain Python/numpy so it can be imported and unit-tested without Triton;
the ``model.py`` files under ``model_repository/`` are thin adapters over these modules.
"""
