"""The parts of ``bench/fanout.py``: the servers it compares, its load generator and its
idle-memory check.

- :mod:`bench.peers.servers`: install, start, watch (CPU, RSS) and stop weft and its two
  peers, installed by the bench itself under ``bench/.peers/`` (git-ignored) from the
  pinned manifests in this folder: ``node/package.json`` + ``package-lock.json`` (the
  reference y-websocket server, npm ``@y/websocket-server``; its ``latest``, 0.1.5, does
  not resolve, 0.1.1 does) and ``requirements-pycrdt.txt`` (pycrdt-websocket behind
  uvicorn, :mod:`bench.peers.pycrdt_server`, in its own venv);
- :mod:`bench.peers.loadgen`: the y-websocket clients, in processes of their own;
- :mod:`bench.peers.idle`: 1,000 documents opened, then left idle: is memory given back?
"""
