"""Static checks of docker/ (no Docker engine on our machines: neither file is built or
run here, see docker/README.md)."""

from __future__ import annotations

import os
import re
import subprocess
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


def _fdb_init_script(cluster_file: Path) -> str:
    """fdb-init's shell script as compose runs it (``$$`` is a ``$``), its 2 s pauses
    made short and its cluster file moved to ``cluster_file``."""
    lines = COMPOSE.read_text().splitlines()
    start = lines.index("  fdb-init:")
    begin = next(i for i in range(start, len(lines)) if lines[i].strip() == "- |") + 1
    end = next(i for i in range(begin, len(lines)) if lines[i] and not lines[i].startswith(" " * 8))
    script = "\n".join(line[8:] for line in lines[begin:end]).replace("$$", "$")
    return script.replace("/etc/foundationdb/fdb.cluster", str(cluster_file)).replace(
        "sleep 2", "sleep 0.01"
    )


# A stand-in for fdbcli: the database is created by the first "configure new" (later ones
# are refused, as fdbcli refuses them) and is available from the 4th "status" on.
_FAKE_FDBCLI = """#!/bin/bash
echo "$*" >> "$FAKE/calls"
case "$*" in
  *"status minimal"*)
    if [ -f "$FAKE/created" ] && [ "$(grep -c status "$FAKE/calls")" -ge 4 ]; then
      echo "The database is available."
    else
      echo "The database is unavailable; type \\`status' for more information."
    fi ;;
  *"configure new"*)
    if [ -f "$FAKE/created" ]; then
      echo "ERROR: Database already exists! To change configuration, don't say \\`new'" >&2
      exit 1
    fi
    touch "$FAKE/created"; echo "Database created" ;;
esac
"""


def test_fdb_init_configures_a_new_database_once(tmp_path: Path) -> None:
    """The database takes a few seconds to come up after "configure new": fdb-init
    said "configure new" again on every poll meanwhile (each refused, "Database already
    exists", as on every start of a database slower than the 5 s status timeout)."""
    (tmp_path / "bin").mkdir()
    fdbcli = tmp_path / "bin" / "fdbcli"
    fdbcli.write_text(_FAKE_FDBCLI)
    fdbcli.chmod(0o755)
    cluster_file = tmp_path / "fdb.cluster"
    cluster_file.write_text("docker:docker@127.0.0.1:4500\n")
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "FAKE": str(tmp_path)}
    run = subprocess.run(
        ["bash", "-c", _fdb_init_script(cluster_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c for c in calls if "--exec configure" in c] == [
        f"-C {cluster_file} --exec configure new single ssd --timeout 10"
    ]
    assert "the database is available" in run.stdout
