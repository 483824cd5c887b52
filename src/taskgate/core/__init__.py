"""The domain core: states, ids, errors, time and money. No I/O."""
