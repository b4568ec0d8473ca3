"""How a rendered host runs. Docker first; every runtime applies the same compose.yaml."""
