"""The datastore options every admin command shares: `--store PATH` (a local store file) or
`--config FILE` (whatever datastore that agent config names, e.g. the Kubernetes API)."""

from __future__ import annotations

import argparse
import os

DEFAULT_STORE = "/var/lib/bgpnet/store.db"


def add_store_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--store", metavar="PATH",
                   help=f"local store file (default: $BGPNET_STORE or {DEFAULT_STORE})")
    g.add_argument("--config", metavar="FILE", help="take the datastore from this agent config file")


def store_path(args) -> str:
    return args.store or os.environ.get("BGPNET_STORE") or DEFAULT_STORE


def open_store(args):
    from bgpnet.config import DatastoreConfig, load_config
    from bgpnet.datastore import open_datastore

    if getattr(args, "config", None):
        return open_datastore(load_config(args.config).datastore)
    return open_datastore(DatastoreConfig(path=store_path(args)))
