"""The properties a model judges, one module each (judge/model.py's PROPERTIES)."""
