"""The Section 7 experiments: setups, runners and writers."""

from .setups import table2_setup as table2_setup
from .setups import table4_setup as table4_setup

__all__ = ["table2_setup", "table4_setup"]
