"""What transactions do: the deterministic pooling rules and the authenticated state."""
