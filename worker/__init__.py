"""nnserve's RQ worker: the job functions (``jobs``) and the worker process (``main``)."""
