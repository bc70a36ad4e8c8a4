"""The paths each dialect answers, for the error renderer (``errors.problem``) and the predict fast path.

Kept apart from the dialects themselves, which import ``errors``: ``errors`` imports this module.
"""

from __future__ import annotations

import re

TF_SERVING = re.compile(r"/v1/models/([^/]+?)(?:/versions/([^/]+?)|/labels/([^/]+?))?:predict")
"""TF Serving's REST predict (and KServe v1's): ``/v1/models/{name}[/versions/{n}|/labels/{alias}]:predict``."""
MLFLOW = re.compile(r"/v1/models/([^/]+)/invocations")
"""MLflow's scoring protocol, under a model: ``/v1/models/{ref}/invocations``."""
