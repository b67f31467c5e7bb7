"""One module per lineage step: sources, text, embedding cache, labelled dataset, snapshot."""
