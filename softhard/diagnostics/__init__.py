"""The Section 7 experiments: setups, runners and writers."""

from .setups import table2_setup as table2_setup

__all__ = ["table2_setup"]
