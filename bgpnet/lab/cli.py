"""`bgpnet lab ...` subcommands."""


def register(sub) -> None:
    pass
