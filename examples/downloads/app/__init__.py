"""An asset server of its own, named `app` like many FastAPI projects (seed 000)."""
