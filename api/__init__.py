"""tlcore's HTTP prediction service (FastAPI): ``uvicorn api.app:app`` or ``tlcore serve``."""
