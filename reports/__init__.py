"""The account of a run or a sweep for people: a terminal table, a PNG of its curves and time, and an HTML page."""
