"""gunicorn settings of the image: one worker process, threads for concurrent requests.

One worker, because each process runs its own job worker (a second would train the same project
twice, and the state-folder lock refuses it). ``on_starting`` refuses a non-loopback bind without
Basic auth unless SUGFW_ALLOW_UNAUTHENTICATED=1, as ``python -m backend._wsgi`` does.
"""

import os

bind = [os.environ.get("SUGFW_BIND", "0.0.0.0:9090")]
workers = 1
threads = int(os.environ.get("SUGFW_THREADS", "8"))
worker_class = "gthread"
# Loading the model happens in the worker before it reports alive; a slow disk must not kill it.
timeout = 300
graceful_timeout = 30
accesslog = None  # Flask logs a redacted summary per request; access lines would add raw URLs
errorlog = "-"
loglevel = os.environ.get("SUGFW_LOG_LEVEL", "info").lower()


def on_starting(server):  # gunicorn hook, in the master before any worker starts
    from backend._wsgi import check_gunicorn_binds
    from sugfw.errors import SugfwError

    try:
        check_gunicorn_binds(list(server.cfg.bind))
    except SugfwError as error:
        server.log.error("error: %s", error)
        raise SystemExit(2) from None
