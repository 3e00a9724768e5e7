"""Verdicts: each revision's promises as a model, the layer-0 oracle, a test's verdict,
the ABI self-check, and the judge session that turns a console stream into verdicts.
"""
