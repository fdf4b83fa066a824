"""tlcore's HTTP prediction service (FastAPI), installed as ``tlcore.api``.

Start it with ``tlcore serve`` or ``uvicorn tlcore.api.app:app`` from any install, or
``uvicorn api.app:app`` from a checkout; its modules import each other relatively, so the
same code runs under both names.
"""
