"""Outgoing webhooks: the server's signing-secret key (keys.py), the HTTP sender with its
safety limits (sender.py) and the delivery worker (deliverer.py)."""
