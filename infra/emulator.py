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

moto's TransactWriteItems deep-copies every table it names before it runs,
so it can put the copy back if the transaction is cancelled. That is a copy
of the whole table per transaction: quadratic in the table's size, and with
the copies' reference cycles left to the garbage collector, a 10,000-tenant
benchmark grew moto past 18 GB. Here the snapshot is of the items the
transaction names instead (the only ones it can change), restored the same
way on any failure; DynamoDB Streams records are not rolled back (nothing
here uses streams).

    python infra/emulator.py HOST PORT
"""

import copy
import types

import os
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple
import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table


def serialized(app):
    lock = threading.Lock()

    def call(environ, start_response):
        with lock:
            # The whole response is produced inside the lock.
            return list(app(environ, start_response))

    return call


def item_snapshots(backend, transact_items):
    """(table, hash, range, copy of the item or None) for each item named."""
    saved = []
    for entry in transact_items:
        for op in entry.values():
            table = backend.tables.get(op.get("TableName"))
            if table is None:
                continue
            key = op.get("Key")
            if key is None:
                attrs = op.get("Item", {})
                names = (table.hash_key_attr, table.range_key_attr)
                key = {name: attrs[name] for name in names if name and name in attrs}
            try:
                hash_value, range_value = backend.get_keys_value(table, key)
                current = table.get_item(hash_value, range_value)
            except Exception:  # a malformed key: moto's own call rejects it
                continue
            saved.append((table, hash_value, range_value, copy.deepcopy(current)))
    return saved


def restore(saved):
    # Oldest snapshot last, so a key named twice ends in its state from before.
    for table, hash_value, range_value, item in reversed(saved):
        if range_value is not None:
            if item is None:
                table.items.get(hash_value, {}).pop(range_value, None)
            else:
                table.items[hash_value][range_value] = item
        elif item is None:
            table.items.pop(hash_value, None)
        else:
            table.items[hash_value] = item


def item_level_transaction_rollback():
    # moto's own whole-table copies become no-ops (its rollback then assigns
    # each table to itself); the wrapper restores the named items instead.
    def deepcopy(value, memo=None):
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    dynamodb_models.copy = types.SimpleNamespace(deepcopy=deepcopy)
    moto_transact = DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        saved = item_snapshots(self, transact_items)
        try:
            return moto_transact(self, transact_items)
        except BaseException:
            restore(saved)
            raise

    DynamoDBBackend.transact_write_items = transact_write_items


def main():
    item_level_transaction_rollback()
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, serialized(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
