"""The lab's side: LAVA job export, a local stand-in for LAVA's dispatcher, ingesting
a LAVA job's log.
"""
