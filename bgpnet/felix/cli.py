"""`bgpnet felix ...` subcommands."""


def register(sub) -> None:
    pass
