"""The clients' door: the HTTP client of a node's API and the JSON forms of transactions.

Members' apps, registrars and assessors build, sign and submit transactions through
``Account``; ``Client`` reads the API. Only the standard library, ``chain`` and
``contracts`` (record formats) are needed, so a client machine runs no node code.
"""

from client.http_client import Account, Client, ClientError

__all__ = ["Account", "Client", "ClientError"]
