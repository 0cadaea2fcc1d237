"""The serving agent (see issue: serving agent). Not built yet."""
