"""Outbound connections (callbacks, proxy checks), behind one guard against internal addresses."""
