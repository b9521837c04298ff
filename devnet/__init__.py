"""A local multi-validator network, load generator and fault injector."""
