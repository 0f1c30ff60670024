"""What the console does, over the store and the library; the routes call these, never the store."""
