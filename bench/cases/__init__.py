"""The benchmark cases; each ``run(h)`` fills ``h.summary`` and ``h.details[<case>]``."""
