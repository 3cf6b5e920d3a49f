"""The node agent: one reconcile loop wiring datastore -> speaker -> kernel routes -> policy."""


def register(sub) -> None:
    pass
