"""Berth's Alembic migrations; installed as the package `app._migrations` (see setup.py)."""
