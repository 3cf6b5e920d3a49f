"""`bgpnet ipam ...` subcommands."""


def register(sub) -> None:
    pass
