"""Build the models and the app from the settings and run uvicorn (what serve.py calls)."""
from __future__ import annotations

import os

from deploy.service.registry import Registry, parse_model_args
from deploy.service.settings import ServiceSettings


def serve(settings: ServiceSettings, models_dir: str | None, model_pairs: list[str]) -> None:
    """Load every model (a bad export is a one-line error before anything listens), then serve."""
    import uvicorn

    from deploy.service.app import create_app

    settings.check()
    if settings.feedback_dir:
        os.makedirs(settings.feedback_dir, exist_ok=True)
    registry = Registry(parse_model_args(models_dir, model_pairs), settings)
    app = create_app(settings, registry)
    for name, entry in registry.entries.items():
        print(f"model '{name}': version {entry.current.version} from {entry.export_dir}", flush=True)
    print(f"serving on http://{settings.host}:{settings.port}/ (the operator page; API under /api/v1)", flush=True)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    finally:
        registry.close()
