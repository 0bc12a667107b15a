"""gunicorn's configuration for ``wsgi.py``: the server's worker, logger and log format, the
worker count and timeouts its settings give, and the hook that loads the model in each worker
after fork."""

import os

from serving import Settings
from serving.flask_integration import post_worker_init as post_worker_init
from serving.logs import logging_config

settings = Settings.from_sources(os.environ)

bind = os.environ.get("BIND", "0.0.0.0:8080")
#: As many workers as the settings count (one per CPU by default), so that what they size to
#: the workers (threads per inference, /execution-parameters) holds.
workers = settings.workers
timeout = settings.timeout
graceful_timeout = settings.graceful_timeout
#: The server's gevent worker (its HTTP/1.1 loop, prompt stop), which writes access lines
#: through the server's logger.
worker_class = "serving.worker.ServingGeventWorker"
logger_class = "serving.logs.AccessLogger"
accesslog = "-"
logconfig_dict = logging_config(settings.log_level)
#: No control socket under $HOME (a read-only root is common), as `serving serve`.
control_socket_disable = True
