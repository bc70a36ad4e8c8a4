"""nnserve's HTTP service: the Flask API, its Redis store, the RQ wiring and the ``nnserve`` CLI."""
