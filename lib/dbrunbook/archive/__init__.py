"""The archive: run folders, manifests, pages, the index and history, seals."""
