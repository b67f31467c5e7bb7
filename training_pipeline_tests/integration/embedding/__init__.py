"""Integration tests of the embedding engine against real HTTP servers."""
