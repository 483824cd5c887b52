"""The HTTP API: routes, presenters, auth, errors. The only package that imports FastAPI."""
