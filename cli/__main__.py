"""`python -m cli ...` is the same as `mp ...`."""

from cli.main import main

main()
