"""What the chain is made of: encoding, hashes, keys, transactions, blocks, votes, genesis."""
