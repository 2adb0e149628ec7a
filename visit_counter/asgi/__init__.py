"""ASGI pieces for embedding the counter in other apps."""
