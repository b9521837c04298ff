"""How validators agree: a sans-I/O Tendermint BFT core, the signer and evidence."""
