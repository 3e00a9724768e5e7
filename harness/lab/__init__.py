"""The lab's side: LAVA job export, LAVA's own dispatcher (lava-run) on them, ingesting
a LAVA job's log.
"""
