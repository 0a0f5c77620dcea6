"""Subcommands of the `rtmo` command, one module each; argument definitions import nothing heavy."""
