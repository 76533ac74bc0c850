"""The rules engine: matches trigger instances against rules and requests actions; fires timers."""
