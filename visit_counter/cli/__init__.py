"""Command-line tools behind `python -m app` that are more than a few lines (`load`)."""
