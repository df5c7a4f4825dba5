"""collab's benchmark suite: collab against its peers, in one run (``collab bench``)."""
