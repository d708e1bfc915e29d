"""Static checks of docker/ (no Docker engine on our machines: neither file is built or
run here, see docker/README.md)."""

from __future__ import annotations

import re
from pathlib import Path

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
# ${NAME:?message}, ${NAME?message}, ${NAME:-default}, ${NAME-default}
_OPERAND = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?[-?]([^}]*)\}")


def test_compose_interpolations_hold_no_lone_dollar() -> None:
    """Compose interpolates a default or a ``:?`` message too (to allow nested
    variables), and a ``$`` there that starts no variable and is not ``$$`` is an invalid
    template: ``${WEFT_SECRET:?... WEFT_SECRET=$(openssl rand -hex 32)}`` stopped every
    ``docker compose up`` with "Invalid template", WEFT_SECRET set or not."""
    for operand in _OPERAND.findall(COMPOSE.read_text()):
        lone = re.sub(r"\$\$|\$\{?[A-Za-z_]", "", operand)
        assert "$" not in lone, operand
