"""`python -m bgpnet` runs the CLI."""

from bgpnet.cli import main_entry

main_entry()
