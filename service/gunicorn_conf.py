"""gunicorn hooks for ``nnserve api`` (the rest of its configuration is on the command line)."""

from nnserve.service.logs import gunicorn_logging
from nnserve.service.settings import Settings


def child_exit(server, worker):
    # A dead worker's Prometheus files must stop counting towards live gauges.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


# Several gunicorns (tests, `nnserve up` beside `nnserve api`) must not fight over one
# control socket in the home directory; nnserve does not use it. Older gunicorns ignore this.
control_socket_disable = True

# gunicorn configures logging before it loads the app: JSON lines (NNSERVE_LOG_FORMAT=json) must be
# set up here for its own lines to be JSON too.
_settings = Settings()
logconfig_dict = gunicorn_logging(_settings.log_level, _settings.log_format) or {}
