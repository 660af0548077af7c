"""Task packages (classification, retrieval, face, attributes): each registers its datasets, heads,
losses, evaluators and config section when imported."""
