"""The AWS emulator for tests: moto's server, one request at a time.

moto's backends take no lock, so two concurrent conditional writes on one
item can both succeed on the emulator, which DynamoDB never allows (it
serializes writes per item). Tests of single-use OAuth states, event claims
and refresh leases run concurrent requests on purpose; on a bare threaded
moto they pass or fail by scheduling. This runs moto's own WSGI app behind
one lock, so every request is applied atomically, as DynamoDB applies each
write. Connections stay concurrent (keep-alive clients don't block each
other); only the work inside moto is serialized, which the GIL mostly did
anyway.

    python infra/emulator.py HOST PORT
"""

import os
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def serialized(app):
    lock = threading.Lock()

    def call(environ, start_response):
        with lock:
            # The whole response is produced inside the lock.
            return list(app(environ, start_response))

    return call


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, serialized(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
