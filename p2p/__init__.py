"""How nodes talk: authenticated peer connections, framing and gossip."""
