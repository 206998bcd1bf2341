"""The `predict.py` scripts that export archives carry: standalone programs, read as text and never imported by
the server. Each imports nothing of OpenMaaS, only numpy and the runtime its archive's weights need."""
