"""weft's offline-first client: the sync library, folder workspaces and the ``weft`` CLI."""
