"""visit-counter: a sharded visit-counter service."""

__version__ = "1.0.0"
