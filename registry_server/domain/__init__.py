"""Domain rules: names, stages, versions, comparison. No I/O here."""
