"""The dialogue core: normalise → cache → intent → policy → curated answer, LLM or hand-off."""
