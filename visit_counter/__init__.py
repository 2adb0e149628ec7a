"""visit-counter: exact visit counts at dict-increment speed, on Redis nodes or Redis Cluster.

The library's public names are imported lazily, so `uvicorn app.main:app` (which imports
this package first) does not load the middleware or the sinks it does not use.
"""

__version__ = "2.0.0"
