"""nnserve: train neural networks and serve their predictions over HTTP.

The installed code lives under this one name: ``nnserve.engine`` (the NumPy engine),
``nnserve.service`` (the API, the store, the queue), ``nnserve.worker`` (the RQ job functions).
"""
