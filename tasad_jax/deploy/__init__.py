"""Serialising the whole-image two-stage program for serving."""
