"""``python -m claude_force.cli``."""

from . import main

main()
