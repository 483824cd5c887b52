"""Services: the use cases of taskgate, over the store. No HTTP, no SQL."""
