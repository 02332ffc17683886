"""``python -m overcast.infra.cli`` runs the ``overcast`` command."""

from overcast.infra.cli import main

main()
