"""The seed's layout, kept as a doorway: `uvicorn app.main:app` and `python -m app`.

Everything lives in the `visit_counter` package (the library and the service); this
package holds no code of its own and is not part of the installed distribution, so a
project with its own `app` package can install visit-counter beside it.
"""
