"""PostgreSQL backend that knows about schema `health` (see core/db.py)."""
